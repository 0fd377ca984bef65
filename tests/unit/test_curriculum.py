"""Curriculum math against the golden vectors of seed-algorithms.md §10 (2, 3, 6, 8), and the samplers' contracts:
state round-trips, lazy feedback, and DUMP moving weight off solved and unreachable sources."""

from __future__ import annotations

import dataclasses
import math
import random
from collections import deque
from typing import Any

import pytest

from rlpost.advantages import group_advantages
from rlpost.config import SamplerConfig
from rlpost.curriculum import (
    LearnabilityWindow,
    dump_weights,
    length_budget,
    prioritised_probabilities,
    ucb_scores,
)
from rlpost.sampling import (
    DumpSampler,
    MixtureSampler,
    PrioritisedSampler,
    StagedSampler,
    UniformSampler,
    make_sampler,
)
from rlpost.types import Group, Prompt, Sample


def test_dump_weights_golden_vector():  # §10.2
    mu, n = [0.8, 0.5, 0.1], [160, 320, 480]
    bonus = [u - m for u, m in zip(ucb_scores(mu, n), mu)]
    assert bonus == pytest.approx([0.2921, 0.2069, 0.1690], abs=1e-4)
    assert ucb_scores(mu, n) == pytest.approx([1.0921, 0.7069, 0.2690], abs=1e-4)
    assert dump_weights(mu, n, 1.0, 0.1) == pytest.approx([0.9789, 0.0208, 0.0003], abs=1e-4)
    fresh = [u for u in ucb_scores([0.0] * 3, [0] * 3)]
    assert fresh == pytest.approx([1.1774] * 3, abs=1e-4)
    assert dump_weights([0.0] * 3, [0] * 3) == pytest.approx([1 / 3] * 3)


@pytest.mark.parametrize("k, expected", [(1, 0.4688), (2, 0.6404), (3, 0.7558), (4, 0.8385), (8, 0.9682),
                                         (0, 0.0), (16, 0.0)])
def test_mean_abs_advantage_of_binary_groups(k, expected):  # §10.3, through the real advantage code
    adv = group_advantages([1.0] * k + [0.0] * (16 - k), std_normalize="group", ddof=1, eps=1e-6)
    window = LearnabilityWindow(300)
    window.update(adv)
    assert window.mean == pytest.approx(expected, abs=1e-4)


def test_prioritised_golden_vector():  # §10.6
    assert prioritised_probabilities([0.9, 0.5, 0.0]) == pytest.approx([0.0625, 0.3125, 0.625])
    assert prioritised_probabilities([1.0, 1.0]) == [0.5, 0.5]


def test_length_budget_golden_vector():  # §10.8
    assert [length_budget(t, 256, 0.7, 10) for t in range(10)] == [256] * 10
    assert length_budget(10, 256, 0.7, 10) == pytest.approx(179.2)
    assert length_budget(20, 256, 0.7, 10) == pytest.approx(125.44)
    assert length_budget(10_000, 256, 0.7, 10) == 1.0


def test_window_keeps_the_last_responses_and_counts_all():
    window = LearnabilityWindow(3)
    window.update([1.0, -1.0, 2.0, -4.0])
    assert list(window.values) == [1.0, 2.0, 4.0] and window.count == 4 and window.mean == pytest.approx(7 / 3)


# ---- samplers ---------------------------------------------------------------------------------------------------

SOURCES = {"solved": 1.0, "frontier": 0.5, "hard": 0.15, "unreachable": 0.0}


def _prompts(per_source: int = 40) -> list[Prompt]:
    return [Prompt(uid=i * 10 + j, text=f"{s}{i}", token_ids=[1], answer="", data_source=s)
            for j, s in enumerate(SOURCES) for i in range(per_source)]


def _feedback(batch: list[Prompt], rng: random.Random, g: int = 8) -> list[Group]:
    """Groups with binary rewards at each source's success rate, with GRPO advantages (as the driver computes)."""
    groups = []
    for prompt in batch:
        rewards = [float(rng.random() < SOURCES[prompt.data_source]) for _ in range(g)]
        samples = [Sample(prompt.uid, [1], [0.0], "", "stop", r, {"acc": r}) for r in rewards]
        groups.append(Group(prompt, samples, group_advantages(rewards, std_normalize="group")))
    return groups


def _make(kind: str):
    prompts = _prompts()
    return {
        "uniform": lambda: UniformSampler(prompts, 16, 3),
        "mixture": lambda: MixtureSampler(prompts, 16, 3, {"frontier": 3.0, "hard": 1.0}),
        "dump": lambda: DumpSampler(prompts, 16, 3, window=50),
        "prioritised": lambda: PrioritisedSampler(prompts, 16, 3),
        "staged": lambda: StagedSampler(prompts, 16, 3, ["hard", "frontier"], 4),
    }[kind]()


@pytest.mark.parametrize("kind", ["uniform", "mixture", "dump", "prioritised", "staged"])
def test_a_sampler_rebuilt_from_its_state_draws_what_the_original_draws_next(kind):
    original, rng = _make(kind), random.Random(0)
    for step in range(1, 6):
        original.update(_feedback(original.next_batch(step), rng))
    clone = _make(kind)
    clone.load_state_dict(original.state_dict())
    for step in range(6, 12):
        a, b = original.next_batch(step), clone.next_batch(step)
        assert [p.uid for p in a] == [p.uid for p in b], (kind, step)
        assert original.metrics() == clone.metrics()
        feedback_rng = random.Random(step)
        original.update(_feedback(a, feedback_rng))
        clone.update(_feedback(b, random.Random(step)))


