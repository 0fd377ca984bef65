"""Model FLOPs of the learner's work and the MFU they make against a peak: the numbers behind `perf/mfu`.

FLOPs are counted the usual way (PaLM's appendix; Megatron's and verl's MFU): each weight matrix costs two FLOPs
per token per parameter in a forward, causal self-attention 2 x hidden x n² per layer for a sequence of n tokens
(QKᵀ and the weighted sum of V, each over the n²/2 unmasked pairs), and a backward twice its forward. Only the
tokens of real sequences count: padding, and rows that only keep ranks' collective counts equal, are waste, which
is what MFU is meant to show. Leaves out: embedding lookups, norms, activations and the loss (small next to the
matmuls), and recomputation (activation checkpointing would run more FLOPs than this counts).
"""

from __future__ import annotations

import math

FORWARD = 1  # passes: one forward
FORWARD_BACKWARD = 3  # a backward costs two forwards


def sequence_flops(lengths: list[int], matmul_params: int, layers: int, hidden: int, passes: int) -> float:
    """Model FLOPs of `passes` forward-equivalents over sequences of `lengths` tokens."""
    per_pass = sum(2.0 * matmul_params * n + 2.0 * layers * hidden * n * n for n in lengths)
    return passes * per_pass


def mfu(flops: float, seconds: float, peak_flops_per_s: float) -> float:
    """Model FLOPs utilisation: achieved FLOPs per second over the peak (NaN when either is unknown or zero)."""
    if seconds <= 0 or peak_flops_per_s <= 0 or not math.isfinite(peak_flops_per_s):
        return float("nan")
    return flops / seconds / peak_flops_per_s
