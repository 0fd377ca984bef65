"""Turn scored groups into padded learner batches, one shard per learner rank.

The per-token loss weights are computed here for the whole global batch (token-mean), so the learners' weighted
sums add up to the same loss however the samples are spread over ranks. Leaves out: sequence packing and dynamic
token budgets (a later optimisation; it must keep a slow reference and an equivalence test).
"""

from __future__ import annotations

import torch

from rlpost.losses import token_mean_weights
from rlpost.types import Group, LearnerBatch


def pad_rows(rows: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token rows into (input_ids_BT, attention_mask_BT)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def build_shards(groups: list[Group], world_size: int, pad_id: int = 0) -> list[LearnerBatch]:
    """Spread the step's samples over `world_size` shards of near-equal token count."""
    rows = []  # (prompt ids, completion ids, advantage, rollout logprobs)
    for group in groups:
        for sample, adv in zip(group.samples, group.advantages, strict=True):
            rows.append((group.prompt.token_ids, sample.token_ids, adv, sample.logprobs))
    total_tokens = sum(len(r[1]) for r in rows)
    order = sorted(range(len(rows)), key=lambda i: -(len(rows[i][0]) + len(rows[i][1])))
    buckets: list[list[int]] = [[] for _ in range(world_size)]
    loads = [0] * world_size
    for i in order:  # greedy longest-first balancing
        rank = loads.index(min(loads))
        buckets[rank].append(i)
        loads[rank] += len(rows[i][0]) + len(rows[i][1])
    return [_shard([rows[i] for i in sorted(b)], total_tokens, pad_id) for b in buckets]


def _shard(rows: list[tuple], total_tokens: int, pad_id: int) -> LearnerBatch:
    if not rows:  # a rank with no samples still joins the collectives: one fully masked row
        rows = [([pad_id], [pad_id], 0.0, [0.0])]
        real = False
    else:
        real = True
    ids, attn = pad_rows([list(p) + list(c) for p, c, _, _ in rows], pad_id)
    shape = (ids.shape[0], ids.shape[1] - 1) if ids.shape[1] > 1 else (ids.shape[0], 1)
    loss_mask = torch.zeros(shape)
    advantages = torch.zeros(shape)
    rollout_lp = torch.zeros(shape)
    for i, (prompt, completion, adv, logprobs) in enumerate(rows):
        start, end = len(prompt) - 1, len(prompt) - 1 + len(completion)
        loss_mask[i, start:end] = 1.0 if real else 0.0
        advantages[i, start:end] = adv
        rollout_lp[i, start:end] = torch.tensor(logprobs[: len(completion)], dtype=torch.float32)
    return LearnerBatch(
        input_ids_BT=ids,
        attention_mask_BT=attn,
        loss_mask_BT=loss_mask,
        advantages_BT=advantages,
        loss_weights_BT=token_mean_weights(loss_mask, total_tokens),
        rollout_logprobs_BT=rollout_lp,
    )


def split_micro(batch: LearnerBatch, micro_batch_size: int) -> list[LearnerBatch]:
    """Slice a shard into micro-batches of at most `micro_batch_size` rows, trimming padding columns."""
    out = []
    n = batch.input_ids_BT.shape[0]
    for lo in range(0, n, micro_batch_size):
        hi = min(n, lo + micro_batch_size)
        width = int(batch.attention_mask_BT[lo:hi].sum(dim=1).max())
        width = max(width, 2)
        out.append(LearnerBatch(
            input_ids_BT=batch.input_ids_BT[lo:hi, :width],
            attention_mask_BT=batch.attention_mask_BT[lo:hi, :width],
            loss_mask_BT=batch.loss_mask_BT[lo:hi, : width - 1],
            advantages_BT=batch.advantages_BT[lo:hi, : width - 1],
            loss_weights_BT=batch.loss_weights_BT[lo:hi, : width - 1],
            rollout_logprobs_BT=batch.rollout_logprobs_BT[lo:hi, : width - 1],
        ))
    return out
