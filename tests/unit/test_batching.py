"""Batch layout: completion tokens are where the loss looks, and empty ranks still get a masked row."""

import torch

from rlpost.batching import build_shards
from rlpost.types import Group, Prompt, Sample


def test_loss_mask_covers_exactly_the_completion_predictions():
    group = Group(Prompt(0, "p", [1, 5, 6], "a", "s"),
                  [Sample(0, [7, 8, 2], [-0.1, -0.2, -0.3], "x", "stop")], [2.0])
    (shard,) = build_shards([group], 1)
    assert shard.input_ids_BT.tolist() == [[1, 5, 6, 7, 8, 2]]
    # position t predicts token t+1: completion tokens 7, 8, 2 are predicted at t = 2, 3, 4
    assert shard.loss_mask_BT.tolist() == [[0, 0, 1, 1, 1]]
    assert shard.advantages_BT.tolist() == [[0, 0, 2, 2, 2]]
    assert torch.allclose(shard.rollout_logprobs_BT, torch.tensor([[0, 0, -0.1, -0.2, -0.3]]))


def test_more_ranks_than_samples_gives_fully_masked_shards():
    group = Group(Prompt(0, "p", [1, 5], "a", "s"), [Sample(0, [7], [-0.1], "x", "stop")], [1.0])
    shards = build_shards([group], 2)
    assert shards[0].loss_mask_BT.sum() + shards[1].loss_mask_BT.sum() == 1
    assert min(s.loss_mask_BT.sum() for s in shards) == 0
