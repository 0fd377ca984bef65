"""Partial rollouts (Kimi k1.5 §2.6.2): `rollout.partial_max_tokens` caps what one pass generates per completion.

A completion still unfinished at that cap (no EOS, below its own length limit) is parked with its group, and the
next step's collection continues it from its tokens so far, with the weights the engines hold then; a group trains
once all its completions are done, so one very long completion no longer holds a whole step. A continued completion
keeps each segment's policy version (`Sample.segments`) and vLLM's logprobs of each token under the weights that
sampled it, so the stale-sample correction (README, 'Asynchronous rollouts') weights every token by its own
segment's behaviour policy. `rollout.partial_loss: latest` leaves a completion's earlier segments out of the loss.
`rollout.stop_on_repeat: n` ends, instead of parking, a completion whose tail is one block of up to 16 tokens
repeated n times (a degenerate loop; finish_reason 'repeat'), so a loop costs one segment, not the whole budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rlpost.records import decode_group, encode_group
from rlpost.rollouts import PARTIAL_ROUND, Rollouts
from rlpost.types import GenerationRequest, Group, Prompt, Sample

MAX_PERIOD = 16  # longest repeated block stop_on_repeat looks for


def repeat_period(ids: Any, times: int, max_period: int = MAX_PERIOD) -> int:
    """The shortest period p <= max_period such that the last p * times ids are one block repeated `times` times;
    0 when there is none (or times < 2)."""
    if times < 2:
        return 0
    tail = np.asarray(ids[-max_period * times:], dtype=np.int64)
    for p in range(1, max_period + 1):
        if p * times > len(tail):
            break
        window = tail[len(tail) - p * times:]
        if np.array_equal(window, np.tile(window[:p], times)):
            return p
    return 0


@dataclass
class Parked:
    """A group waiting for some completions; `limit` is their length limit (the request's cap when drawn)."""

    group: Group
    limit: int


class PartialBuffer:
    """The groups parked between steps, what continues them, and which groups are done."""

    def __init__(self, segment_tokens: int, stop_on_repeat: int) -> None:
        self.segment_tokens, self.stop_on_repeat = segment_tokens, stop_on_repeat
        self.parked: list[Parked] = []

    def segment(self, requests: list[GenerationRequest]) -> list[int]:
        """Cap new requests at one segment; returns each one's own length limit."""
        limits = [r.max_new_tokens for r in requests]
        for r in requests:
            r.max_new_tokens = min(r.max_new_tokens, self.segment_tokens)
        return limits

    def continuations(self, parked: list[Parked], seed_of: Any, temperature: float,
                      top_p: float) -> tuple[list[GenerationRequest], list[Sample]]:
        """One request (n = 1) per unfinished completion of `parked`, continuing from its tokens; `seed_of(i)`
        seeds the i-th. Returns the requests and, aligned, the samples they extend."""
        requests: list[GenerationRequest] = []
        targets: list[Sample] = []
        for entry in parked:
            prompt = entry.group.prompt
            for sample in entry.group.samples:
                if self.done(sample, entry.limit):
                    continue
                requests.append(GenerationRequest(
                    prompt.uid, [*prompt.token_ids, *map(int, sample.token_ids)], 1,
                    min(self.segment_tokens, entry.limit - len(sample.token_ids)), temperature, top_p,
                    seed_of(len(requests)), prefix_len=len(sample.token_ids)))
                targets.append(sample)
        return requests, targets

    def done(self, sample: Sample, limit: int) -> bool:
        """Finished: EOS, a repeat stop, or its length limit reached."""
        return sample.finish_reason != "length" or len(sample.token_ids) >= limit

    def settle(self, groups: list[Group], limits: list[int]) -> list[Group]:
        """Mark loops as 'repeat'; park the groups with an unfinished completion (in order); return the rest."""
        complete = []
        for group, limit in zip(groups, limits, strict=True):
            for sample in group.samples:
                if (self.stop_on_repeat and not self.done(sample, limit)
                        and repeat_period(sample.token_ids, self.stop_on_repeat)):
                    sample.finish_reason = "repeat"
            if all(self.done(s, limit) for s in group.samples):
                complete.append(group)
            else:
                self.parked.append(Parked(group, limit))
        return complete

    def take_parked(self) -> list[Parked]:
        """The parked groups, removed from the buffer (their continuations are about to be generated)."""
        parked, self.parked = self.parked, []
        return parked

    def state_dict(self) -> list[dict[str, Any]]:
        return [{"group": encode_group(p.group), "limit": p.limit} for p in self.parked]

    def load_state_dict(self, records: list[dict[str, Any]], prompts: dict[int, Prompt]) -> None:
        self.parked = [Parked(decode_group(r["group"], prompts), r["limit"]) for r in records]


def extend(sample: Sample, piece: Sample) -> None:
    """Append a continuation's tokens, logprobs and segment to `sample`; its text and finish reason are the
    continuation's (the engine decodes the whole completion)."""
    if not sample.segments:
        sample.segments = [(0, sample.version)]
    sample.segments.append((len(sample.token_ids), piece.version))
    sample.token_ids = np.concatenate([np.asarray(sample.token_ids, dtype=np.int32),
                                       np.asarray(piece.token_ids, dtype=np.int32)])
    sample.logprobs = np.concatenate([np.asarray(sample.logprobs, dtype=np.float32),
                                      np.asarray(piece.logprobs, dtype=np.float32)])
    sample.text, sample.finish_reason = piece.text, piece.finish_reason


def loss_start(sample: Sample, latest_only: bool) -> int:
    """First completion token in the loss: 0, or the last segment's start with partial_loss 'latest'."""
    return sample.segments[-1][0] if latest_only and sample.segments else 0


def trained_version(sample: Sample, latest_only: bool) -> int:
    """Policy version of the oldest token in the loss."""
    return sample.segments[-1][1] if latest_only and sample.segments else sample.version


def generate_partial(buffer: PartialBuffer, rollouts: Rollouts, prompts: list[Prompt],
                     requests: list[GenerationRequest], step: int, first_round: bool, temperature: float,
                     top_p: float) -> tuple[list[Group], int, int, dict[str, float]]:
    """One pass with partial rollouts: the round's requests capped at a segment and (first round of a step) every
    parked completion continued, in one call to the engines. Returns the groups now complete, the new completions
    and the tokens generated (continuations included), and the `partial/*` metrics."""
    limits = buffer.segment(requests)
    parked = buffer.take_parked() if first_round else []
    more, targets = buffer.continuations(parked, lambda i: rollouts.seed(step, i, PARTIAL_ROUND), temperature, top_p)
    results = rollouts.rollout.generate([*requests, *more])
    groups = [Group(p, s) for p, s in zip(prompts, results)]
    pieces = [piece for (piece,) in results[len(requests):]]
    for sample, piece in zip(targets, pieces, strict=True):
        extend(sample, piece)
    tokens = sum(len(s.token_ids) for g in groups for s in g.samples) + sum(len(p.token_ids) for p in pieces)
    done = buffer.settle([*groups, *(p.group for p in parked)], [*limits, *(p.limit for p in parked)])
    finished = {id(g) for g in done}
    metrics = {"partial/continued": float(len(pieces)),  # parked completions continued
               "partial/resumed_groups": float(sum(id(p.group) in finished for p in parked)),
               "partial/parked_groups": float(len(buffer.parked))}  # waiting after the round
    return done, sum(len(g.samples) for g in groups), tokens, metrics
