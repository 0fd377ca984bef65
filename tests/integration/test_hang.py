"""A vLLM rollout call that never returns (fault injected into a real engine) ends in a named timeout error within
the configured bound instead of hanging the run."""

from __future__ import annotations

import time

import pytest

from actors.build import RolloutClient
from actors.calls import ActorCallError, call
from rlpost.types import GenerationRequest


def test_a_hung_rollout_call_fails_with_a_named_timeout(stack):
    import ray

    from actors.rollout import RolloutWorker
    from actors.runtime import actor_env_vars

    config, _, _, prompts = stack
    env = {**actor_env_vars(), "RLPOST_INJECT_FAULT": "rollout.generate:hang"}
    engine = ray.remote(RolloutWorker).options(num_cpus=0, runtime_env={"env_vars": env}).remote(
        config.model.path, config.model, config.rollout, 0, "cpu")
    call([engine.ping.remote()], "hung engine start", 300)
    client = RolloutClient([engine], timeout_s=5)
    start = time.monotonic()
    with pytest.raises(ActorCallError, match=r"rollout.generate: no answer within 5s \(resources.call_timeout_s\)"):
        client.generate([GenerationRequest(p.uid, p.token_ids, 2, 4, 1.0, 1.0, 0) for p in prompts[:2]])
    assert time.monotonic() - start < 5 + 3
    ray.kill(engine)
