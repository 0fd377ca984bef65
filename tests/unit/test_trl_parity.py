"""Parity with TRL's own GRPOTrainer loss (trl is a dependency): same value and same gradient, in float64.

The test calls `trl.GRPOTrainer._compute_loss` itself; only the trainer's surroundings (the model forward, which
returns our random logprobs, and a one-process accelerator) are stand-ins. TRL loss types map to rlpost
aggregations: grpo → seq-mean-token-mean, bnpo and dapo → token-mean, dr_grpo → constant (max completion length),
luspo → seq-mean-token-sum. TRL's `delta` (two-sided clipping) is rlpost's dual clip when delta ≥ 1 + ε_high, and
its vLLM importance-sampling 'token_truncate'/'sequence_truncate' modes are rlpost's TIS levels.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from rlpost.losses import LossSpec, aggregation_weights, importance_weights, policy_loss

trl_grpo = pytest.importorskip("trl.trainer.grpo_trainer", reason="trl is a declared dependency")

AGGREGATION = {"grpo": "seq-mean-token-mean", "bnpo": "token-mean", "dapo": "token-mean",
               "dr_grpo": "constant", "luspo": "seq-mean-token-sum"}
B, T, MAX_LEN = 6, 7, 9


class _OneProcess:
    num_processes = 1
    sync_gradients = True

    def gather(self, x):
        return x

    gather_for_metrics = gather

    def reduce(self, x, reduction="sum"):
        return x


def _batch(seed: int, noise: float = 0.4):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).double()
    old = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    logps = old + noise * torch.randn(B, T, generator=g, dtype=torch.float64)  # ratios on both sides of the clip
    rollout = old + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)
    return {
        "logps": logps, "old": old, "ref": old + 0.2 * torch.randn(B, T, generator=g, dtype=torch.float64),
        "rollout": rollout, "entropy": torch.rand(B, T, generator=g, dtype=torch.float64) * 2,
        "adv": torch.randn(B, generator=g, dtype=torch.float64), "mask": mask,
    }


def _trl_loss(data, loss_type, *, eps_low, eps_high, beta, level, delta, entropy_coef, tis_mode, tis_cap):
    logps = data["logps"].clone().requires_grad_()
    fake = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logps, data["entropy"], None),
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level=level, beta=beta,
        loss_type=loss_type, epsilon_low=eps_low, epsilon_high=eps_high, use_vllm=tis_mode is not None,
        vllm_importance_sampling_correction=tis_mode is not None, model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1, max_completion_length=MAX_LEN, accelerator=_OneProcess(),
        args=SimpleNamespace(delta=delta, use_bias_correction_kl=False, steps_per_generation=1),
        _entropy_bonus_enabled=entropy_coef != 0.0, entropy_coef=entropy_coef, use_adaptive_entropy=False,
        aux_loss_enabled=False, _metrics=defaultdict(lambda: defaultdict(list)))
    inputs = {
        "prompt_ids": torch.ones(B, 2, dtype=torch.long), "prompt_mask": torch.ones(B, 2, dtype=torch.long),
        "completion_ids": torch.ones(B, T, dtype=torch.long), "completion_mask": data["mask"].long(),
        "advantages": data["adv"], "old_per_token_logps": data["old"], "ref_per_token_logps": data["ref"],
        "num_items_in_batch": data["mask"].sum(),
    }
    if tis_mode is not None:  # TRL computes this ratio while generating; the same code path, restated as inputs
        diff = (data["old"] - data["rollout"]) * data["mask"]
        if tis_mode == "sequence_truncate":
            diff = diff.sum(-1, keepdim=True)
        inputs["importance_sampling_ratio"] = torch.clamp(torch.exp(diff), max=tis_cap)
    loss = trl_grpo.GRPOTrainer._compute_loss(fake, None, inputs)
    (grad,) = torch.autograd.grad(loss, logps)
    return loss.detach(), grad


def _our_loss(data, loss_type, *, eps_low, eps_high, beta, level, delta, entropy_coef, tis_mode, tis_cap):
    logps = data["logps"].clone().requires_grad_()
    tis_level = {None: "none", "token_truncate": "token", "sequence_truncate": "sequence"}[tis_mode]
    spec = LossSpec(clip_eps_low=eps_low, clip_eps_high=eps_high, dual_clip_c=delta or 0.0, ratio_level=level,
                    kl_coef=beta, kl_estimator="k3", entropy_coef=entropy_coef, tis_level=tis_level, tis_cap=tis_cap)
    weights = aggregation_weights(data["mask"], AGGREGATION[loss_type], MAX_LEN)
    adv = data["adv"][:, None].expand(B, T)
    loss, _ = policy_loss(logps, data["old"], adv, weights, data["mask"], spec, ref_logprobs_BT=data["ref"],
                          rollout_logprobs_BT=data["rollout"], entropy_BT=data["entropy"])
    (grad,) = torch.autograd.grad(loss, logps)
    return loss.detach(), grad


CASES = [
    dict(eps_low=0.2, eps_high=0.2, beta=0.0, level="token", delta=None, entropy_coef=0.0, tis_mode=None),
    dict(eps_low=0.2, eps_high=0.28, beta=0.04, level="token", delta=None, entropy_coef=0.0, tis_mode=None),
    dict(eps_low=0.2, eps_high=0.28, beta=0.0, level="token", delta=3.0, entropy_coef=0.0, tis_mode=None),
    dict(eps_low=3e-4, eps_high=4e-4, beta=0.0, level="sequence", delta=None, entropy_coef=0.0, tis_mode=None),
    dict(eps_low=0.2, eps_high=0.2, beta=0.1, level="token", delta=None, entropy_coef=0.0,
         tis_mode="token_truncate"),
    dict(eps_low=0.2, eps_high=0.2, beta=0.0, level="token", delta=None, entropy_coef=0.0,
         tis_mode="sequence_truncate"),
]


@pytest.mark.parametrize("loss_type", sorted(AGGREGATION))
@pytest.mark.parametrize("case", range(len(CASES)))
def test_loss_and_gradient_match_trl(loss_type, case):
    kw = dict(CASES[case], tis_cap=2.0)
    noise = 1e-3 if kw["level"] == "sequence" else 0.4  # GSPO's clip range is ±4e-4 on the sequence ratio
    for seed in range(3):
        data = _batch(seed, noise)
        trl_value, trl_grad = _trl_loss(data, loss_type, **kw)
        our_value, our_grad = _our_loss(data, loss_type, **kw)
        assert abs(float(trl_value) - float(our_value)) < 1e-6, (loss_type, kw, seed)
        assert torch.allclose(trl_grad, our_grad, atol=1e-6, rtol=0), (loss_type, kw, seed)
        assert our_grad.abs().sum() > 0


@pytest.mark.parametrize("loss_type", ["bnpo", "dapo"])
def test_entropy_bonus_matches_trl_for_token_mean(loss_type):
    # TRL subtracts a token-mean entropy whatever the loss type; rlpost aggregates it like the loss (as verl),
    # so the two agree where the loss is a token mean.
    kw = dict(eps_low=0.2, eps_high=0.2, beta=0.0, level="token", delta=None, entropy_coef=0.01, tis_mode=None,
              tis_cap=2.0)
    data = _batch(7)
    data["entropy"] = data["entropy"].clone()
    trl_value, trl_grad = _trl_loss(data, loss_type, **kw)
    our_value, our_grad = _our_loss(data, loss_type, **kw)
    assert abs(float(trl_value) - float(our_value)) < 1e-6
    assert torch.allclose(trl_grad, our_grad, atol=1e-6, rtol=0)


def test_clip_fraction_matches_trl_region_definition():
    data = _batch(11)
    spec = LossSpec(clip_eps_low=0.2, clip_eps_high=0.28)
    adv = data["adv"][:, None].expand(B, T)
    _, metrics = policy_loss(data["logps"], data["old"], adv, aggregation_weights(data["mask"], "token-mean"),
                             data["mask"], spec)
    ratio = torch.exp(data["logps"] - data["old"])
    region = ((ratio < 0.8) & (adv < 0)) | ((ratio > 1.28) & (adv > 0))
    expected = float((region.double() * data["mask"]).sum() / data["mask"].sum())
    assert abs(float(metrics["clip_frac"]) - expected) < 1e-12 and 0 < expected < 1


def test_importance_weights_match_trl_truncate_modes():
    data = _batch(3)
    token = importance_weights(data["old"], data["rollout"], data["mask"], "token", 2.0)
    expected = torch.clamp(torch.exp((data["old"] - data["rollout"]) * data["mask"]), max=2.0)
    assert torch.equal(token, expected)
