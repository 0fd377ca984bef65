"""Prompt samplers owned by the driver: which prompts each step trains on.

Prompts are drawn lazily, one batch per step, so an update after step t can shape step t+1. Every sampler has
`state_dict()` / `load_state_dict()` so a resumed run continues the same sequence. Leaves out: mixtures, DUMP,
prioritised and staged curricula (curriculum issue).
"""

from __future__ import annotations

import random
from typing import Any

from rlpost.types import Prompt


class UniformSampler:
    """Uniform over prompts, without replacement within an epoch, reshuffled each epoch from (seed, epoch)."""

    def __init__(self, prompts: list[Prompt], batch_size: int, seed: int) -> None:
        if not prompts:
            raise ValueError("the training set is empty")
        self.prompts, self.batch_size, self.seed = prompts, batch_size, seed
        self.epoch, self.position = 0, 0
        self._order = self._shuffled(0)

    def _shuffled(self, epoch: int) -> list[int]:
        order = list(range(len(self.prompts)))
        random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return order

    def next_batch(self) -> list[Prompt]:
        batch = []
        while len(batch) < self.batch_size:
            if self.position == len(self._order):
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._shuffled(self.epoch)
            batch.append(self.prompts[self._order[self.position]])
            self.position += 1
        return batch

    def update(self, groups: Any) -> None:
        """Uniform sampling ignores feedback; curricula use it."""

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed, self.epoch, self.position = state["seed"], state["epoch"], state["position"]
        self._order = self._shuffled(self.epoch)
