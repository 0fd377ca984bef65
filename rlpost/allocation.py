"""Rollout allocation math as pure functions: GVM's per-prompt sample counts and the variance they predict.

GVM (research notes §3): prompt i's gradient estimate from n_i samples with acceptance rate p_i has variance about
G_i^2 / (n_i p_i), G_i its gradient norm. Minimising the sum under sum_i n_i = N gives n_i proportional to
G_i / sqrt(p_i); the published code regularises small p: s_i = G_i / sqrt(p_i + alpha / p_i^(beta - 1)), with
s_i = 0 when G_i or p_i is 0, then rounds N * s_i / sum s to integers that add up to N.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def gvm_scores(grad_norms: Sequence[float], accept_rates: Sequence[float], alpha: float = 1e-3,
               beta: float = 2.0) -> list[float]:
    """s_i = G_i / sqrt(p_i + alpha / p_i^(beta - 1)); 0 where G_i or p_i is 0."""
    if len(grad_norms) != len(accept_rates):
        raise ValueError(f"{len(grad_norms)} gradient norms for {len(accept_rates)} acceptance rates")
    return [0.0 if g <= 0 or p <= 0 else g / math.sqrt(p + alpha / p ** (beta - 1))
            for g, p in zip(grad_norms, accept_rates)]


def round_preserving_sum(weights: Sequence[float], total: int) -> list[int]:
    """Integers proportional to `weights` adding up to `total` (largest remainders get the leftover units)."""
    mass = sum(weights)
    if total < 0 or mass <= 0:
        return [0] * len(weights)
    exact = [total * w / mass for w in weights]
    counts = [math.floor(x) for x in exact]
    leftover = total - sum(counts)
    by_remainder = sorted(range(len(exact)), key=lambda i: (exact[i] - counts[i], weights[i]), reverse=True)
    for i in by_remainder[:leftover]:
        counts[i] += 1
    return counts


def gvm_allocation(grad_norms: Sequence[float], accept_rates: Sequence[float], total: int, alpha: float = 1e-3,
                   beta: float = 2.0) -> list[int]:
    """GVM's n_i for a budget of `total` samples; all zeros when no prompt has signal."""
    return round_preserving_sum(gvm_scores(grad_norms, accept_rates, alpha, beta), total)


def predicted_variance(grad_norms: Sequence[float], accept_rates: Sequence[float], counts: Sequence[float]) -> float:
    """sum_i G_i^2 / (p_i n_i) over prompts with signal (G_i, p_i > 0); inf when one of them gets no sample."""
    total = 0.0
    for g, p, n in zip(grad_norms, accept_rates, counts):
        if g > 0 and p > 0:
            if n <= 0:
                return math.inf
            total += g * g / (p * n)
    return total


def gvm_continuous(grad_norms: Sequence[float], accept_rates: Sequence[float], total: float, alpha: float = 1e-3,
                   beta: float = 2.0) -> list[float]:
    """GVM's allocation before rounding (total * r_i): what the predicted variance ratio is computed on, since
    rounding can leave a prompt with signal at 0 samples (infinite predicted variance for that prompt)."""
    scores = gvm_scores(grad_norms, accept_rates, alpha, beta)
    mass = sum(scores)
    return [total * s / mass if mass else 0.0 for s in scores]


def variance_ratio_vs_uniform(grad_norms: Sequence[float], accept_rates: Sequence[float],
                              counts: Sequence[float]) -> float:
    """Predicted gradient variance of an allocation over that of the uniform one with the same total."""
    uniform = [sum(counts) / len(counts)] * len(counts)
    return predicted_variance(grad_norms, accept_rates, counts) / predicted_variance(grad_norms, accept_rates, uniform)
