"""Group-relative advantages (GRPO family), as pure functions of per-sample rewards.

Every convention inside the formula is a named parameter, pinned by golden vectors in tests: the baseline (group
mean, or leave-one-out as in RLOO), the std normalisation (per group as GRPO, over the whole batch as TRL's
`scale_rewards="batch"`, or none as Dr. GRPO), the std's degrees of freedom (verl: unbiased), the eps added to
the std, and the rule for singleton groups (raw reward as verl, zero, or drop the group). The accepted modes are
the recipe's choice types (rlpost/choices.py); this module imports nothing of the config package.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rlpost.choices import AdvantageStd, Baseline, SingletonRule, values_of

STD_MODES = values_of(AdvantageStd)
BASELINES = values_of(Baseline)
SINGLETON_RULES = values_of(SingletonRule)


def _std(values: Sequence[float], ddof: int) -> float:
    n = len(values)
    if n - ddof <= 0:
        return 0.0
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - ddof))


def centred_rewards(rewards: Sequence[float], baseline: Baseline = "mean") -> list[float]:
    """r_i minus the group baseline: the group mean, or (RLOO) the mean of the *other* samples of the group."""
    n = len(rewards)
    total = float(sum(rewards))
    if baseline == "mean":
        return [float(r) - total / n for r in rewards]
    if baseline == "rloo":
        return [float(r) - (total - float(r)) / (n - 1) for r in rewards]
    raise ValueError(f"unknown baseline {baseline!r}; allowed: {BASELINES}")


def group_advantages(
    rewards: Sequence[float],
    *,
    std_normalize: bool | AdvantageStd = True,
    baseline: Baseline = "mean",
    ddof: int = 1,
    eps: float = 1e-6,
    singleton_rule: SingletonRule = "raw",
    batch_std: float | None = None,
) -> list[float] | None:
    """Advantage of each sample of one group; None when the group is dropped (singleton_rule 'drop').

    baseline 'raft' is RAFT's rejection-sampling advantage max(reward, 0) per response: with a 0/1 reward only the
    accepted responses carry a gradient (the rejected ones still count in a token-mean's denominator, as in GVM's
    verl code).

    std_normalize: True/'group' divides by (group std + eps), 'batch' by (batch_std + eps), False/'none' not at all.
    A singleton group has no baseline: 'raw' returns the reward itself (verl's mean 0, std 1), 'zero' returns 0.
    """
    mode = {True: "group", False: "none"}.get(std_normalize, std_normalize)  # type: ignore[arg-type]
    if mode not in STD_MODES:
        raise ValueError(f"unknown std normalisation {std_normalize!r}; allowed: {STD_MODES}")
    if singleton_rule not in SINGLETON_RULES:
        raise ValueError(f"unknown singleton_rule {singleton_rule!r}; allowed: {SINGLETON_RULES}")
    n = len(rewards)
    if n == 0:
        return []
    if baseline == "raft":  # RAFT / RAFT++ (GVM's adv_estimator=raft): each response on its own, no baseline
        if mode != "none":
            raise ValueError("baseline 'raft' (advantage max(reward, 0)) takes no std normalisation: "
                             "set advantage_std to 'none'")
        return [max(float(r), 0.0) for r in rewards]
    if n == 1:
        singleton = {"raw": [float(rewards[0])], "zero": [0.0], "drop": None}
        if singleton_rule not in singleton:
            raise ValueError(f"singleton_rule {singleton_rule!r} has no implementation; allowed: {SINGLETON_RULES}")
        return singleton[singleton_rule]
    centred = centred_rewards(rewards, baseline)
    if mode == "none":
        return centred
    if mode == "batch":
        if batch_std is None:
            raise ValueError("std_normalize='batch' needs batch_std")
        return [c / (batch_std + eps) for c in centred]
    if mode == "group":
        std = _std(rewards, ddof)
        return [c / (std + eps) for c in centred]
    # a mode listed in AdvantageStd without a branch here: refuse it rather than fall back to another mode's
    raise ValueError(f"std normalisation {mode!r} has no implementation; allowed: {STD_MODES}")


def batch_advantages(
    groups_rewards: Sequence[Sequence[float]],
    *,
    std_normalize: bool | AdvantageStd = True,
    ddof: int = 1,
    **conventions: object,
) -> tuple[list[list[float] | None], dict[str, float]]:
    """Advantages for every group of a step (None for dropped groups), plus metrics.

    'batch' normalisation divides by the std of all the step's rewards (TRL's `scale_rewards="batch"`).
    """
    batch_std = None
    if std_normalize == "batch":
        batch_std = _std([float(r) for group in groups_rewards for r in group], ddof)
    advantages = [group_advantages(r, std_normalize=std_normalize, ddof=ddof, batch_std=batch_std,
                                   **conventions) for r in groups_rewards]  # type: ignore[arg-type]
    flat = [a for group in advantages if group is not None for a in group]
    constant = sum(1 for r in groups_rewards if len(r) > 1 and max(r) == min(r))
    metrics = {
        "adv/abs_mean": sum(abs(a) for a in flat) / max(1, len(flat)),
        "adv/zero_signal_group_frac": constant / max(1, len(groups_rewards)),
        "adv/singletons_dropped": float(sum(1 for a in advantages if a is None)),
    }
    return advantages, metrics
