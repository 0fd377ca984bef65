"""The GRPO-family loss: values against hand computations, every switch, and invariance to how a batch is split."""

import dataclasses
import math
import typing

import pytest
import torch

from rlpost.batching import build_shards, minibatch_bounds, split_micro
from rlpost.config import AlgorithmConfig
from rlpost.losses import LossSpec, aggregation_weights, importance_weights, kl_estimate, policy_loss
from rlpost.types import Group, Prompt, Sample

SPEC = LossSpec(clip_eps_low=0.2, clip_eps_high=0.2)


def _loss(lp, old, adv, spec=SPEC, **kw):
    mask = torch.ones_like(lp)
    return policy_loss(lp, old, adv, aggregation_weights(mask, "token-mean"), mask, spec, **kw)


def test_on_policy_loss_is_negative_mean_advantage_and_never_clips():
    lp = torch.tensor([[-1.0, -2.0, -0.5]])
    adv = torch.tensor([[1.0, 1.0, -2.0]])
    loss, metrics = _loss(lp, lp.clone(), adv)
    assert torch.isclose(loss, torch.tensor(0.0, dtype=loss.dtype))  # -(1 + 1 - 2)/3
    assert metrics["clip_frac"] == 0


def test_clip_limits_ratio_in_the_advantage_direction():
    old = torch.zeros(1, 2)
    lp = torch.log(torch.tensor([[1.5, 0.5]]))  # ratios 1.5 and 0.5
    adv = torch.tensor([[1.0, -1.0]])
    loss, metrics = _loss(lp, old, adv)
    # token 0: min(1.5, 1.2) * 1 = 1.2 ; token 1: min(-0.5, -0.8) = -0.8
    assert math.isclose(float(loss), -(1.2 - 0.8) / 2, rel_tol=1e-6)
    assert math.isclose(float(metrics["clip_frac"]), 1.0)


def test_clip_higher_uses_the_upper_bound_only_for_positive_advantages():
    old = torch.zeros(1, 2)
    lp = torch.log(torch.tensor([[1.5, 0.5]]))
    loss, _ = _loss(lp, old, torch.tensor([[1.0, -1.0]]), LossSpec(clip_eps_low=0.2, clip_eps_high=0.28))
    assert math.isclose(float(loss), -(1.28 - 0.8) / 2, rel_tol=1e-6)


def test_dual_clip_caps_the_loss_of_negative_advantages():
    old = torch.zeros(1, 1)
    lp = torch.log(torch.tensor([[5.0]]))  # ratio 5, A = -1: PPO loss 5, dual clip c=3 caps it at 3
    plain, _ = _loss(lp, old, torch.tensor([[-1.0]]))
    dual, metrics = _loss(lp, old, torch.tensor([[-1.0]]), LossSpec(dual_clip_c=3.0))
    assert math.isclose(float(plain), 5.0, rel_tol=1e-6) and math.isclose(float(dual), 3.0, rel_tol=1e-6)
    assert float(metrics["dual_clip_frac"]) == 1.0
    positive, _ = _loss(lp, old, torch.tensor([[1.0]]), LossSpec(dual_clip_c=3.0))
    assert math.isclose(float(positive), -1.2, rel_tol=1e-6)  # untouched for A > 0