SETTINGS = SamplerConfig(mixture_weights={"frontier": 3.0, "hard": 1.0}, dump_window=50, dump_exploration=0.5,
                         dump_temperature=0.2, success_threshold=0.5, prioritised_initial=0.25,
                         staged_sources=["hard", "frontier"], staged_from_step=4)
DIRECT = {  # what make_sampler(SETTINGS with that kind, prompts, 16, 3) must build
    "uniform": lambda prompts: UniformSampler(prompts, 16, 3),
    "mixture": lambda prompts: MixtureSampler(prompts, 16, 3, {"frontier": 3.0, "hard": 1.0}),
    "dump": lambda prompts: DumpSampler(prompts, 16, 3, 50, 0.5, 0.2),
    "prioritised": lambda prompts: PrioritisedSampler(prompts, 16, 3, 0.5, 0.25),
    "staged": lambda prompts: StagedSampler(prompts, 16, 3, ["hard", "frontier"], 4),
}


def _plain(value: Any) -> Any:
    """An object's attributes, recursively, as values `==` compares (an RNG as its state, a deque with its cap)."""
    if isinstance(value, random.Random):
        return value.getstate()
    if isinstance(value, deque):
        return value.maxlen, list(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "__dict__"):
        return type(value).__name__, _plain(vars(value))
    return value


@pytest.mark.parametrize("kind", sorted(DIRECT))
def test_make_sampler_passes_the_recipe_settings_to_the_sampler(kind):
    prompts = _prompts()
    built = make_sampler(dataclasses.replace(SETTINGS, kind=kind), prompts, 16, 3)
    assert _plain(built) == _plain(DIRECT[kind](prompts))
    with pytest.raises(ValueError, match="unknown sampler.kind 'nope'"):
        make_sampler(dataclasses.replace(SETTINGS, kind="nope"), prompts, 16, 3)


def test_state_of_another_kind_is_refused():
    with pytest.raises(ValueError, match="'dump' sampler"):
        _make("uniform").load_state_dict(_make("dump").state_dict())


def test_dump_moves_weight_off_solved_and_unreachable_sources_within_a_few_updates():
    """The mechanism with no training: recorded advantages of each source's groups go in, weights come out."""
    sampler, rng = DumpSampler(_prompts(), 16, 0), random.Random(1)
    assert sampler.weights() == pytest.approx({s: 0.25 for s in SOURCES})
    history = []
    for step in range(1, 9):
        sampler.update(_feedback(sampler.next_batch(step), rng))
        history.append(sampler.weights())
    dead = [h["solved"] + h["unreachable"] for h in history]
    assert dead[0] < 0.1 and max(dead[2:]) < 0.1, dead  # from 0.5 under uniform; exploration keeps a little
    assert history[-1]["frontier"] > 0.5  # the most mixed source (p = 0.5) gets most of the mass
    counts = sampler.metrics()
    assert counts["sampler/count/frontier"] + counts["sampler/count/hard"] >= 14  # the last batch followed the weights


def test_feedback_at_step_t_shapes_the_draw_at_step_t_plus_one():
    """Lazy drawing: nothing is prefetched, so the very next batch reflects the update."""
    sampler = DumpSampler(_prompts(), 64, 0)
    before = sampler.next_batch(1)
    assert len({p.data_source for p in before}) == 4
    frontier = [p for p in _prompts() if p.data_source == "frontier"][:4]
    sampler.update([Group(p, [], [1.0, -1.0] * 20) for p in frontier])
    for source in ("solved", "hard", "unreachable"):
        sampler.update([Group(p, [], [0.0] * 40) for p in _prompts() if p.data_source == source][:4])
    after = sampler.next_batch(2)
    assert sum(p.data_source == "frontier" for p in after) > 0.9 * len(after)


def test_mixture_follows_its_weights_and_rejects_unknown_sources():
    sampler = MixtureSampler(_prompts(), 400, 0, {"frontier": 3.0, "hard": 1.0})
    batch = sampler.next_batch(1)
    share = sum(p.data_source == "frontier" for p in batch) / len(batch)
    assert 0.68 < share < 0.82 and {p.data_source for p in batch} == {"frontier", "hard"}
    assert sampler.metrics()["sampler/weight/frontier"] == 0.75
    with pytest.raises(ValueError, match="'typo'"):
        MixtureSampler(_prompts(), 4, 0, {"typo": 1.0})


def test_prioritised_sampling_prefers_prompts_that_fail():
    sampler, rng = PrioritisedSampler(_prompts(), 32, 0, threshold=1.0, initial=0.5), random.Random(0)
    for step in range(1, 30):
        sampler.update(_feedback(sampler.next_batch(step), rng))
    weights = sampler.weights()
    assert weights["unreachable"] > weights["hard"] > weights["frontier"] > weights["solved"]
    assert math.isclose(sum(weights.values()), 1.0)


def test_staged_sampler_switches_to_its_sources_at_the_given_step():
    sampler = StagedSampler(_prompts(), 32, 0, ["hard"], 3)
    assert len({p.data_source for p in sampler.next_batch(2)}) > 1
    assert {p.data_source for p in sampler.next_batch(3)} == {"hard"}
    assert sampler.weights()["hard"] == 1.0
    with pytest.raises(ValueError, match="subset"):
        StagedSampler(_prompts(), 4, 0, ["nope"], 1)


def test_uniform_is_without_replacement_within_an_epoch():
    sampler = UniformSampler(_prompts(10), 8, 0)
    uids = [p.uid for step in range(1, 6) for p in sampler.next_batch(step)]
    assert sorted(uids) == sorted(p.uid for p in _prompts(10))
