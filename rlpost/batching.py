"""Turn scored groups into padded learner batches, one shard per learner rank.

The per-token loss weights are computed here, for each *global* mini-batch (rank shards are cut into
`updates_per_batch` contiguous mini-batches by `minibatch_bounds`, the same function the learner uses), so the
learners' weighted sums add up to the chosen aggregation however the samples are spread over ranks and
micro-batches. Micro-batches are cut by rows, or by a token budget over rows sorted by length (`micro_plan`), and
with packing each micro-batch's rows go end to end into one row without padding (`pack_rows`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rlpost.losses import aggregation_row_weights
from rlpost.partial import loss_start
from rlpost.types import CompactShard, Group, LearnerBatch


@dataclass(frozen=True)
class _Row:
    """One sample as the shard builder reads it: references to the sample's token sequences, never copies."""

    prompt: Sequence[int]
    completion: Sequence[int]
    advantage: float
    rollout_logprobs: Sequence[float]
    trained: bool  # False: the completion's tokens get no loss (e.g. a masked truncated completion)
    loss_from: int = 0  # completion tokens before this one get no loss (partial_loss 'latest')
    model_mask: Any = None  # episodes: bool per completion token, False at environment tokens (no loss)

    @property
    def in_loss(self) -> int:
        """Completion tokens that get a loss (an episode's model tokens only)."""
        if not self.trained:
            return 0
        if self.model_mask is None:
            return len(self.completion) - self.loss_from
        return int(np.count_nonzero(np.asarray(self.model_mask[self.loss_from:], dtype=bool)))


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token rows into (input_ids_BT, attention_mask_BT)."""
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    ids, valid = _padded(_flat(rows, int(lengths.sum()), np.int64), lengths, pad_id)
    return torch.from_numpy(ids), torch.from_numpy(valid.astype(np.int64))


def _padded(flat: np.ndarray, lengths: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """[B, T] int64 ids of rows `lengths` long whose tokens lie end to end in `flat` (one scatter), and the [B, T]
    bool mask of real tokens."""
    valid = np.arange(int(lengths.max()))[None, :] < lengths[:, None]
    ids = np.full(valid.shape, pad_id, dtype=np.int64)
    ids[valid] = flat  # row-major: each row's tokens, in order
    return ids, valid


def _flat(rows: Iterable[Iterable[Any]], count: int, dtype: Any) -> np.ndarray:
    """Every row's values end to end, in one array (one pass; no per-row conversions)."""
    return np.fromiter(itertools.chain.from_iterable(rows), dtype=dtype, count=count)


