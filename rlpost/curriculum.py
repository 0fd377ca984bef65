"""Curriculum math as pure functions: DUMP's UCB weights, Kimi's prioritised probabilities, the Train-Long-Think-Short
length budget, and the per-source learnability window.

DUMP (verl `utils/curriculum_learning.py`, research notes §2.2): each data_source is a bandit arm scored by the mean
|advantage| of its last `window` responses; UCB_j = mu_j + c * sqrt(2 ln(N + 1) / (n_j + 1)) with N the responses
seen over all sources, and the weights are softmax(UCB / tau). Samplers (rlpost/sampling.py) hold the state; this
module only computes.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any


def ucb_scores(mu: Sequence[float], counts: Sequence[int], exploration: float = 1.0) -> list[float]:
    """mu_j + c * sqrt(2 ln(N + 1) / (n_j + 1)), N = max(1, sum n_j) (the official code's +1s)."""
    total = max(1, sum(counts))
    return [m + exploration * math.sqrt(2.0 * math.log(total + 1) / (n + 1)) for m, n in zip(mu, counts)]


def softmax(scores: Sequence[float], temperature: float) -> list[float]:
    """Max-subtracted softmax(scores / temperature)."""
    if temperature <= 0:
        raise ValueError(f"softmax temperature must be positive, got {temperature}")
    top = max(scores)
    exps = [math.exp((s - top) / temperature) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


def dump_weights(mu: Sequence[float], counts: Sequence[int], exploration: float = 1.0,
                 temperature: float = 0.1) -> list[float]:
    """DUMP's sampling weight per source: softmax(UCB / tau)."""
    return softmax(ucb_scores(mu, counts, exploration), temperature)


def prioritised_probabilities(success_rates: Sequence[float]) -> list[float]:
    """Kimi k1.5: P(i) proportional to 1 - s_i; uniform when every prompt is solved (all weights 0)."""
    raw = [max(0.0, 1.0 - s) for s in success_rates]
    total = sum(raw)
    if total <= 0:
        return [1.0 / len(raw)] * len(raw)
    return [r / total for r in raw]


def length_budget(step: int, initial: float, decay: float, interval: int, minimum: float = 1.0) -> float:
    """Train Long, Think Short: B(t) = max(B_min, B0 * gamma^floor(t / T))."""
    if interval < 1:
        raise ValueError(f"length-budget interval must be at least 1 step, got {interval}")
    return max(minimum, initial * decay ** (step // interval))


class LearnabilityWindow:
    """One source's last `size` |advantage| values and its lifetime response count (DUMP's estimator)."""

    def __init__(self, size: int = 300) -> None:
        if size < 1:
            raise ValueError(f"window size must be at least 1, got {size}")
        self.values: deque[float] = deque(maxlen=size)
        self.count = 0

    def update(self, advantages: Sequence[float]) -> None:
        self.values.extend(abs(a) for a in advantages)
        self.count += len(advantages)

    @property
    def mean(self) -> float:
        """mu_j: mean |advantage| over the window (0 before any data, as the official estimator)."""
        return sum(self.values) / len(self.values) if self.values else 0.0

    def state_dict(self) -> dict[str, object]:
        return {"values": list(self.values), "count": self.count, "size": self.values.maxlen}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.values = deque((float(v) for v in state["values"]), maxlen=int(state["size"]))
        self.count = int(state["count"])