def test_sequence_ratio_is_the_geometric_mean_of_token_ratios():
    old = torch.zeros(1, 3)
    lp = torch.tensor([[0.3, -0.1, 0.1]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # last token is padding
    spec = LossSpec(ratio_level="sequence", clip_eps_low=10, clip_eps_high=10)
    loss, metrics = policy_loss(lp, old, torch.ones(1, 3), aggregation_weights(mask, "token-mean"), mask, spec)
    assert math.isclose(float(loss), -math.exp(0.1), rel_tol=1e-6)
    assert math.isclose(float(metrics["ratio_mean"]), math.exp(0.1), rel_tol=1e-6)


def test_aggregations_by_hand():
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    per_token = torch.tensor([[1.0, 2.0, 3.0, 9.0], [4.0, 9.0, 9.0, 9.0]], dtype=torch.float64)

    def agg(mode, c=0.0):
        return float((per_token * aggregation_weights(mask, mode, c)).sum())

    assert agg("token-mean") == pytest.approx((1 + 2 + 3 + 4) / 4)
    assert agg("seq-mean-token-mean") == pytest.approx((6 / 3 + 4 / 1) / 2)
    assert agg("seq-mean-token-sum") == pytest.approx((6 + 4) / 2)
    assert agg("constant", 8) == pytest.approx((6 + 4) / (2 * 8))
    with pytest.raises(ValueError, match="constant"):
        aggregation_weights(mask, "constant")


def test_kl_estimators():
    lp, ref = torch.tensor([-1.0]), torch.tensor([-1.5])  # log(ref/pi) = -0.5
    assert math.isclose(float(kl_estimate(lp, ref, "k1")), 0.5)
    assert math.isclose(float(kl_estimate(lp, ref, "k2")), 0.125)
    assert math.isclose(float(kl_estimate(lp, ref, "k3")), math.exp(-0.5) + 0.5 - 1, rel_tol=1e-6)
    assert float(kl_estimate(lp, lp, "k3")) == 0.0


def test_kl_and_entropy_terms_enter_the_loss_with_their_coefficients():
    lp = torch.tensor([[-1.0, -1.0]])
    ref = torch.tensor([[-1.5, -0.5]])
    ent = torch.tensor([[2.0, 4.0]])
    base, _ = _loss(lp, lp, torch.zeros(1, 2))
    with_kl, m = _loss(lp, lp, torch.zeros(1, 2), LossSpec(kl_coef=0.1), ref_logprobs_BT=ref)
    k3 = (math.exp(-0.5) + 0.5 - 1 + math.exp(0.5) - 0.5 - 1) / 2
    assert math.isclose(float(with_kl - base), 0.1 * k3, rel_tol=1e-6)
    assert math.isclose(float(m["kl_ref"]), k3, rel_tol=1e-6)
    with_ent, m = _loss(lp, lp, torch.zeros(1, 2), LossSpec(entropy_coef=0.01), entropy_BT=ent)
    assert math.isclose(float(with_ent), -0.01 * 3.0, rel_tol=1e-6)
    with pytest.raises(ValueError, match="reference"):
        _loss(lp, lp, torch.zeros(1, 2), LossSpec(kl_coef=0.1))


def test_truncated_importance_weights():
    old = torch.tensor([[-1.0, -1.0, -1.0]])
    rollout = torch.tensor([[-2.0, -1.0, -0.5]])  # pi_old / pi_vllm = e, 1, e^-0.5
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    token = importance_weights(old, rollout, mask, "token", cap=2.0)
    assert token[0].tolist() == pytest.approx([2.0, 1.0, 1.0])  # capped at 2; padding gets weight 1
    seq = importance_weights(old, rollout, mask, "sequence", cap=5.0)
    assert seq[0].tolist() == pytest.approx([math.e] * 3)



def _trl_tis(old, rollout, mask, level, cap):
    """TRL 1.16's vLLM importance-sampling weight (truncate modes), written out as its rule reads: NaN log-differences
    become 0, then exp, per token or summed per sequence, then clamp at the cap."""
    diff = torch.nan_to_num((old - rollout) * mask, nan=0.0)
    if level == "sequence":
        diff = diff.sum(dim=-1, keepdim=True).expand_as(diff)
    return torch.clamp(torch.exp(diff), max=cap)


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_nan_rollout_logprob_gives_a_finite_loss_and_trl_gradient(level):
    old = torch.tensor([[-1.0, -1.2, -0.7, -0.3], [-0.5, -2.0, -1.0, -1.0]], dtype=torch.float64)
    rollout = torch.tensor([[-1.1, float("nan"), -0.9, float("nan")], [-0.6, -1.5, -1.1, -0.9]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)  # a NaN in padding too
    adv = torch.tensor([[1.0] * 4, [-0.5] * 4], dtype=torch.float64)
    lp = (old + 0.1).requires_grad_()
    spec = LossSpec(tis_level=level, tis_cap=1.5)
    weights = aggregation_weights(mask, "token-mean")
    loss, metrics = policy_loss(lp, old, adv, weights, mask, spec, rollout_logprobs_BT=rollout)
    grad, = torch.autograd.grad(loss, lp)
    assert torch.isfinite(loss) and torch.isfinite(grad).all() and torch.isfinite(metrics["tis_weight_mean"])
    tis = _trl_tis(old, rollout, mask, level, 1.5)
    if level == "token":
        assert float(tis[0, 1]) == 1.0  # the unscored token: no correction
    ref_lp = (old + 0.1).requires_grad_()  # the same loss with TRL's weight applied by hand
    ratio = torch.exp(ref_lp - old)
    pg = -torch.minimum(ratio * adv, torch.clamp(ratio, 0.8, 1.2) * adv) * tis
    reference = (pg * weights).sum()
    ref_grad, = torch.autograd.grad(reference, ref_lp)
    assert torch.allclose(loss, reference) and torch.allclose(grad, ref_grad)
    assert torch.allclose(importance_weights(old, rollout, mask, level, 1.5), tis)

def _groups(seed: int, truncated_every: int = 0) -> list[Group]:
    g = torch.Generator().manual_seed(seed)
    groups = []
    for uid in range(5):
        prompt = Prompt(uid, "p", [1] + torch.randint(3, 20, (int(torch.randint(2, 6, (1,), generator=g)),),
                                                      generator=g).tolist(), "a", "s")
        samples = []
        for j in range(3):
            n = int(torch.randint(1, 7, (1,), generator=g))
            finish = "length" if truncated_every and (uid * 3 + j) % truncated_every == 0 else "stop"
            samples.append(Sample(uid, torch.randint(3, 20, (n,), generator=g).tolist(),
                                  (-torch.rand(n, generator=g)).tolist(), "", finish))
        groups.append(Group(prompt, samples, torch.randn(3, generator=g).tolist()))
    return groups


def _minibatch_losses_and_grads(shards, table, k, spec, max_tokens=0):
    """Per global mini-batch j: the summed loss of every rank's j-th slice (as the learner runs it) and its grad."""
    out = []
    for j in range(k):
        total = torch.zeros((), dtype=torch.float64)
        for shard in shards:
            lo, hi = minibatch_bounds(shard.input_ids_BT.shape[0], k)[j]
            if hi == lo:
                continue
            for micro in split_micro(shard.rows(lo, hi), 2, max_tokens):
                logits = table[micro.input_ids_BT[:, :-1]]
                lp = torch.log_softmax(logits, -1).gather(-1, micro.input_ids_BT[:, 1:, None]).squeeze(-1)
                loss, _ = policy_loss(lp, lp.detach() - 0.05, micro.advantages_BT,
                                      micro.loss_weights_BT.double(), micro.loss_mask_BT, spec)
                total = total + loss
        grad, = torch.autograd.grad(total, table)
        out.append((total.detach(), grad))
    return out


@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "constant"])
@pytest.mark.parametrize("k", [1, 2])
def test_loss_and_gradient_invariant_to_rank_and_micro_batch_split(aggregation, k):
    groups = _groups(0, truncated_every=4)
    table = torch.randn(20, 20, dtype=torch.float64).requires_grad_()
    spec = LossSpec(ratio_level="token")
    kw = dict(updates_per_batch=k, aggregation=aggregation, constant=6.0, mask_truncated=True)
    reference = _minibatch_losses_and_grads(build_shards(groups, 1, **kw), table, k, spec)
    if k == 1:  # one mini-batch on one rank: the aggregation over all rows, computed directly
        (shard,) = build_shards(groups, 1, **kw)
        w = aggregation_weights(shard.loss_mask_BT, aggregation, 6.0)
        assert torch.allclose(shard.loss_weights_BT.double(), w, atol=1e-7)
    for world in (2, 3):
        shards = build_shards(groups, world, **kw)
        per_minibatch = _minibatch_losses_and_grads(shards, table, k, spec)
        if k == 1:
            assert torch.allclose(per_minibatch[0][0], reference[0][0], atol=1e-6)
            assert torch.allclose(per_minibatch[0][1], reference[0][1], atol=1e-6)
        weight_sums = [sum(float(s.rows(*minibatch_bounds(s.input_ids_BT.shape[0], k)[j]).loss_weights_BT.sum())
                           for s in shards if minibatch_bounds(s.input_ids_BT.shape[0], k)[j][1] >
                           minibatch_bounds(s.input_ids_BT.shape[0], k)[j][0]) for j in range(k)]
        if aggregation == "token-mean":  # each global mini-batch is a full token mean
            assert weight_sums == pytest.approx([1.0] * k, abs=1e-6)


@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "constant"])
@pytest.mark.parametrize("k", [1, 2])
def test_token_budget_micro_batches_change_neither_loss_nor_gradient(aggregation, k):
    """learner.max_tokens_per_micro regroups a mini-batch's rows by length; the weights were fixed per global
    mini-batch, so each mini-batch's loss and gradient stay those of the row-count split."""
    groups = _groups(0, truncated_every=4)
    table = torch.randn(20, 20, dtype=torch.float64).requires_grad_()
    spec = LossSpec(ratio_level="token")
    kw = dict(updates_per_batch=k, aggregation=aggregation, constant=6.0, mask_truncated=True)
    for world in (1, 2):
        shards = build_shards(groups, world, **kw)
        by_rows = _minibatch_losses_and_grads(shards, table, k, spec)
        for budget in (8, 20, 10_000):
            by_tokens = _minibatch_losses_and_grads(shards, table, k, spec, max_tokens=budget)
            for (loss_a, grad_a), (loss_b, grad_b) in zip(by_rows, by_tokens, strict=True):
                assert torch.allclose(loss_a, loss_b, atol=1e-12) and torch.allclose(grad_a, grad_b, atol=1e-12)


