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
