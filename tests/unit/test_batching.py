"""Batch layout: completion tokens are where the loss looks, and empty ranks still get a masked row."""

import pytest
import torch

from rlpost.batching import build_shards, micro_plan, pad_rows, split_micro
from rlpost.types import Group, LearnerBatch, Prompt, Sample


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


def test_micro_plan_without_a_budget_cuts_consecutive_rows():
    assert micro_plan([5, 3, 9, 2, 7], 2) == [[0, 1], [2, 3], [4]]


def test_micro_plan_packs_rows_sorted_by_length_within_the_token_budget():
    lengths = [10, 3, 9, 2, 4, 30]
    plan = micro_plan(lengths, max_rows=3, max_tokens=20)
    assert sorted(i for micro in plan for i in micro) == list(range(len(lengths)))  # every row exactly once
    assert plan[0] == [5]  # longer than the budget: alone
    for micro in plan[1:]:
        assert len(micro) <= 3 and len(micro) * max(lengths[i] for i in micro) <= 20
    assert plan[1] == [0, 2]  # 10 and 9 share (2 x 10); the short rows go together, not padded to 10
    assert plan[2] == [4, 1, 3]


def test_token_budget_cuts_padding():
    groups = [Group(Prompt(u, "p", [1, 2], "a", "s"), [Sample(u, [3] * n, [-0.1] * n, "c", "stop")
                                                       for n in (1, 12, 2, 11)], [1.0, -1.0, 0.5, -0.5])
              for u in range(4)]
    (shard,) = build_shards(groups, 1)

    def padded(micros):
        return sum(int(m.attention_mask_BT.numel() - m.attention_mask_BT.sum()) for m in micros)

    by_rows, by_tokens = split_micro(shard, 4), split_micro(shard, 4, max_tokens=40)
    assert sum(m.input_ids_BT.shape[0] for m in by_tokens) == 16
    assert padded(by_tokens) < padded(by_rows) / 4


def _random_groups(seed: int, n_groups: int) -> list[Group]:
    g = torch.Generator().manual_seed(seed)
    groups = []
    for uid in range(n_groups):
        prompt = Prompt(uid, "p", torch.randint(0, 50, (int(torch.randint(1, 9, (1,), generator=g)),),
                                                generator=g).tolist(), "a", "s")
        n = int(torch.randint(1, 6, (1,), generator=g))
        samples = []
        for _ in range(n):
            length = int(torch.randint(0, 13, (1,), generator=g))  # empty completions included
            samples.append(Sample(uid, torch.randint(0, 50, (length,), generator=g).tolist(),
                                  (-torch.rand(length, generator=g)).tolist(), "x",
                                  "length" if int(torch.randint(0, 3, (1,), generator=g)) == 0 else "stop"))
        groups.append(Group(prompt, samples, torch.randn(n, generator=g).tolist()))
    return groups


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "constant"])
def test_vectorised_shards_equal_the_per_row_reference(seed, aggregation):
    """The fast builder against the per-row implementation it replaced (tests/unit/_reference_batching.py): every
    field equal, dtypes included, for any world size, mini-batch count and empty ranks."""
    from _reference_batching import reference_build_shards

    groups = _random_groups(seed, n_groups=1 + seed * 3)
    for world in (1, 2, 5):
        for k in (1, 3):
            kw = dict(updates_per_batch=k, aggregation=aggregation, constant=7.0, mask_truncated=seed % 2 == 0,
                      pad_id=seed)
            for fast, slow in zip(build_shards(groups, world, **kw), reference_build_shards(groups, world, **kw),
                                  strict=True):
                for field in ("input_ids_BT", "attention_mask_BT", *LearnerBatch.PER_TOKEN):
                    a, b = getattr(fast, field), getattr(slow, field)
                    assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), (field, world, k)


def test_pad_rows_equals_the_per_row_reference():
    from _reference_batching import _ref_pad_rows

    rows = [[5, 6, 7], [1], [2, 3, 4, 9, 9], []]
    for fast, slow in zip(pad_rows(rows, 3), _ref_pad_rows(rows, 3), strict=True):
        assert fast.dtype == slow.dtype and torch.equal(fast, slow)


def test_samples_holding_arrays_give_the_same_shards_as_lists():
    """The rollout actor hands over int32 ids and float32 logprobs (numpy); lists built elsewhere must agree."""
    import numpy as np

    groups = _random_groups(3, n_groups=7)
    arrays = [Group(g.prompt, [Sample(s.prompt_uid, np.asarray(s.token_ids, dtype=np.int32),
                                      np.asarray(s.logprobs, dtype=np.float32), s.text, s.finish_reason)
                               for s in g.samples], list(g.advantages)) for g in groups]
    for fast, slow in zip(build_shards(arrays, 3, updates_per_batch=2), build_shards(groups, 3, updates_per_batch=2),
                          strict=True):
        for field in ("input_ids_BT", "attention_mask_BT", *LearnerBatch.PER_TOKEN):
            assert torch.equal(getattr(fast, field), getattr(slow, field)), field


def test_expand_shard_reads_received_buffers_without_writing_or_aliasing_them():
    """Ray hands a learner the shard's numpy arrays as read-only views of the object store (zero copy). Expanding
    must work on such arrays, leave them unchanged, and return tensors that own their memory, so that anything the
    learner does in place to its batch can never write into a shared buffer."""
    import dataclasses

    import numpy as np

    from rlpost.batching import compact_shards, expand_shard

    for shard in compact_shards(_random_groups(4, n_groups=9), 2, updates_per_batch=2, mask_truncated=True):
        arrays = {f.name: getattr(shard, f.name) for f in dataclasses.fields(shard)
                  if isinstance(getattr(shard, f.name), np.ndarray)}
        before = {name: a.copy() for name, a in arrays.items()}
        for a in arrays.values():
            a.flags.writeable = False  # what a zero-copy get from the object store gives
        batch = expand_shard(shard)
        for name, a in arrays.items():
            assert np.array_equal(a, before[name]), name
        for field in ("input_ids_BT", "attention_mask_BT", *LearnerBatch.PER_TOKEN):
            tensor = getattr(batch, field)
            if tensor is None:
                continue
            view = tensor.numpy()
            assert view.flags.writeable, field
            assert not any(np.shares_memory(view, a) for a in arrays.values()), field
