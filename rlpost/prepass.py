"""Passes over the prompts outside a training step: the RIF-RFT filter before training and held-out
evaluation (greedy, and mean@k sampled, with standard errors).

Both go through `Rollouts` (generate, then score with the reward functions only: no shaping or KL terms), with
seeds of their own (rlpost/rollouts.py).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from rlpost.multiturn import episode_metrics
from rlpost.rollouts import EVAL_STEP, RIF_STEP, Rollouts, mean
from rlpost.types import Prompt


def rif_filter(rollouts: Rollouts, prompts: list[Prompt], run: dict[str, Any], k: int, threshold: float,
               drop_all_correct: bool = False, chunk: int = 256, progress: Callable[[int], None] | None = None,
               ) -> tuple[list[Prompt], dict[str, float]]:
    """RIF-RFT's pass before training (rollout-based instance filtering): `k` rollouts per prompt; prompts with no
    successful rollout (and, when asked, those with only successes) are dropped. Returns the kept prompts and the
    kept fraction per data_source."""
    kept: list[Prompt] = []
    seen: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for start in range(0, len(prompts), chunk):
        part = prompts[start: start + chunk]
        groups = rollouts.generate(part, rollouts.requests(part, RIF_STEP, k, round_=1 + start // chunk))
        for group in rollouts.score(groups, run, "RIF pre-pass"):
            wins = sum(s.accuracy >= threshold for s in group.samples)
            keep = wins > 0 and not (drop_all_correct and wins == len(group.samples))
            seen[group.prompt.data_source][0] += 1
            seen[group.prompt.data_source][1] += int(keep)
            if keep:
                kept.append(group.prompt)
        if progress is not None:
            progress(len(part))
    return kept, {f"rif/kept_frac/{src}": n_kept / n for src, (n, n_kept) in sorted(seen.items())}


def evaluate(rollouts: Rollouts, prompts: list[Prompt], run: dict[str, Any], sampled: bool = False, k: int = 1
             ) -> dict[str, float]:
    """Greedy held-out accuracy (first reward function) per data_source, and their unweighted mean; `sampled`: the
    mean over `k` completions per prompt sampled like a training rollout (temperature, top_p, cap; seeds of their
    own). A completion left without a reward is left out of the mean; `se/mean` is the mean's standard error and
    `len/mean` the completions' mean length in tokens."""
    requests = (rollouts.requests(prompts, EVAL_STEP, k, round_=1) if sampled
                else rollouts.requests(prompts, EVAL_STEP, 1, greedy=True))
    groups = rollouts.generate(prompts, requests)
    by_source: dict[str, list[float]] = defaultdict(list)
    lengths: list[float] = []
    scored = rollouts.score(groups, run, "evaluation")
    for group in scored:
        by_source[group.prompt.data_source].append(mean([s.accuracy for s in group.samples]))
        lengths += [float(len(s.token_ids)) for s in group.samples]
    calls = {k if "/" in k else f"{k}/all": v  # episodes only; every key has a '/' (no data_source is named so)
             for k, v in episode_metrics(scored, "").items() if k.startswith("call_rate")}
    return {**accuracy_with_error(by_source), "len/mean": mean(lengths), **calls}


def accuracy_with_error(by_source: dict[str, list[float]]) -> dict[str, float]:
    """Per-source accuracy (the mean of per-prompt scores), their unweighted mean, and `se/mean`: its standard error
    over prompts, sqrt(sum of the sources' squared standard errors) / sources, each from the sample variance of its
    per-prompt scores (which for mean@k holds both the prompt draw and the k samples). A source with one scored
    prompt has no variance to estimate and adds nothing; NaN when no source has two."""
    scores = {source: [v for v in values if not math.isnan(v)] for source, values in sorted(by_source.items())}
    result = {source: mean(v) for source, v in scores.items()}
    result["mean"] = mean(list(result.values()))
    counted = [v for v in scores.values() if v]  # the sources the mean is over
    squared = [_variance(v) / len(v) for v in counted if len(v) > 1]
    result["se/mean"] = math.sqrt(sum(squared)) / len(counted) if squared else float("nan")
    return result


def _variance(values: list[float]) -> float:
    centre = sum(values) / len(values)
    return sum((v - centre) ** 2 for v in values) / (len(values) - 1)


def accuracy_only(result: dict[str, float]) -> dict[str, float]:
    """An evaluate() result without its standard error and length: data_source -> accuracy, and 'mean'."""
    return {k: v for k, v in result.items() if "/" not in k}
