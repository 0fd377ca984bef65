"""DAPO's reward-side pieces as pure functions: overlong reward shaping and the dynamic-sampling group filter.

Overlong shaping (verl `recipe/dapo`): with L_max the generation cap and a buffer at its end, a completion longer
than L_max - buffer loses linearly up to `factor` at L_max. The group filter keeps only groups whose metric varies
(all-equal groups have zero advantage, so they cost compute and teach nothing).
"""

from __future__ import annotations

from collections.abc import Sequence


def overlong_penalty(length: int, max_len: int, buffer: int, factor: float = 1.0) -> float:
    """min(-(length - (max_len - buffer)) / buffer * factor, 0): 0 up to max_len - buffer, -factor at max_len."""
    if buffer <= 0:
        raise ValueError(f"overlong buffer must be positive, got {buffer}")
    expected = max_len - buffer
    return min(-(length - expected) / buffer * factor, 0.0)


def informative_group(values: Sequence[float]) -> bool:
    """True when the group's metric is not constant (DAPO keeps it); singletons are never informative."""
    return len(values) > 1 and max(values) != min(values)
