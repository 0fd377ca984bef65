"""Memory-R+'s episodic memory: insertion, FIFO caps, retrieval, the two rewards and their normalisation, from
hand-computed cases (research notes §8)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlpost.episodic import (
    EpisodicMemory,
    HashedNgrams,
    MemoryRewards,
    MemorySettings,
    MinMaxHistory,
    centroid_distance,
    cosine_novelty,
    nearest,
)

VECTORS = {"q1": [0.0, 0.0], "q2": [1.0, 0.0], "q3": [0.0, 1.0], "x": [0.0, 0.0], "y": [3.0, 4.0], "z": [0.0, 2.0],
           "w": [0.0, 1.0], "a": [1.0, 1.0], "b": [1.0, 0.0], "c": [0.0, 1.0]}


def embed(texts: list[str]) -> np.ndarray:
    return np.array([VECTORS[t] for t in texts], dtype=np.float64)


def _insert(memory: EpisodicMemory, key: str, value: str) -> None:
    memory.insert(key, embed([key])[0], value, embed([value])[0])


def test_insert_appends_to_the_same_question_and_drops_the_oldest_value_and_key():
    memory = EpisodicMemory(max_keys=2, max_values=2)
    for value in ("a", "b", "c"):
        _insert(memory, "q1", value)
    assert memory.keys == ["q1"] and [t for t, _ in memory.values[0]] == ["b", "c"]
    _insert(memory, "q2", "y")
    _insert(memory, "q3", "z")
    assert memory.keys == ["q2", "q3"]  # q1 was the oldest key
    # q1's vector is at distance 1 from both q2 and q3: the tie goes to the older key
    assert [list(v) for v in memory.retrieve(embed(["q1"])[0], 1)] == [VECTORS["y"]]
    assert len(memory.retrieve(embed(["q1"])[0], 5)) == 2


def test_nearest_is_exact_l2_with_ties_to_the_lower_index():
    keys = np.array([[1.0, 0.0], [0.0, 1.0], [0.2, 0.0]])
    assert nearest(keys, np.array([0.0, 0.0]), 2, use_faiss=False) == [2, 0]
    assert nearest(keys, np.array([0.5, 0.5]), 2, use_faiss=False) == [2, 0]
    assert nearest(np.zeros((0, 2)), np.array([0.0, 0.0]), 1) == []


def test_min_max_history():
    history = MinMaxHistory(3)
    assert history.normalise(2.0, when_flat=None) == 2.0  # flat: the raw value (exploit)
    assert MinMaxHistory(3).normalise(2.0, when_flat=0.0) == 0.0  # flat: 0 (explore)
    assert history.normalise(4.0, when_flat=None) == 1.0
    assert history.normalise(3.0, when_flat=None) == 0.5
    assert history.normalise(3.0, when_flat=None) == 0.0  # 2.0 fell out: [4, 3, 3]


def test_exploit_reward_golden():
    rewards = MemoryRewards(MemorySettings(k=1, history=3), embed)
    # right: stored first, so its distance to the centroid of [x] is 0; a flat history gives the raw 0 -> reward 1
    assert rewards.score(["q1"], ["x"], [True])[0][0] == 1.0
    # wrong: not stored; distance |y - x| = 5, history [0, 5] -> 1 -> reward 0
    assert rewards.score(["q1"], ["y"], [False])[0][0] == 0.0
    # right: stored; centroid of [x, z] is (0, 1), distance 1, history [0, 5, 1] -> 0.2 -> reward 0.8
    assert rewards.score(["q1"], ["z"], [True])[0][0] == pytest.approx(0.8)
    # history keeps 3: [5, 1, 0] -> 0 -> reward 1
    assert rewards.score(["q1"], ["w"], [False])[0][0] == pytest.approx(1.0)


def test_explore_reward_golden_with_its_warm_up():
    rewards = MemoryRewards(MemorySettings(k=1, history=100, explore_phase=2), embed)
    assert rewards.score(["q1"], ["a"], [False])[0][1] == 0.0  # one key: still warming up
    assert rewards.score(["q2"], ["b"], [False])[0][1] == 0.0  # novelty 1 - cos(b, b) = 0, flat -> 0
    assert rewards.score(["q2"], ["c"], [True])[0][1] == pytest.approx(1.0)  # 1 - cos(c, b) = 1; [0, 1]
    novelty = 1 - 1 / math.sqrt(2)  # q1 holds [a]; cos(c, a) = 1/sqrt(2)
    assert rewards.score(["q1"], ["c"], [True])[0][1] == pytest.approx(novelty)  # history [0, 1, 0.29]
    assert len(rewards.explore) == 2 and len(rewards.exploit) == 2


def test_scores_of_a_batch_equal_one_by_one_calls_and_state_round_trips():
    questions, texts, correct = ["q1", "q2", "q1", "q3", "q2"], ["x", "b", "z", "c", "w"], [True, False, True,
                                                                                              False, True]
    together = MemoryRewards(MemorySettings(history=4, explore_phase=1), embed)
    batch = together.score(questions, texts, correct)
    single = MemoryRewards(MemorySettings(history=4, explore_phase=1), embed)
    assert [single.score([q], [t], [c])[0] for q, t, c in zip(questions, texts, correct)] == batch
    restored = MemoryRewards(MemorySettings(history=4, explore_phase=1), embed)
    restored.load_state_dict(together.state_dict())
    assert restored.state_dict() == together.state_dict()
    assert restored.score(["q3", "q1"], ["y", "a"], [True, False]) == together.score(["q3", "q1"], ["y", "a"],
                                                                                      [True, False])


def test_distance_and_novelty_helpers():
    assert centroid_distance(np.array([0.0, 1.0]), [np.array([0.0, 0.0]), np.array([0.0, 2.0])]) == 0.0
    assert cosine_novelty(np.array([0.0, 0.0]), [np.array([1.0, 0.0])]) == 1.0  # an empty trace: no similarity
    assert cosine_novelty(np.array([2.0, 0.0]), [np.array([0.0, 1.0]), np.array([1.0, 0.0])]) == 0.0


def test_hashed_ngrams_are_deterministic_unit_vectors_that_keep_similar_traces_close():
    embed_text = HashedNgrams(256)
    a, b, c = embed_text(["3+5=8;8+2=10;", "3+5=8;8+2=11;", "9+9=18;"])
    assert np.allclose(embed_text(["3+5=8;8+2=10;"])[0], a)
    assert np.linalg.norm(a) == pytest.approx(1.0) and not embed_text([""]).any()
    assert a @ b > a @ c


def test_extract_each_mode():
    from rlpost.choices import MemoryExtract, values_of
    from rlpost.episodic import extract

    assert extract("3+5=8;#8", "trace") == "3+5=8;" and extract("#8", "trace") == "" and extract("8", "trace") == "8"
    assert extract("<reasoning> a b </reasoning><answer>3</answer>", "tag") == "a b"
    assert extract("<think>x</think>3", "tag") == "x" and extract("3", "tag") == ""
    assert extract("3+5=8;#8", "all") == "3+5=8;#8"
    assert {mode: extract("<think>a</think>b#c", mode) for mode in values_of(MemoryExtract)} == {
        "trace": "<think>a</think>b", "tag": "a", "all": "<think>a</think>b#c"}
    with pytest.raises(ValueError, match="memory.extract"):
        extract("x", "first")


def test_faiss_and_numpy_find_the_same_neighbours_ties_included():
    import faiss  # the 'memory' extra, which scripts/test.sh installs

    assert faiss.IndexFlatL2 is not None
    rng = np.random.default_rng(0)
    keys = rng.normal(size=(300, 32))
    for query in rng.normal(size=(50, 32)):
        assert nearest(keys, query, 5, use_faiss=True) == nearest(keys, query, 5, use_faiss=False)
    ties = np.array([[1.0, 0.0], [0.0, 1.0], [0.2, 0.0], [0.0, 0.2]])
    assert nearest(ties, np.zeros(2), 3, use_faiss=True) == nearest(ties, np.zeros(2), 3, use_faiss=False) == [2, 3, 0]
