"""A vLLM rollout actor killed with `ray.kill` before a step's generation: the engine is replaced in its bundle,
given the learner's current weights, and the step completes with vLLM and the learner agreeing again."""

from __future__ import annotations

from rlpost.loop import Trainer
from rlpost.sampling import UniformSampler

PROBE = [[1, 4, 5, 13, 6, 7, 16, 9, 2]]


def test_a_killed_rollout_engine_is_replaced_and_resynced(stack):
    import ray

    config, parts, _, prompts = stack
    trainer = Trainer(config, parts.workers, UniformSampler(prompts, config.algorithm.prompts_per_step, 0),
                      probe_sequences=PROBE)
    trainer.step(1)  # the learner moves away from the initial weights a fresh engine would load
    victim = parts.rollout_handles[0]
    ray.kill(victim, no_restart=True)
    metrics = trainer.step(2)
    assert parts.rollout.replaced == 1 and parts.rollout_handles[0] is not victim
    assert metrics["rollout/completions"] == config.algorithm.prompts_per_step * config.rollout.samples_per_prompt
    assert metrics["train/grad_norm"] > 0
    # the new engine sampled with the learner's weights, not the base model's it started from (one step at the
    # stack's lr moves logprobs by > 1e-2, tests/integration/test_pipeline.py)
    assert abs(metrics["train/logprob_mismatch_mean"]) < 1e-3
    assert metrics["sync/probe_max_abs_diff"] < 1e-3


def test_an_engine_killed_while_generating_ahead_is_replaced_and_its_batch_redone(stack):
    """one_step_off: the engine dies before step 2's background collection of step 3. It is replaced and given the
    learner's weights, which wait for step 2's training (every learner call queues behind it), so batch 3 is
    redone with the weights after step 2: its samples say so (staleness 0, not 1) and match the learner."""
    import dataclasses

    import ray

    config, parts, _, prompts = stack
    config = dataclasses.replace(config, rollout=dataclasses.replace(config.rollout, mode="one_step_off"),
                                 run=dataclasses.replace(config.run, steps=3))
    trainer = Trainer(config, parts.workers, UniformSampler(prompts, config.algorithm.prompts_per_step, 0),
                      probe_sequences=PROBE)
    trainer.version = int(parts.workers.weight_sync.sync()["sync/version"])
    replaced = parts.rollout.replaced
    try:
        assert trainer.step(1)["rollout/staleness_max"] == 0
        victim = parts.rollout_handles[0]
        ray.kill(victim, no_restart=True)
        second = trainer.step(2)  # batch 2 was generated during step 1; batch 3's generation meets the dead engine
        assert parts.rollout.replaced == replaced + 1 and parts.rollout_handles[0] is not victim
        assert second["rollout/staleness_max"] == 1 and second["sync/probe_max_abs_diff"] < 1e-3
        third = trainer.step(3)
    finally:
        trainer.pipeline.close()
    assert third["rollout/staleness_max"] == 0  # redone with the weights after step 2, and stamped so
    assert third["rollout/completions"] == config.algorithm.prompts_per_step * config.rollout.samples_per_prompt
    assert abs(third["train/logprob_mismatch_mean"]) < 1e-3 and third["sync/probe_max_abs_diff"] < 1e-3
