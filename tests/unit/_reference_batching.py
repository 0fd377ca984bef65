"""The slow reference of rlpost/batching.py's shard builder: the per-row implementation it had before it was
vectorised (issue 17), kept verbatim so tests/unit/test_batching.py can check the fast one gives equal tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlpost.batching import minibatch_bounds
from rlpost.losses import aggregation_weights
from rlpost.types import Group, LearnerBatch


@dataclass(frozen=True)
class _RefRow:
    prompt: list[int]
    completion: list[int]
    advantage: float
    rollout_logprobs: list[float]
    trained: bool  # False: the completion's tokens get no loss (e.g. a masked truncated completion)


def _ref_pad_rows(rows: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token rows into (input_ids_BT, attention_mask_BT)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def reference_build_shards(groups: list[Group], world_size: int, *, updates_per_batch: int = 1,
                 aggregation: str = "token-mean", constant: float = 0.0, mask_truncated: bool = False,
                 pad_id: int = 0) -> list[LearnerBatch]:
    """Spread the step's samples over `world_size` shards of near-equal token count, with aggregation weights.

    mask_truncated: completions that hit the length cap get no loss (DAPO's overlong filtering); they still count
    as sequences in the seq-mean aggregations, as in TRL and verl.
    """
    rows = [_RefRow(list(g.prompt.token_ids), list(s.token_ids), adv, list(s.logprobs),
                 not (mask_truncated and s.finish_reason == "length"))
            for g in groups for s, adv in zip(g.samples, g.advantages, strict=True)]
    order = sorted(range(len(rows)), key=lambda i: -(len(rows[i].prompt) + len(rows[i].completion)))
    buckets: list[list[int]] = [[] for _ in range(world_size)]
    loads = [0] * world_size
    for i in order:  # greedy longest-first balancing
        rank = loads.index(min(loads))
        buckets[rank].append(i)
        loads[rank] += len(rows[i].prompt) + len(rows[i].completion)
    shard_rows = [[rows[i] for i in sorted(b)] for b in buckets]
    masks = [_ref_completion_mask(r) for r in shard_rows]
    loss_w = [torch.zeros_like(m, dtype=torch.float64) for m in masks]
    total_tokens = max(1.0, float(sum(m.sum() for m in masks)))
    for j in range(updates_per_batch):  # one global mini-batch at a time
        parts = [(rank, lo, hi) for rank, m in enumerate(masks)
                 for lo, hi in [minibatch_bounds(m.shape[0], updates_per_batch)[j]] if hi > lo]
        if not parts:
            continue
        width = max(masks[rank].shape[1] for rank, _, _ in parts)
        stacked = torch.cat([torch.nn.functional.pad(masks[r][lo:hi], (0, width - masks[r].shape[1]))
                             for r, lo, hi in parts])
        weights = aggregation_weights(stacked, aggregation, constant)
        offset = 0
        for r, lo, hi in parts:
            loss_w[r][lo:hi] = weights[offset: offset + hi - lo, : masks[r].shape[1]]
            offset += hi - lo
    return [_ref_shard(r, m, w, total_tokens, pad_id) for r, m, w in zip(shard_rows, masks, loss_w)]


def _ref_completion_mask(rows: list[_RefRow]) -> torch.Tensor:
    """[B, T-1] mask of the trained completion tokens (position t predicts token t+1)."""
    width = max([len(r.prompt) + len(r.completion) for r in rows] + [2]) - 1
    mask = torch.zeros((len(rows), width))
    for i, row in enumerate(rows):
        if row.trained:
            mask[i, len(row.prompt) - 1: len(row.prompt) - 1 + len(row.completion)] = 1.0
    return mask


def _ref_shard(rows: list[_RefRow], mask: torch.Tensor, weights: torch.Tensor, total_tokens: float,
           pad_id: int) -> LearnerBatch:
    if not rows:  # a rank with no samples still joins the collectives: one fully masked row
        rows = [_RefRow([pad_id], [pad_id], 0.0, [0.0], False)]
        mask = torch.zeros((1, 1))
        weights = torch.zeros((1, 1), dtype=torch.float64)
    ids, attn = _ref_pad_rows([r.prompt + r.completion for r in rows], pad_id)
    shape = (ids.shape[0], max(1, ids.shape[1] - 1))
    advantages = torch.zeros(shape)
    rollout_lp = torch.zeros(shape)
    for i, row in enumerate(rows):
        start, end = len(row.prompt) - 1, len(row.prompt) - 1 + len(row.completion)
        advantages[i, start:end] = row.advantage
        rollout_lp[i, start:end] = torch.tensor(row.rollout_logprobs[: len(row.completion)], dtype=torch.float32)
    return LearnerBatch(
        input_ids_BT=ids,
        attention_mask_BT=attn,
        loss_mask_BT=mask[:, : shape[1]].clone(),
        advantages_BT=advantages,
        loss_weights_BT=weights[:, : shape[1]].to(torch.float32),
        rollout_logprobs_BT=rollout_lp,
        metric_weights_BT=mask[:, : shape[1]] / total_tokens,
    )


