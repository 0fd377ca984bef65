"""The GRPO-family policy loss as a pure tensor function: the learner applies it, the driver chooses it.

The loss is a weighted sum over tokens. The driver computes the weights for each global mini-batch
(`aggregation_weights`), so the value and gradient do not depend on how a batch is split over ranks or
micro-batches, and every aggregation (token-mean, seq-mean-token-mean, seq-mean-token-sum, constant normaliser)
is the same code path. Per token, with ratio ρ = π/π_old (or GSPO's sequence ratio) and advantage A:

    pg  = -min(ρ·A, clip(ρ, 1-ε_low, 1+ε_high)·A), then for A<0 (dual clip c): min(pg, -c·A)
    pg *= truncated importance weight  min(π_old/π_vllm, cap)        (token or sequence level; optional;
                                                                     a NaN π_vllm token gets weight 1, as in TRL)
    loss_t = pg + β·KL_k(π, π_ref) - entropy_coef·H(π)

The accepted modes (aggregations, KL estimators, ratio and TIS levels) are the recipe's choice types
(rlpost/choices.py); this module imports nothing of the config package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from rlpost.choices import KlEstimator, LossAggregation, PolicyLoss, RatioLevel, TisLevel, values_of

AGGREGATIONS = values_of(LossAggregation)
KL_ESTIMATORS = values_of(KlEstimator)
RATIO_LEVELS = values_of(RatioLevel)
TIS_LEVELS = values_of(TisLevel)


@dataclass(frozen=True)
class LossSpec:
    """Everything the learner needs to know about the objective; it knows nothing else about the algorithm.

    Each field is the algorithm config's field of the same name (the driver copies them by name), documented there.
    The defaults, for tests and benchmarks that build a spec by hand, equal the schema's; a unit test keeps them so.
    """

    clip_eps_low: float = 0.2
    clip_eps_high: float = 0.2
    dual_clip_c: float = 0.0  # 0 disables; otherwise > 1 (verl: 3.0)
    ratio_level: RatioLevel = "token"  # 'sequence' = GSPO
    kl_coef: float = 0.0  # in the loss; 0 means no reference model anywhere
    kl_estimator: KlEstimator = "k3"
    entropy_coef: float = 0.0
    tis_level: TisLevel = "none"  # truncated importance sampling for the vLLM-vs-learner mismatch
    tis_cap: float = 2.0
    policy_loss: PolicyLoss = "ppo"  # 'vanilla': -A log pi per token (RAFT), no ratio or clip
    updates_per_batch: int = 1  # mini-batches per epoch (optimizer steps per epoch)
    epochs: int = 1
    # Not a recipe key: set by the driver when rollout.mode is off sync. The learner then takes pi_old from its own
    # weights before the update (the proximal policy) and the TIS weight corrects for the older behaviour policy.
    proximal: bool = False

    DERIVED: ClassVar[tuple[str, ...]] = ("proximal",)  # fields the driver sets, not copied from the schema

    @property
    def behaviour_tis(self) -> TisLevel:
        """The importance-weight level in use: tis_level, or 'token' when samples may be stale and it is 'none'."""
        return "token" if self.proximal and self.tis_level == "none" else self.tis_level

    @property
    def needs_reference(self) -> bool:
        return self.kl_coef != 0.0


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token estimate of KL(π‖π_ref) from samples of π (Schulman's k1, k2, k3)."""
    log_ratio = ref_logprobs - logprobs  # log π_ref/π
    if estimator == "k1":
        return -log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    if estimator == "k3":
        return torch.exp(log_ratio) - log_ratio - 1.0
    raise ValueError(f"unknown KL estimator {estimator!r}; allowed: {KL_ESTIMATORS}")


def aggregation_weights(mask_BT: torch.Tensor, mode: str, constant: float = 0.0) -> torch.Tensor:
    """Per-token weights whose weighted sum is the chosen aggregation over the rows of `mask_BT` (one mini-batch).

    token-mean: sum / all tokens; seq-mean-token-mean: mean over sequences of each sequence's token mean
    (original GRPO); seq-mean-token-sum: mean over sequences of token sums; constant: sum / (sequences · constant)
    (Dr. GRPO, constant = the generation cap).
    """
    mask = mask_BT.to(torch.float64)
    return mask * aggregation_row_weights(mask.sum(dim=-1), mode, constant)[:, None]


