"""Packed micro-batches (learner.packing) against padded ones, the slow reference: the same per-token logprobs,
loss and gradient on a real (tiny, float64) transformer, for each attention implementation transformers runs here."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from actors.learner import token_logprobs
from rlpost.batching import build_shards, micro_count, micro_plan, pack_rows, split_micro
from rlpost.losses import LossSpec, policy_loss
from rlpost.types import Group, Prompt, Sample


def _groups(seed: int) -> list[Group]:
    g = torch.Generator().manual_seed(seed)
    groups = []
    for uid in range(4):
        prompt = Prompt(uid, "p", [1] + torch.randint(3, 30, (int(torch.randint(1, 5, (1,), generator=g)),),
                                                      generator=g).tolist(), "a", "s")
        samples = [Sample(uid, torch.randint(3, 30, (n,), generator=g).tolist(), (-torch.rand(n, generator=g)).tolist(),
                          "", "stop") for n in torch.randint(1, 12, (3,), generator=g).tolist()]
        groups.append(Group(prompt, samples, torch.randn(3, generator=g).tolist()))
    return groups


def _model(attn: str) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=32, hidden_size=32, num_hidden_layers=2, intermediate_size=64, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, attn_implementation=attn)
    return LlamaForCausalLM(cfg).double()


def _loss_and_grad(model, micros):
    model.zero_grad()
    total = torch.zeros((), dtype=torch.float64)
    logprobs = []
    for m in micros:
        lp, _ = token_logprobs(model, m.input_ids_BT, m.attention_mask_BT, "none", m.position_ids_BT)
        loss, _ = policy_loss(lp, lp.detach() - 0.05, m.advantages_BT.double(), m.loss_weights_BT.double(),
                              m.loss_mask_BT.double(), LossSpec(ratio_level="token"))
        total = total + loss
        logprobs.append((lp.detach() * m.loss_mask_BT).sum())
    total.backward()
    grad = torch.cat([p.grad.flatten() for p in model.parameters()])
    return total.detach(), grad, torch.stack(logprobs).sum()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("budget", [0, 16, 40, 1000])
def test_packed_micro_batches_match_padded_ones(attn, budget):
    model = _model(attn)
    (shard,) = build_shards(_groups(0), 1)
    padded = _loss_and_grad(model, split_micro(shard, 4, budget))
    packed_micros = split_micro(shard, 4, budget, packed=True)
    assert all(m.input_ids_BT.shape[0] == 1 and bool(m.attention_mask_BT.all()) for m in packed_micros)
    packed = _loss_and_grad(model, packed_micros)
    tol = 1e-10 if attn == "sdpa" else 1e-7  # transformers' eager attention takes its softmax in float32
    for a, b in zip(padded, packed, strict=True):
        assert torch.allclose(a, b, atol=tol, rtol=0)


def test_a_packed_row_holds_each_sequence_with_its_own_positions_and_values():
    groups = [Group(Prompt(0, "p", [1, 5], "a", "s"), [Sample(0, [7, 8], [-0.1, -0.2], "x", "stop"),
                                                       Sample(0, [9], [-0.3], "x", "stop")], [2.0, -1.0])]
    (shard,) = build_shards(groups, 1)
    packed = pack_rows(shard, [0, 1])
    assert packed.input_ids_BT.tolist() == [[1, 5, 7, 8, 1, 5, 9]]
    assert packed.position_ids_BT.tolist() == [[0, 1, 2, 3, 0, 1, 2]]
    # position t predicts token t+1; position 3 would predict the second sequence's first token: no loss there
    assert packed.loss_mask_BT.tolist() == [[0, 1, 1, 0, 0, 1]]
    assert packed.advantages_BT.tolist() == [[0, 2, 2, 0, 0, -1]]
    assert torch.allclose(packed.rollout_logprobs_BT, torch.tensor([[0, -0.1, -0.2, 0, 0, -0.3]]))
    assert packed.sequence_lengths() == [4, 3] and shard.sequence_lengths() == [4, 3]
    assert packed.masked_row().position_ids_BT.tolist() == packed.position_ids_BT.tolist()


def test_packed_plan_fills_the_budget_with_real_tokens():
    lengths = [10, 3, 9, 2, 4, 30, 7]
    plan = micro_plan(lengths, max_rows=8, max_tokens=20, packed=True)
    assert sorted(i for micro in plan for i in micro) == list(range(len(lengths)))
    assert plan[0] == [5]  # longer than the budget: alone
    assert all(sum(lengths[i] for i in micro) <= 20 for micro in plan[1:])
    assert len(plan) == 3  # 30 | 10 9 (19) | 7 4 3 2 (16): first fit, longest first
    assert micro_plan(lengths, max_rows=2, max_tokens=20, packed=True) == [[5], [0, 2], [6, 4], [1, 3]]


def test_ranks_plan_the_same_number_of_packed_micro_batches():
    shards = build_shards(_groups(1), 2)
    count = micro_count(shards, 1, 4, 24, packed=True)
    assert count == max(len(split_micro(s, 4, 24, packed=True)) for s in shards)
    assert count < micro_count(shards, 1, 4, 24)  # packing needs fewer micro-batches than padded rows


@pytest.mark.parametrize("attn", ["auto", "eager", "sdpa"])
def test_the_recipe_attention_implementation_reaches_the_learner_model(tmp_path, attn):
    from actors.learner import load_model
    from rlpost.config import ModelConfig

    _model("sdpa").save_pretrained(tmp_path)
    model = load_model(str(tmp_path), ModelConfig(path=str(tmp_path), attn_implementation=attn))
    assert model.config._attn_implementation == ("sdpa" if attn == "auto" else attn)  # auto: transformers' default
    assert model.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_one_update_needs_no_separate_old_logprob_pass(dtype):
    """With one optimizer step per batch, pi_old (the proximal policy, for the ratio and the TIS weight) is the
    weights of the training forward itself: the learner uses its detached logprobs instead of a second no-grad
    pass (actors/learner.py). Both give the same old logprobs (bit for bit here; the tolerance is for other CPUs'
    kernels), and so the same loss and gradient."""
    model = _model("sdpa").to(dtype)
    (shard,) = build_shards(_groups(3), 1)
    batch = shard
    spec = LossSpec(proximal=True)  # TIS on (token), as off sync
    rollout_lp = batch.rollout_logprobs_BT.to(dtype) - 0.1

    def run(separate: bool):
        model.zero_grad()
        with torch.no_grad():
            frozen, _ = token_logprobs(model, batch.input_ids_BT, batch.attention_mask_BT)
        lp, _ = token_logprobs(model, batch.input_ids_BT, batch.attention_mask_BT)
        old = frozen if separate else lp.detach()
        loss, metrics = policy_loss(lp, old, batch.advantages_BT.to(dtype), batch.loss_weights_BT.to(dtype),
                                    batch.loss_mask_BT.to(dtype), spec, rollout_logprobs_BT=rollout_lp)
        loss.backward()
        return old, loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters()]), metrics

    old_a, loss_a, grad_a, m_a = run(True)
    old_b, loss_b, grad_b, m_b = run(False)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for a, b in ((old_a, old_b), (loss_a, loss_b), (grad_a, grad_b), (m_a["tis_weight_mean"], m_b["tis_weight_mean"])):
        assert torch.allclose(a, b, rtol=tol, atol=tol)
    assert abs(float(m_a["tis_weight_mean"]) - 1.0) > 1e-3  # the weight is really applied
