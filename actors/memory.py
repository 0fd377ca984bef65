"""Memory-R+'s episodic memories in one Ray actor (research notes §8.3): the memory is stateful and its insertions
depend on order, so a single actor owns it and the driver calls it once per round, samples in order. The embedder
(hashed n-grams, or a sentence-transformers model) runs here, off the driver.
"""

from __future__ import annotations

from typing import Any

from rlpost.config import MemoryConfig
from rlpost.episodic import MemoryRewards, MemorySettings, make_embedder


def memory_settings(cfg: MemoryConfig) -> MemorySettings:
    return MemorySettings(k=cfg.k, max_keys=cfg.max_keys, max_values=cfg.max_values, history=cfg.history,
                          explore_phase=cfg.explore_phase)


class MemoryWorker:
    """The actor: both memories and their histories (rlpost/episodic.py MemoryRewards)."""

    def __init__(self, cfg: MemoryConfig) -> None:
        self.rewards = MemoryRewards(memory_settings(cfg), make_embedder(cfg.embedder))

    def ping(self) -> int:
        return len(self.rewards.exploit) + len(self.rewards.explore)

    def score(self, questions: list[str], reasonings: list[str], correct: list[bool]) -> list[tuple[float, float]]:
        return self.rewards.score(questions, reasonings, correct)

    def sizes(self) -> tuple[int, int]:
        """Questions held by the exploit and the explore memory."""
        return len(self.rewards.exploit), len(self.rewards.explore)

    def state_dict(self) -> dict[str, Any]:
        return self.rewards.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rewards.load_state_dict(state)


class MemoryClient:
    """The driver's handle on the memory actor (the `EpisodicMemory` seam of rlpost/types.py)."""

    def __init__(self, handle: Any, timeout_s: float) -> None:
        self.handle, self.timeout_s = handle, timeout_s

    def _call(self, method: str, *args: Any) -> Any:
        from actors.calls import call

        return call([getattr(self.handle, method).remote(*args)], f"memory.{method}", self.timeout_s)[0]

    def score(self, questions: list[str], reasonings: list[str], correct: list[bool]) -> list[tuple[float, float]]:
        return self._call("score", questions, reasonings, correct)

    def sizes(self) -> tuple[int, int]:
        return self._call("sizes")

    def state_dict(self) -> dict[str, Any]:
        return self._call("state_dict")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._call("load_state_dict", state)


def start_memory(cfg: MemoryConfig, timeout_s: float) -> MemoryClient:
    """The memory actor on the running Ray (no CPU reserved: it is light next to the engines and learners)."""
    import ray

    handle = ray.remote(MemoryWorker).options(num_cpus=0).remote(cfg)
    client = MemoryClient(handle, timeout_s)
    client._call("ping")
    return client
