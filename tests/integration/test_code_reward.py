"""code_tests through real reward-worker actors (Ray actor -> child process -> sandboxed solution and judge
processes): scores come back in order, forgeries score 0, the sandbox gauge travels with the results, and a
chat-formatted request (TRL's message-list completions) is read the same way."""

from __future__ import annotations

import pytest

from actors.build import RewardClient
from actors.reward import RewardSettings, RewardWorker
from rlpost.types import RewardRequest

RIGHT = "```python\ndef f(x):\n    return x * x\n```"
HALF = "```python\ndef f(x):\n    return x + x\n```"
FORGED = "```python\nimport builtins\nbuiltins.exec = lambda *a, **k: None\ndef f(x):\n    return 0\n```"
TESTS = ["assert f(2) == 4", "assert f(3) == 9"]


@pytest.fixture(scope="module")
def pool():
    import ray

    started = not ray.is_initialized()  # a local Ray of its own, or the one other modules' tests started
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    settings = RewardSettings(["code_tests"], weights=[], timeout_s=60, args={"code_tests": {"timeout_s": 10}},
                              on_error="raise", max_error_rate=1.0, memory_mb=0)

    def worker(slot: int):
        return ray.remote(RewardWorker).options(num_cpus=0).remote(settings)

    yield RewardClient([worker(i) for i in range(2)], 120, 4, 120, worker)
    if started:
        ray.shutdown()


def test_code_tests_through_reward_workers(pool):
    completions = [RIGHT, HALF, FORGED, "no code"] * 3
    request = RewardRequest(["p"] * 12, completions, [[1]] * 12, {"tests": [TESTS] * 12}, {"step": 1},
                            [4, 4, 4])
    result = pool.score(request)
    assert result.rewards == [1.0, 0.5, 0.0, 0.0] * 3
    assert result.errors == 0
    assert result.gauges == {"sandbox_weak": 0.0}


def test_chat_completions_reach_code_tests_as_messages(pool):
    prompts = [[{"role": "user", "content": "square it"}]] * 2
    completions = [[{"role": "assistant", "content": RIGHT}], [{"role": "assistant", "content": FORGED}]]
    request = RewardRequest(prompts, completions, [[1]] * 2, {"tests": [TESTS] * 2}, {"step": 1}, [2])
    assert pool.score(request).rewards == [1.0, 0.0]
