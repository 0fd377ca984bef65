"""Group-relative advantages (GRPO family), as pure functions of per-sample rewards.

Every convention inside the formula is a named parameter, pinned by golden vectors in tests: the std's degrees of
freedom (verl uses unbiased, ddof=1), the eps added to the std, whether to divide by the std at all (Dr. GRPO does
not), and the rule for singleton groups. Leaves out: batch-level std, leave-one-out baselines (GRPO-family issue).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def group_advantages(
    rewards: Sequence[float],
    *,
    std_normalize: bool = True,
    ddof: int = 1,
    eps: float = 1e-6,
    singleton_rule: str = "raw",
) -> list[float]:
    """Advantage of each sample in one group: (r - mean) / (std + eps), or r - mean without std normalisation.

    A singleton group has no baseline: 'raw' returns the reward itself (verl's mean 0, std 1), 'zero' returns 0.
    """
    n = len(rewards)
    if n == 0:
        return []
    if n == 1:
        if singleton_rule == "raw":
            return [float(rewards[0])]
        if singleton_rule == "zero":
            return [0.0]
        raise ValueError(f"unknown singleton_rule {singleton_rule!r}")
    mean = sum(rewards) / n
    centred = [float(r) - mean for r in rewards]
    if not std_normalize:
        return centred
    std = math.sqrt(sum(c * c for c in centred) / (n - ddof))
    return [c / (std + eps) for c in centred]


def batch_advantages(
    groups_rewards: Sequence[Sequence[float]], **conventions: object
) -> tuple[list[list[float]], dict[str, float]]:
    """Advantages for every group of a step, plus metrics (share of groups with no signal)."""
    advantages = [group_advantages(r, **conventions) for r in groups_rewards]  # type: ignore[arg-type]
    flat = [a for group in advantages for a in group]
    constant = sum(1 for r in groups_rewards if len(r) > 1 and max(r) == min(r))
    metrics = {
        "adv/abs_mean": sum(abs(a) for a in flat) / max(1, len(flat)),
        "adv/zero_signal_group_frac": constant / max(1, len(groups_rewards)),
    }
    return advantages, metrics