def aggregation_row_weights(token_counts: torch.Tensor, mode: str, constant: float = 0.0) -> torch.Tensor:
    """The weight each token of each row gets, from the rows' token counts alone (the aggregations depend on nothing
    else): what `aggregation_weights` spreads over a [B, T] mask, for callers that never build one."""
    counts = token_counts.to(torch.float64)
    ones = torch.ones_like(counts)
    rows = max(1, counts.shape[0])
    if mode == "token-mean":
        return ones / counts.sum().clamp(min=1.0)
    if mode == "seq-mean-token-mean":
        return ones / counts.clamp(min=1.0) / rows
    if mode == "seq-mean-token-sum":
        return ones / rows
    if mode == "constant":
        if constant <= 0:
            raise ValueError("aggregation 'constant' needs a positive constant (the generation cap)")
        return ones / (rows * constant)
    raise ValueError(f"unknown aggregation {mode!r}; allowed: {AGGREGATIONS}")


def _sequence_mean(values_BT: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
    return (values_BT * mask_BT).sum(dim=-1, keepdim=True) / mask_BT.sum(dim=-1, keepdim=True).clamp(min=1.0)


def importance_weights(old_logprobs_BT: torch.Tensor, rollout_logprobs_BT: torch.Tensor, mask_BT: torch.Tensor,
                       level: TisLevel, cap: float) -> torch.Tensor:
    """Truncated importance weights min(π_old/π_vllm, cap), per token or per sequence (product over its tokens).

    A token whose rollout logprob is NaN (vLLM could not score it) gets log-weight 0, so weight 1 and no correction,
    and adds nothing to its sequence's log-weight: TRL's rule (nan_to_num of the masked log-difference), so one bad
    logprob neither turns the loss into NaN nor drops the sample. NaN * 0 is NaN, so masking alone would not do it.
    """
    log_w = torch.nan_to_num((old_logprobs_BT - rollout_logprobs_BT) * mask_BT, nan=0.0)
    if level == "token":
        weights = torch.exp(log_w)
    elif level == "sequence":
        weights = torch.exp(log_w.sum(dim=-1, keepdim=True)).expand_as(log_w)
    else:
        raise ValueError(f"unknown importance-sampling level {level!r}; allowed: {TIS_LEVELS}")
    return torch.clamp(weights, max=cap).detach()


def _ratio(logprobs_BT: torch.Tensor, old_logprobs_BT: torch.Tensor, mask_BT: torch.Tensor,
           level: RatioLevel) -> torch.Tensor:
    """ρ = π/π_old per token, or (GSPO) the exp of each sequence's mean log-ratio on all its tokens."""
    log_ratio = logprobs_BT - old_logprobs_BT
    if level == "sequence":
        log_ratio = _sequence_mean(log_ratio, mask_BT).expand_as(log_ratio)
    elif level != "token":
        raise ValueError(f"unknown ratio level {level!r}; allowed: {RATIO_LEVELS}")
    return torch.exp(log_ratio)


def _clipped_surrogate(ratio_BT: torch.Tensor, advantages_BT: torch.Tensor, spec: LossSpec
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per-token -min(ρ·A, clip(ρ)·A), dual-clipped where A < 0 when dual_clip_c is set; and the masks of the
    tokens where the clip and (None when off) the dual clip bind."""
    clipped_ratio = torch.clamp(ratio_BT, 1.0 - spec.clip_eps_low, 1.0 + spec.clip_eps_high)
    unclipped, clipped = ratio_BT * advantages_BT, clipped_ratio * advantages_BT
    pg = -torch.minimum(unclipped, clipped)
    dual_active = None
    if spec.dual_clip_c:
        dual = torch.minimum(pg, -spec.dual_clip_c * advantages_BT)
        dual_active = (advantages_BT < 0) & (dual < pg)
        pg = torch.where(advantages_BT < 0, dual, pg)
    return pg, clipped < unclipped, dual_active


def _importance_corrected(pg_BT: torch.Tensor, old_logprobs_BT: torch.Tensor,
                          rollout_logprobs_BT: torch.Tensor | None, mask_BT: torch.Tensor, spec: LossSpec
                          ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The policy term times the truncated importance weights, and the weights (None when no correction is on)."""
    level = spec.behaviour_tis
    if level == "none":
        return pg_BT, None
    if rollout_logprobs_BT is None:
        raise ValueError("truncated importance sampling needs the rollout logprobs")
    tis = importance_weights(old_logprobs_BT, rollout_logprobs_BT, mask_BT, level, spec.tis_cap)
    return pg_BT * tis, tis


def _regularised(pg_BT: torch.Tensor, logprobs_BT: torch.Tensor, spec: LossSpec,
                 ref_logprobs_BT: torch.Tensor | None, entropy_BT: torch.Tensor | None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token loss: the policy term plus beta * KL to the reference, minus the entropy bonus; and the KL."""
    per_token, kl = pg_BT, None
    if spec.kl_coef:
        if ref_logprobs_BT is None:
            raise ValueError("kl_coef != 0 needs reference logprobs")
        kl = kl_estimate(logprobs_BT, ref_logprobs_BT, spec.kl_estimator)
        per_token = per_token + spec.kl_coef * kl
    if spec.entropy_coef:
        if entropy_BT is None:
            raise ValueError("entropy_coef != 0 needs the per-token entropy")
        per_token = per_token - spec.entropy_coef * entropy_BT
    return per_token, kl


def _weighted_sums(weights_BT: torch.Tensor, terms_BT: dict[str, torch.Tensor | None]) -> dict[str, torch.Tensor]:
    """Each per-token term's weighted sum, skipping absent (None) terms; a boolean term (a mask) sums to the
    weighted fraction of tokens where it holds."""
    return {name: ((term.to(weights_BT.dtype) if term.dtype == torch.bool else term) * weights_BT).sum()
            for name, term in terms_BT.items() if term is not None}


def policy_loss(
    logprobs_BT: torch.Tensor,
    old_logprobs_BT: torch.Tensor,
    advantages_BT: torch.Tensor,
    weights_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    spec: LossSpec,
    *,
    ref_logprobs_BT: torch.Tensor | None = None,
    rollout_logprobs_BT: torch.Tensor | None = None,
    entropy_BT: torch.Tensor | None = None,
    metric_weights_BT: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted-sum loss and its metrics (weighted sums with `metric_weights_BT`, a token-mean by default)."""
    ratio = _ratio(logprobs_BT, old_logprobs_BT, mask_BT, spec.ratio_level)
    if spec.policy_loss == "vanilla":  # RAFT / REINFORCE: the log-likelihood weighted by the advantage
        pg, clip_active, dual_active = -advantages_BT * logprobs_BT, None, None
    elif spec.policy_loss == "ppo":
        pg, clip_active, dual_active = _clipped_surrogate(ratio, advantages_BT, spec)
    else:
        raise ValueError(f"unknown policy_loss {spec.policy_loss!r}; allowed: {values_of(PolicyLoss)}")
    pg, tis = _importance_corrected(pg, old_logprobs_BT, rollout_logprobs_BT, mask_BT, spec)
    per_token, kl = _regularised(pg, logprobs_BT, spec, ref_logprobs_BT, entropy_BT)
    loss = (per_token * weights_BT).sum()
    mw = metric_weights_BT if metric_weights_BT is not None else aggregation_weights(mask_BT, "token-mean")
    with torch.no_grad():
        metrics = _weighted_sums(mw.to(logprobs_BT.dtype), {
            "clip_frac": clip_active, "ratio_mean": ratio, "approx_kl_old": old_logprobs_BT - logprobs_BT,
            "pg_loss": pg, "dual_clip_frac": dual_active, "tis_weight_mean": tis,
            "tis_capped_frac": None if tis is None else tis >= spec.tis_cap, "kl_ref": kl, "entropy": entropy_BT})
    return loss, metrics
