"""Partial rollouts (rlpost/partial.py) over in-process fakes: segments reassemble into the completion one pass
would have made, each keeps its policy version, `partial_loss: latest` trains only the freshest segment, parked
groups survive a checkpoint, and repeat loops stop. The real engines run it in tests/integration/test_async_stack.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_async import Sync  # the fake weight sync: the engine takes the learner's version

from rlpost.batching import compact_shards, expand_shard
from rlpost.loop import Trainer
from rlpost.partial import PartialBuffer, repeat_period
from rlpost.recipes import load_config
from rlpost.sampling import UniformSampler
from rlpost.types import Group, Prompt, RewardResult, Sample, Workers

EOS = 2


class ScriptedEngine:
    """Completion i of a request starts with token 100 + (seed + i) % 50 and then follows a fixed script, so a
    continuation (whose prefix holds that first token) goes on exactly as one pass would; its length (before EOS)
    is 2..12 by the first token. Logprobs are -0.01 * token. Samples carry the engine's weight version."""

    def __init__(self) -> None:
        self.version, self.requests = 0, []

    @staticmethod
    def script(first: int) -> list[int]:
        length = 2 + first % 11
        return [first, *[(first * 7 + j) % 40 + 3 for j in range(1, length)], EOS]

    def generate(self, requests):
        self.requests.append(requests)
        out = []
        for r in requests:
            samples = []
            for i in range(r.n):
                prefix = r.token_ids[len(r.token_ids) - r.prefix_len:] if r.prefix_len else []
                full = self.script(prefix[0] if prefix else 100 + (r.seed + i) % 50)
                new = full[len(prefix): len(prefix) + r.max_new_tokens]
                done = len(prefix) + len(new) == len(full)
                samples.append(Sample(r.prompt_uid, np.asarray(new, np.int32),
                                      np.asarray([-0.01 * t for t in new], np.float32),
                                      " ".join(map(str, [*prefix, *new])), "stop" if done else "length",
                                      version=self.version))
            out.append(samples)
        return out


class Reward:
    def score(self, request):
        values = [float(len(text.split()) % 2) for text in request.completions]
        return RewardResult(rewards=values, components={"odd": list(values)})


class Learner:
    def __init__(self) -> None:
        self.version, self.shards = 0, []

    def submit_train(self, shards, loss, micro, max_tokens_per_micro=0):
        self.version += 1
        self.shards.append(shards)
        return lambda: {"loss": 0.0}