def test_masked_truncated_completions_get_no_weight_but_count_as_sequences():
    groups = _groups(2, truncated_every=3)
    (shard,) = build_shards(groups, 1, aggregation="seq-mean-token-sum", mask_truncated=True)
    n_rows = sum(len(g.samples) for g in groups)
    n_truncated = sum(s.finish_reason == "length" for g in groups for s in g.samples)
    assert n_truncated > 0
    assert float(shard.loss_weights_BT.sum()) * n_rows == pytest.approx(
        sum(len(s.token_ids) for g in groups for s in g.samples if s.finish_reason != "length"), rel=1e-6)


def test_metric_weights_are_a_token_mean_over_the_global_batch():
    shards = build_shards(_groups(1), 3, updates_per_batch=2, aggregation="constant", constant=4.0)
    assert math.isclose(float(sum(s.metric_weights_BT.sum() for s in shards)), 1.0, rel_tol=1e-6)


def test_loss_spec_fields_are_algorithm_config_fields_with_the_same_defaults_and_types():
    """The driver builds a LossSpec by copying AlgorithmConfig fields by name; the defaults kept for hand-built
    specs must be the schema's."""
    schema = {f.name: f for f in dataclasses.fields(AlgorithmConfig)}
    schema_types, spec_types = typing.get_type_hints(AlgorithmConfig), typing.get_type_hints(LossSpec)
    copied = [f for f in dataclasses.fields(LossSpec) if f.name not in LossSpec.DERIVED]
    for field in copied:
        assert field.name in schema, f"LossSpec.{field.name} is not an algorithm key"
        assert field.default == schema[field.name].default, f"LossSpec.{field.name} default differs from the schema"
        assert spec_types[field.name] == schema_types[field.name], f"LossSpec.{field.name} type differs"
    assert all(name not in schema for name in LossSpec.DERIVED)
    alg = AlgorithmConfig()
    assert LossSpec(**{f.name: getattr(alg, f.name) for f in copied}) == LossSpec()


