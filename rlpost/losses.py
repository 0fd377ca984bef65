"""Policy losses as pure tensor functions: the learner applies them, the driver chooses them.

The loss is a weighted sum over tokens, with weights computed by the driver for the whole global batch (see
`token_mean_weights`), so its value and gradient do not depend on how the batch is split over ranks or
micro-batches. Leaves out: KL terms, entropy bonus, sequence-level ratios, dual clip (GRPO-family issue).
"""

from __future__ import annotations

import torch


def token_mean_weights(loss_mask_BT: torch.Tensor, total_tokens: int) -> torch.Tensor:
    """Per-token weights that make a weighted sum equal the mean over all completion tokens of the global batch."""
    return loss_mask_BT.to(torch.float32) / max(1, int(total_tokens))


def clipped_policy_loss(
    logprobs_BT: torch.Tensor,
    old_logprobs_BT: torch.Tensor,
    advantages_BT: torch.Tensor,
    weights_BT: torch.Tensor,
    *,
    clip_eps_low: float,
    clip_eps_high: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO-clip surrogate, -sum(w * min(ratio * A, clip(ratio) * A)), with its clip fraction and ratio stats.

    Metrics are weighted sums too (so they add up across ranks and micro-batches like the loss).
    """
    ratio = torch.exp(logprobs_BT - old_logprobs_BT)
    clipped_ratio = torch.clamp(ratio, 1.0 - clip_eps_low, 1.0 + clip_eps_high)
    unclipped = ratio * advantages_BT
    clipped = clipped_ratio * advantages_BT
    per_token = -torch.minimum(unclipped, clipped)
    loss = (per_token * weights_BT).sum()
    with torch.no_grad():
        was_clipped = (clipped < unclipped).to(weights_BT.dtype)
        metrics = {
            "clip_frac": (was_clipped * weights_BT).sum(),
            "ratio_mean": (ratio * weights_BT).sum(),
            "approx_kl_old": ((old_logprobs_BT - logprobs_BT) * weights_BT).sum(),
        }
    return loss, metrics
