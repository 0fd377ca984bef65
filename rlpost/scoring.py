"""The driver's side of the reward stage: one request for the step's groups, results written onto the samples,
samples without a reward left out, and the stage's health (errors, retries, timeouts) counted and checked.

Errors are never turned into a silent 0: each scoring pass counts the completions whose reward failed even after
the worker's retry, prints the count with the error's last line (the whole traceback once per plugin), and stops
the run when the failed fraction passes reward.max_error_rate. The plugins' health gauges are logged every step as
`reward_health/<key>` (largest value of the step, never summed), and what they passed to `log_metric` as
`reward_log/<name>` (mean over the step).
"""

from __future__ import annotations

import math
import re
import sys
from collections import defaultdict
from typing import Any

from rlpost.types import Group, RewardRequest, RewardResult


class RewardErrorRateExceeded(RuntimeError):
    """More completions failed to score than reward.max_error_rate allows."""


_GAUGE, _LOG_SUM, _LOG_COUNT = "gauge/", "log_sum/", "log_count/"  # health-dict prefixes of non-count entries


def build_request(groups: list[Group], run: dict[str, Any]) -> RewardRequest:
    """All samples of the groups in order, with their prompts' dataset columns and the scalar run columns. Chat
    prompts (a message list) go out as TRL sends them: the messages, and each completion as one assistant message
    (an episode: its assistant and tool messages in order)."""
    samples = [(g.prompt, s) for g in groups for s in g.samples]
    columns: dict[str, list[Any]] = defaultdict(list)
    for prompt, _ in samples:
        for key, value in prompt.columns.items():
            columns[key].append(value)
    prompts = [p.text if p.messages is None else [dict(m) for m in p.messages] for p, _ in samples]
    completions = [s.text if p.messages is None else (s.messages or [{"role": "assistant", "content": s.text}])
                   for p, s in samples]
    return RewardRequest(prompts=prompts, completions=completions, completion_ids=[s.token_ids for _, s in samples],
                         columns=dict(columns), run=dict(run), group_sizes=[len(g.samples) for g in groups])


def apply_result(groups: list[Group], result: RewardResult) -> tuple[list[Group], dict[str, float]]:
    """Store rewards and components on the samples; drop samples whose reward is NaN (skipped after an error, or no
    function scored them) and groups left empty. Returns the groups that remain and the pass's health counts."""
    i, kept, skipped, unscored = 0, [], 0, 0
    failed = result.failed or [False] * len(result.rewards)
    for group in groups:
        remaining = []
        for sample in group.samples:
            sample.reward = result.rewards[i]
            sample.reward_components = {name: values[i] for name, values in result.components.items()}
            if math.isnan(sample.reward):
                skipped += int(failed[i])
                unscored += int(not failed[i])
            else:
                remaining.append(sample)
            i += 1
        group.samples = remaining
        if remaining:
            kept.append(group)
    health = {"completions": float(len(result.rewards)), "errors": float(result.errors), "skipped": float(skipped),
              "unscored": float(unscored), "retries": float(result.retries), "timeouts": float(result.timeouts),
              "crashes": float(result.crashes), "replaced_workers": float(result.replaced_workers)}
    health.update({_GAUGE + key: value for key, value in result.gauges.items()})
    for name, (total, count) in result.logged.items():
        health[_LOG_SUM + name], health[_LOG_COUNT + name] = total, float(count)
    return kept, health


class RewardHealth:
    """Accumulates the health counts of a step's scoring passes, reports errors and enforces the error rate."""

    def __init__(self, max_error_rate: float, on_error: str) -> None:
        self.max_error_rate, self.on_error = max_error_rate, on_error
        self.counts: dict[str, float] = defaultdict(float)
        self._seen: set[str] = set()

    def record(self, health: dict[str, float], first_error: str, where: str) -> None:
        """Add one pass (gauges keep the step's largest value); print its errors; raise RewardErrorRateExceeded past
        the allowed rate."""
        for key, value in health.items():
            if key.startswith(_GAUGE):
                self.counts[key] = max(value, self.counts.get(key, value))
            else:
                self.counts[key] += value
        errors, total = int(health["errors"]), int(health["completions"])
        if not errors:
            return
        rate = errors / max(1, total)
        lines = first_error.strip().splitlines() or ["?"]
        plugin = re.match(r"reward plugin '[^']*'", lines[0])
        print(f"[rlpost] warning: {where}: reward failed on {errors} of {total} completions ({rate:.1%}, "
              f"reward.on_error={self.on_error}); first: {plugin.group(0) + ': ' if plugin else ''}{lines[-1]}",
              file=sys.stderr, flush=True)
        key = plugin.group(0) if plugin else lines[0]
        if key not in self._seen:  # the whole traceback once per plugin; later steps get the line above
            self._seen.add(key)
            print(first_error, file=sys.stderr, flush=True)
        if rate > self.max_error_rate:
            raise RewardErrorRateExceeded(
                f"{where}: reward failed on {errors} of {total} completions ({rate:.1%}), more than "
                f"reward.max_error_rate={self.max_error_rate:g}. First error:\n{first_error}")

    def metrics(self) -> dict[str, float]:
        """This step's counts and gauges as `reward_health/*` metrics and log_metric means as `reward_log/*`, then
        reset."""
        counts, self.counts = self.counts, defaultdict(float)
        total = counts.pop("completions", 0.0)
        out = {}
        for key, value in sorted(counts.items()):
            if key.startswith(_LOG_SUM):
                name = key[len(_LOG_SUM):]
                out[f"reward_log/{name}"] = value / max(1.0, counts.get(_LOG_COUNT + name, 0.0))
            elif not key.startswith(_LOG_COUNT):
                out[f"reward_health/{key.removeprefix(_GAUGE)}"] = value
        out["reward_health/error_rate"] = counts.get("errors", 0.0) / total if total else 0.0
        return out