class Recorder(UniformSampler):
    """Keeps every group it is updated with (the step's scored groups)."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.seen: list[Group] = []

    def update(self, groups):
        self.seen += groups
        super().update(groups)


def _trainer(overrides: list[str], steps: int = 8) -> Trainer:
    config = load_config("quickstart", ["algorithm.prompts_per_step=3", "rollout.samples_per_prompt=4",
                                        "rollout.max_new_tokens=16", "learner.world_size=1",
                                        "sync.probe_sequences=0", f"run.steps={steps}", *overrides])
    engine, learner = ScriptedEngine(), Learner()
    prompts = [Prompt(u, f"p{u}", [1, 5 + u % 3], "a", "s") for u in range(60)]
    return Trainer(config, Workers(engine, learner, Reward(), Sync(engine, learner)),
                   Recorder(prompts, config.algorithm.prompts_per_step, 0))


def _completions(trainer: Trainer) -> dict[tuple[int, int], list[int]]:
    return {(g.prompt.uid, int(s.token_ids[0])): [int(t) for t in s.token_ids] for g in trainer.sampler.seen
            for s in g.samples}


def test_segments_reassemble_into_the_completion_one_pass_makes():
    whole, parts = _trainer([]), _trainer(["rollout.partial_max_tokens=3"])
    for step in range(1, 9):
        whole.step(step)
        metrics = parts.step(step)
        assert metrics["partial/parked_groups"] >= 0
    done, expected = _completions(parts), _completions(whole)
    assert done and all(expected[key] == ids for key, ids in done.items() if key in expected)
    assert len(set(done) & set(expected)) >= 12
    spans = []
    for group in parts.sampler.seen:
        for s in group.samples:
            assert s.finish_reason == "stop" and s.token_ids[-1] == EOS
            np.testing.assert_array_equal(s.logprobs, np.float32([-0.01 * t for t in s.token_ids]))
            if len(s.token_ids) > 3:  # generated in ceil(len / 3) segments, each stamped with its engine version
                starts = [a for a, _ in s.segments]
                assert starts == list(range(0, len(s.token_ids), 3))
                versions = [v for _, v in s.segments]
                assert versions == sorted(versions)
                spans.append(versions[-1] - versions[0])
                assert s.text == " ".join(map(str, s.token_ids))  # the engine's text of the whole completion
    assert max(spans) >= 2  # continued across updates (a step whose groups are all parked trains nothing)
    continued = [r for batch in parts.workers.rollout.requests for r in batch if r.prefix_len]
    assert continued and all(r.n == 1 and r.max_new_tokens <= 3 for r in continued)


def test_latest_loss_masks_earlier_segments_and_weights_count_only_the_rest():
    sample = Sample(0, np.arange(3, 10, dtype=np.int32), np.full(7, -0.5, np.float32), "x", "stop", version=4,
                    segments=[(0, 4), (3, 5), (5, 7)])
    group = Group(Prompt(0, "p", [1, 5], "a", "s"), [sample], [1.0])
    (all_,) = [expand_shard(s) for s in compact_shards([group], 1)]
    (latest,) = [expand_shard(s) for s in compact_shards([group], 1, latest_segment_only=True)]
    # position t predicts token t+1; the completion's 7 tokens are predicted at t = 1..7
    assert all_.loss_mask_BT.tolist() == [[0, 1, 1, 1, 1, 1, 1, 1]]
    assert latest.loss_mask_BT.tolist() == [[0, 0, 0, 0, 0, 0, 1, 1]]  # only the last segment (tokens 5, 6)
    assert float(latest.loss_weights_BT.sum()) == pytest.approx(1.0)  # token-mean over the 2 tokens in the loss
    assert latest.rollout_logprobs_BT.tolist() == all_.rollout_logprobs_BT.tolist()


@pytest.mark.parametrize("partial_loss", ["all", "latest"])
def test_staleness_counts_the_oldest_segment_in_the_loss(partial_loss):
    """A group trains once all its completions are done, so a completion finished early waits with it: staleness
    can exceed the pipeline's lag either way; 'latest' counts only the last segment of a continued completion."""
    trainer = _trainer(["rollout.partial_max_tokens=2", "rollout.mode=one_step_off",
                        f"rollout.partial_loss={partial_loss}"])
    worst = 0
    for step in range(1, 9):
        version, before = trainer.version, len(trainer.sampler.seen)
        metrics = trainer.step(step)
        samples = [s for g in trainer.sampler.seen[before:] for s in g.samples]
        if not samples:
            continue
        oldest = [s.segments[-1][1] if partial_loss == "latest" and s.segments else s.version for s in samples]
        assert metrics["rollout/staleness_max"] == max(version - v for v in oldest)
        worst = max(worst, metrics["rollout/staleness_max"])
        for group in trainer.sampler.seen[before:]:  # its last completion finished in a pass one step off
            assert min(version - (s.segments[-1][1] if s.segments else s.version) for s in group.samples) <= 1
    assert worst > 1


def test_parked_groups_survive_a_checkpoint():
    trainer = _trainer(["rollout.partial_max_tokens=2"])
    trainer.step(1)
    buffer = trainer.collector.partial
    assert buffer is not None and buffer.parked
    state = json.loads(json.dumps(buffer.state_dict()))
    again = PartialBuffer(2, 0)
    again.load_state_dict(state, {p.uid: p for p in trainer.sampler.prompts})
    for a, b in zip(buffer.parked, again.parked, strict=True):
        assert a.limit == b.limit and a.group.prompt is b.group.prompt
        for x, y in zip(a.group.samples, b.group.samples, strict=True):
            assert np.array_equal(x.token_ids, y.token_ids) and np.array_equal(x.logprobs, y.logprobs)
            assert (x.segments, x.version, x.finish_reason) == (y.segments, y.version, y.finish_reason)


@pytest.mark.parametrize(("ids", "times", "period"), [
    ([1, 2, 3, 3, 3, 3], 4, 1), ([1, 2, 3, 3, 3], 4, 0), ([9, 4, 5, 4, 5, 4, 5], 3, 2), ([4, 5, 4, 5, 4, 5], 4, 0),
    ([7, 1, 2, 3, 1, 2, 3], 2, 3), ([1, 2, 3], 1, 0), ([], 3, 0)])
def test_repeat_period(ids, times, period):
    assert repeat_period(ids, times) == period


def test_a_parked_loop_is_stopped_instead_of_continued():
    buffer = PartialBuffer(4, stop_on_repeat=3)
    loop = Sample(0, np.array([5, 6, 6, 6], np.int32), np.zeros(4, np.float32), "x", "length")
    fine = Sample(0, np.array([5, 6, 7, 8], np.int32), np.zeros(4, np.float32), "x", "length")
    groups = [Group(Prompt(0, "p", [1], "a", "s"), [loop]), Group(Prompt(1, "q", [1], "a", "s"), [fine])]
    done = buffer.settle(groups, [16, 16])
    assert done == [groups[0]] and loop.finish_reason == "repeat"
    assert [p.group for p in buffer.parked] == [groups[1]]