def minibatch_bounds(rows: int, count: int) -> list[tuple[int, int]]:
    """Cut `rows` rows into `count` contiguous slices of ceil(rows / count) rows (the last ones may be empty)."""
    size = max(1, -(-rows // max(1, count)))
    return [(min(rows, j * size), min(rows, (j + 1) * size)) for j in range(count)]


def build_shards(groups: list[Group], world_size: int, *, updates_per_batch: int = 1,
                 aggregation: str = "token-mean", constant: float = 0.0, mask_truncated: bool = False,
                 pad_id: int = 0) -> list[LearnerBatch]:
    """`compact_shards` expanded into padded learner batches (what each learner rank builds from its shard)."""
    return [expand_shard(s) for s in compact_shards(groups, world_size, updates_per_batch=updates_per_batch,
                                                    aggregation=aggregation, constant=constant,
                                                    mask_truncated=mask_truncated, pad_id=pad_id)]


def compact_shards(groups: list[Group], world_size: int, *, updates_per_batch: int = 1,
                   aggregation: str = "token-mean", constant: float = 0.0, mask_truncated: bool = False,
                   pad_id: int = 0, latest_segment_only: bool = False) -> list[CompactShard]:
    """Spread the step's samples over `world_size` shards of near-equal token count, with aggregation weights, as
    unpadded arrays plus per-row scalars (what crosses to the learners; `expand_shard` pads them there).

    mask_truncated: completions that did not end with EOS (cut at the length cap or stopped as a repeat loop) get
    no loss (DAPO's overlong filtering); they still count as sequences in the seq-mean aggregations, as in TRL and
    verl. latest_segment_only: a partial rollout's earlier segments get no loss (rollout.partial_loss 'latest').
    """
    rows = [_Row(g.prompt.token_ids, s.token_ids, adv, s.logprobs, not (mask_truncated and s.finish_reason != "stop"),
                 loss_start(s, latest_segment_only), s.env_mask)
            for g in groups for s, adv in zip(g.samples, g.advantages, strict=True)]
    order = sorted(range(len(rows)), key=lambda i: -(len(rows[i].prompt) + len(rows[i].completion)))
    buckets: list[list[int]] = [[] for _ in range(world_size)]
    loads = [0] * world_size
    for i in order:  # greedy longest-first balancing
        rank = loads.index(min(loads))
        buckets[rank].append(i)
        loads[rank] += len(rows[i].prompt) + len(rows[i].completion)
    shard_rows = [[rows[i] for i in sorted(b)] or [_Row([pad_id], [pad_id], 0.0, [0.0], False)] for b in buckets]
    weights = _row_weights(shard_rows, updates_per_batch, aggregation, constant, [bool(b) for b in buckets])
    total_tokens = max(1.0, float(sum(r.in_loss for part in shard_rows for r in part)))
    return [_compact(part, w, total_tokens, pad_id) for part, w in zip(shard_rows, weights)]


def _row_weights(shard_rows: list[list[_Row]], updates_per_batch: int, aggregation: str, constant: float,
                 real: list[bool]) -> list[np.ndarray]:
    """Each row's aggregation weight (the same for all its trained tokens), per global mini-batch: the ranks' j-th
    slices together, from their trained-token counts (losses.aggregation_row_weights: no padded grid)."""
    weights = [np.zeros(len(part), dtype=np.float64) for part in shard_rows]
    for j in range(updates_per_batch):
        parts = [(rank, lo, hi) for rank, part in enumerate(shard_rows) if real[rank]
                 for lo, hi in [minibatch_bounds(len(part), updates_per_batch)[j]] if hi > lo]
        if not parts:
            continue
        counts = np.array([r.in_loss for rank, lo, hi in parts for r in shard_rows[rank][lo:hi]], dtype=np.int64)
        per_row = aggregation_row_weights(torch.from_numpy(counts), aggregation, constant).numpy()
        offset = 0
        for rank, lo, hi in parts:
            weights[rank][lo:hi] = np.where(counts[offset: offset + hi - lo] > 0, per_row[offset: offset + hi - lo], 0)
            offset += hi - lo
    return weights


def _compact(rows: list[_Row], weights: np.ndarray, total_tokens: float, pad_id: int) -> CompactShard:
    prompts: dict[int, np.ndarray] = {}  # a group's samples share their prompt's list: convert it once
    tokens = [part for r in rows for part in (prompts.setdefault(id(r.prompt), np.asarray(r.prompt, dtype=np.int32)),
                                              np.asarray(r.completion, dtype=np.int32))]
    return CompactShard(
        token_ids=np.concatenate(tokens),
        prompt_lens=np.fromiter((len(r.prompt) for r in rows), dtype=np.int64, count=len(rows)),
        completion_lens=np.fromiter((len(r.completion) for r in rows), dtype=np.int64, count=len(rows)),
        advantages=np.fromiter((r.advantage for r in rows), dtype=np.float32, count=len(rows)),
        loss_weights=weights, trained=np.fromiter((r.trained for r in rows), dtype=bool, count=len(rows)),
        rollout_logprobs=np.concatenate([np.asarray(r.rollout_logprobs[: len(r.completion)], dtype=np.float32)
                                         for r in rows]),
        total_tokens=total_tokens, pad_id=pad_id,
        loss_starts=np.fromiter((r.loss_from for r in rows), dtype=np.int64, count=len(rows)),
        env_mask=None if all(r.model_mask is None for r in rows) else np.concatenate(
            [np.ones(len(r.completion), dtype=bool) if r.model_mask is None else np.asarray(r.model_mask, dtype=bool)
             for r in rows]))


def expand_shard(shard: CompactShard) -> LearnerBatch:
    """The padded learner batch of a compact shard: [B, T] ids and attention mask, [B, T-1] per-token tensors."""
    ids, valid = _padded(shard.token_ids, shard.prompt_lens + shard.completion_lens, shard.pad_id)
    shape = (ids.shape[0], max(1, ids.shape[1] - 1))
    columns = np.arange(shape[1])[None, :]
    starts = (shard.prompt_lens - 1)[:, None]
    positions = (columns >= starts) & (columns < starts + shard.completion_lens[:, None])
    mask = positions & shard.trained[:, None] & (columns >= starts + shard.loss_starts[:, None])
    if shard.env_mask is not None:  # an episode's environment tokens get no loss (their logprobs are 0 too)
        model = np.zeros(shape, dtype=bool)
        model[positions] = shard.env_mask
        mask &= model
    rollout_lp = np.zeros(shape, dtype=np.float32)
    rollout_lp[positions] = shard.rollout_logprobs
    mask_t = torch.from_numpy(mask.astype(np.float32))
    return LearnerBatch(
        input_ids_BT=torch.from_numpy(ids),
        attention_mask_BT=torch.from_numpy(valid.astype(np.int64)),
        loss_mask_BT=mask_t,
        advantages_BT=torch.from_numpy(np.where(positions, shard.advantages[:, None], np.float32(0))),
        loss_weights_BT=torch.from_numpy(np.where(mask, shard.loss_weights[:, None], 0.0)).to(torch.float32),
        rollout_logprobs_BT=torch.from_numpy(rollout_lp),
        metric_weights_BT=mask_t / shard.total_tokens,
    )


def micro_plan(lengths: list[int], max_rows: int, max_tokens: int = 0, packed: bool = False) -> list[list[int]]:
    """Row indices of each micro-batch of one mini-batch whose rows are `lengths` tokens long.

    max_tokens 0: consecutive slices of `max_rows` rows. Otherwise rows go longest first into micro-batches whose
    padded size (rows x their longest row) stays within `max_tokens` and whose rows stay within `max_rows`, so short
    rows are not padded to a long one's length; a row longer than the budget gets a micro-batch of its own.
    packed: the budget counts the rows' own tokens (they are packed end to end, no padding), filled first-fit
    longest first. The loss weights were fixed per global mini-batch (build_shards), so the split changes no loss
    and no gradient.
    """
    if not max_tokens:
        return [list(range(lo, min(len(lengths), lo + max_rows))) for lo in range(0, len(lengths), max_rows)]
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    if packed:
        return _first_fit(order, lengths, max_rows, max_tokens)
    plan: list[list[int]] = []
    for i in order:
        current = plan[-1] if plan else []
        if current and len(current) < max_rows and (len(current) + 1) * lengths[current[0]] <= max_tokens:
            current.append(i)
        else:
            plan.append([i])
    return plan


def _first_fit(order: list[int], lengths: list[int], max_rows: int, max_tokens: int) -> list[list[int]]:
    """Bins of row indices whose summed lengths stay within `max_tokens` (a longer row gets a bin of its own)."""
    bins: list[list[int]] = []
    loads: list[int] = []
    for i in order:
        for b, load in enumerate(loads):
            if len(bins[b]) < max_rows and load + lengths[i] <= max_tokens:
                bins[b].append(i)
                loads[b] += lengths[i]
                break
        else:
            bins.append([i])
            loads.append(lengths[i])
    return bins


def pack_rows(batch: LearnerBatch, index: list[int]) -> LearnerBatch:
    """The rows at `index` end to end in one row, without padding, with position ids restarting at each.

    A sequence of n tokens brings its n-1 per-token values (position t predicts token t+1) and one zero for the
    position that would predict the next sequence's first token; the row's last such position is dropped, so the
    per-token tensors keep their [B, T-1] shape.
    """
    lengths = [int(batch.attention_mask_BT[i].sum()) for i in index]
    ids = torch.cat([batch.input_ids_BT[i, :n] for i, n in zip(index, lengths)])[None]
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    per_token = {}
    for key in LearnerBatch.PER_TOKEN:
        values = getattr(batch, key)
        parts = [torch.cat([values[i, : n - 1], values.new_zeros(1)]) for i, n in zip(index, lengths)]
        per_token[key] = torch.cat(parts)[None, :-1]
    return LearnerBatch(ids, torch.ones_like(ids), **per_token, position_ids_BT=positions)


def split_micro(batch: LearnerBatch, micro_batch_size: int, max_tokens: int = 0,
                packed: bool = False) -> list[LearnerBatch]:
    """Cut a mini-batch into micro-batches (micro_plan), trimming padding columns, or packing each into one row."""
    lengths = [int(n) for n in batch.attention_mask_BT.sum(dim=1)]
    plan = micro_plan(lengths, micro_batch_size, max_tokens, packed)
    return [pack_rows(batch, rows) if packed else batch.take(rows) for rows in plan]


def micro_count(shards: list[CompactShard] | list[LearnerBatch], updates_per_batch: int, micro_batch_size: int,
                max_tokens: int = 0, packed: bool = False) -> int:
    """The most micro-batches any rank needs for any mini-batch: every rank runs that many backwards (ZeRO reduces
    gradients inside each), filling with fully masked rows."""
    counts = [len(micro_plan(lengths[lo:hi], micro_batch_size, max_tokens, packed))
              for lengths in map(_row_lengths, shards)
              for lo, hi in minibatch_bounds(len(lengths), updates_per_batch) if hi > lo]
    return max(counts, default=1)


def _row_lengths(shard: CompactShard | LearnerBatch) -> list[int]:
    if isinstance(shard, CompactShard):
        return shard.lengths()
    return [int(n) for n in shard.attention_mask_BT.sum(dim=1)]