@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "constant"])
def test_row_weights_are_what_every_trained_token_of_the_row_gets(aggregation):
    from rlpost.losses import aggregation_row_weights

    g = torch.Generator().manual_seed(1)
    for rows in (1, 3, 17):
        lengths = torch.randint(0, 40, (rows,), generator=g)
        mask = (torch.arange(48)[None, :] < lengths[:, None]).float()
        grid = aggregation_weights(mask, aggregation, 9.0)
        per_row = aggregation_row_weights(lengths, aggregation, 9.0)
        assert per_row.dtype == torch.float64
        assert torch.equal(grid, mask.double() * per_row[:, None])  # every trained token carries its row's weight
        # and the weights sum to the aggregation's normaliser: 1 for token-mean, the same for every row otherwise
        if aggregation == "token-mean" and lengths.sum() > 0:
            assert float(grid.sum()) == pytest.approx(1.0)


def test_vanilla_policy_loss_is_minus_advantage_times_log_likelihood():
    """RAFT's `vanilla` loss (GVM's policy_loss=vanilla): -A log pi per token, token-mean; no ratio, no clip. Its
    gradient is -A / n per token's logprob whatever pi_old is, where PPO's is -A ratio / n inside the clip."""
    lp = torch.tensor([[-1.0, -0.5, -2.0]], dtype=torch.float64, requires_grad=True)
    adv = torch.tensor([[1.0, -1.0, 0.5]], dtype=torch.float64)
    old = torch.tensor([[-3.0, -0.1, -2.0]], dtype=torch.float64)  # far off: PPO would clip, vanilla ignores it
    loss, metrics = _loss(lp, old, adv, LossSpec(policy_loss="vanilla"))
    assert float(loss.detach()) == pytest.approx((1.0 - 0.5 + 1.0) / 3, abs=1e-12)
    loss.backward()
    assert lp.grad[0].tolist() == pytest.approx([-1 / 3, 1 / 3, -0.5 / 3], abs=1e-12)
    assert "clip_frac" not in metrics and float(metrics["pg_loss"]) == pytest.approx(0.5, abs=1e-12)


def test_raft_pp_is_ppo_with_a_dual_clip_of_three():
    """RAFT++ (GVM's policy_loss=plusplus): PPO clip 0.2 with dual clip 3 on the raft advantage."""
    from rlpost.loop import loss_spec
    from rlpost.recipes import load_config

    spec = loss_spec(load_config("quickstart", ["algorithm.preset=raft_pp"]))
    assert (spec.policy_loss, spec.clip_eps_low, spec.clip_eps_high, spec.dual_clip_c) == ("ppo", 0.2, 0.2, 3.0)
    lp = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    old = torch.tensor([[-2.0, 0.0]], dtype=torch.float64)  # ratio e^2 on the first token
    adv = torch.tensor([[-1.0, 1.0]], dtype=torch.float64)
    loss, _ = _loss(lp, old, adv, spec)
    # token 1: A < 0, -min(e^2 * -1, 1.2 * -1) = e^2, dual-clipped to 3 * |A| = 3; token 2: ratio 1 -> -1
    assert float(loss) == pytest.approx((3.0 - 1.0) / 2, abs=1e-12)
