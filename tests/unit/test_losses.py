"""The clipped GRPO loss: its value against a hand computation, and invariance to how the batch is split."""

import torch

from rlpost.batching import build_shards, split_micro
from rlpost.losses import clipped_policy_loss, token_mean_weights
from rlpost.types import Group, Prompt, Sample


def _loss(lp, old, adv, w, **kw):
    return clipped_policy_loss(lp, old, adv, w, clip_eps_low=0.2, clip_eps_high=0.2, **kw)


def test_on_policy_loss_is_negative_weighted_advantage_and_never_clips():
    lp = torch.tensor([[-1.0, -2.0, -0.5]])
    adv = torch.tensor([[1.0, 1.0, -2.0]])
    w = torch.full((1, 3), 1 / 3)
    loss, metrics = _loss(lp, lp.clone(), adv, w)
    assert torch.isclose(loss, torch.tensor(0.0))  # -(1 + 1 - 2)/3
    assert metrics["clip_frac"] == 0


def test_clip_limits_ratio_in_the_advantage_direction():
    old = torch.zeros(1, 2)
    lp = torch.log(torch.tensor([[1.5, 0.5]]))  # ratios 1.5 and 0.5
    adv = torch.tensor([[1.0, -1.0]])
    w = torch.full((1, 2), 0.5)
    loss, metrics = _loss(lp, old, adv, w)
    # token 0: min(1.5, 1.2) * 1 = 1.2 ; token 1: min(-0.5, -0.8) = -0.8
    assert torch.isclose(loss, torch.tensor(-(1.2 - 0.8) / 2))
    assert torch.isclose(metrics["clip_frac"], torch.tensor(1.0))


def _groups(seed: int) -> list[Group]:
    g = torch.Generator().manual_seed(seed)
    groups = []
    for uid in range(5):
        prompt = Prompt(uid, "p", [1] + torch.randint(3, 20, (int(torch.randint(2, 6, (1,), generator=g)),),
                                                      generator=g).tolist(), "a", "s")
        samples = []
        for _ in range(3):
            n = int(torch.randint(1, 7, (1,), generator=g))
            samples.append(Sample(uid, torch.randint(3, 20, (n,), generator=g).tolist(),
                                  (-torch.rand(n, generator=g)).tolist(), "", "stop"))
        groups.append(Group(prompt, samples, torch.randn(3, generator=g).tolist()))
    return groups


def _total_loss_and_grad(shards, table):
    total = torch.zeros(())
    for shard in shards:
        for micro in split_micro(shard, 2):
            logits = table[micro.input_ids_BT[:, :-1]]
            lp = torch.log_softmax(logits, -1).gather(-1, micro.input_ids_BT[:, 1:, None]).squeeze(-1)
            loss, _ = _loss(lp, lp.detach(), micro.advantages_BT, micro.loss_weights_BT)
            total = total + loss
    grad, = torch.autograd.grad(total, table)
    return total.detach(), grad


def test_loss_and_gradient_invariant_to_rank_and_micro_batch_split():
    groups = _groups(0)
    table = torch.randn(20, 20, dtype=torch.float64).requires_grad_()
    reference = _total_loss_and_grad(build_shards(groups, 1), table)
    for world in (2, 3, 4):
        value, grad = _total_loss_and_grad(build_shards(groups, world), table)
        assert torch.allclose(value, reference[0], atol=1e-12)
        assert torch.allclose(grad, reference[1], atol=1e-12)


def test_token_mean_weights_sum_to_one_over_global_batch():
    groups = _groups(1)
    shards = build_shards(groups, 3)
    assert torch.isclose(sum(s.loss_weights_BT.sum() for s in shards), torch.tensor(1.0))
    assert torch.equal(token_mean_weights(torch.ones(2, 2), 4), torch.full((2, 2), 0.25))
