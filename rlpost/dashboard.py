"""The report's figure: one PNG of nine panels over training steps, for one run or several overlaid.

Noisy per-step curves are drawn as an exponential moving average with the raw points faint behind it (the span
grows with the run's length: about a twentieth of its steps). Colours tell data sources (or metrics) apart, line
styles tell runs apart, and the legend names runs by directory and, when they differ in a few recipe keys, by those
keys' values. Panels whose metrics a run did not log stay empty with a note (e.g. no held-out curve without
`run.eval_every`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rlpost.metrics import pyplot
from rlpost.rundir import RunData

STYLES = ("-", "--", ":", "-.")
PHASES = ("sample", "allocate", "generate", "reward", "advantage", "train", "wait", "sync")
COLLECT_PHASES = ("sample", "allocate", "generate", "reward")


def ema(values: list[float], span: float) -> list[float]:
    """Exponential moving average with alpha 2 / (span + 1); NaN points are skipped (the average carries on)."""
    alpha, out, current = 2.0 / (span + 1.0), [], math.nan
    for v in values:
        if math.isfinite(v):
            current = v if math.isnan(current) else alpha * v + (1 - alpha) * current
        out.append(current)
    return out


def series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of the records that hold `key` as a number."""
    pairs = [(r["step"], float(r[key])) for r in records if isinstance(r.get(key), (int, float))]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _ema_series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    steps, values = series(records, key)
    return steps, ema(values, max(1.0, len(steps) / 20))


def _smoothed(ax: Any, steps: list[int], values: list[float], label: str, color: Any, style: str) -> None:
    if not steps:
        return
    span = max(1.0, len(steps) / 20)
    ax.plot(steps, values, color=color, alpha=0.15, linewidth=0.8, linestyle="-")
    ax.plot(steps, ema(values, span), color=color, linestyle=style, linewidth=1.5, label=label)


def draw_dashboard(runs: list[RunData], labels: list[str], path: Path, dpi: int = 80) -> None:
    """Write the nine-panel figure of `runs` to `path`."""
    plt = pyplot()
    fig, axes = plt.subplots(3, 3, figsize=(18, 12))
    panels = [_reward, _train_accuracy, _held_out, _sampler, _allocation, _lengths, _stability, _phases, _throughput]
    for ax, panel in zip(axes.flat, panels):
        panel(ax, runs, labels)
        ax.set_xlabel("step")
        if ax.has_data():
            handles, names = ax.get_legend_handles_labels()
            if names:
                ax.legend(fontsize=7, loc="best")
        else:
            ax.text(0.5, 0.5, "not logged by these runs", ha="center", va="center", transform=ax.transAxes,
                    color="grey")
    fig.suptitle("rlpost report: " + "; ".join(labels), fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def _colors(n: int) -> list[Any]:
    cmap = pyplot().get_cmap("tab10")
    return [cmap(i % 10) for i in range(n)]


def _reward(ax: Any, runs: list[RunData], labels: list[str]) -> None:
    for run, label, color in zip(runs, labels, _colors(len(runs))):
        _smoothed(ax, *series(run.steps(), "reward/mean"), label, color, "-")
    ax.set_title("mean reward (EMA; raw faint)")


def _per_source(ax: Any, runs: list[RunData], labels: list[str], prefix: str, skip: tuple[str, ...] = ()) -> None:
    """One colour per data_source, one line style per run."""
    sources = sorted({k[len(prefix):] for r in runs for rec in r.steps() for k in rec
                      if k.startswith(prefix) and k[len(prefix):] not in skip})
    colors = dict(zip(sources, _colors(len(sources))))
    for i, run in enumerate(runs):  # the legend: each source once (colour), then each run once (line style)
        for source in sources:
            _smoothed(ax, *series(run.steps(), prefix + source), source if i == 0 else "_", colors[source],
                      STYLES[i % len(STYLES)])
    _style_legend(ax, labels)


def _style_legend(ax: Any, labels: list[str]) -> None:
    """Legend entries for the runs' line styles (several runs only)."""
    if len(labels) > 1:
        for i, label in enumerate(labels):
            ax.plot([], [], color="black", linestyle=STYLES[i % len(STYLES)], label=label)


def _train_accuracy(ax: Any, runs: list[RunData], labels: list[str]) -> None:
    _per_source(ax, runs, labels, "acc/", skip=("mean",))
    ax.set_title("training accuracy per data_source")


def _held_out(ax: Any, runs: list[RunData], labels: list[str]) -> None:
    for i, (run, label, color) in enumerate(zip(runs, labels, _colors(len(runs)))):
        points = run.evals()
        if not points:
            continue
        color = color if len(runs) > 1 else "black"  # one run: the sources take the colours, as elsewhere
        ax.plot([p[0] for p in points], [p[1].get("mean", math.nan) for p in points], marker="o", color=color,
                linestyle=STYLES[i % len(STYLES)], label=f"greedy · {label}" if len(runs) > 1 else "greedy mean")
        steps, values = series(run.steps(), "eval/sampled/mean")
        if steps:
            ax.plot(steps, values, marker="x", color=color, linestyle=":", alpha=0.8,
                    label=f"sampled · {label}" if len(runs) > 1 else "sampled mean")
        if len(runs) == 1:
            sources = sorted({k for _, acc in points for k in acc if k != "mean"})
            for source, c in zip(sources, _colors(len(sources))):  # the same order and colours as the others
                ax.plot([p[0] for p in points], [p[1].get(source, math.nan) for p in points], color=c,
                        linewidth=0.8, alpha=0.7, label=source)
    ax.set_title("held-out accuracy (greedy; sampled dotted)")


def _sampler(ax: Any, runs: list[RunData], labels: list[str]) -> None:
    _per_source(ax, runs, labels, "sampler/weight/")
    ax.set_title("sampling weight per data_source")


def _allocation(ax: Any, runs: list[RunData], labels: list[str]) -> None:
    """One run: a histogram of samples per prompt at every step; several: n min / mean / max per run."""
    if len(runs) == 1:
        rows = [(r["step"], r["alloc/n_hist"]) for r in runs[0].steps() if isinstance(r.get("alloc/n_hist"), list)]
        if rows:
            top = max(max(h) for _, h in rows if h) if any(h for _, h in rows) else 1
            grid = [[sum(1 for n in h if n == k) for _, h in rows] for k in range(top + 1)]
            ax.imshow(grid, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest",
                      extent=(rows[0][0] - 0.5, rows[-1][0] + 0.5, -0.5, top + 0.5))
            ax.set_ylabel("samples per prompt (colour: prompts)")
        ax.set_title("allocation over steps")
        return
    for run, label, color in zip(runs, labels, _colors(len(runs))):
        for key, style in (("alloc/n_min", ":"), ("alloc/n_mean", "-"), ("alloc/n_max", "--")):
            steps, values = series(run.steps(), key)
            if steps:
                ax.plot(steps, values, color=color, linestyle=style, label=f"{key[8:]} · {label}")
    ax.set_title("samples per prompt (min, mean, max)")


def _lengths(ax: Any, runs: list[RunData], labels: list[str]) -> None:
    twin = ax.twinx()
    for run, label, color in zip(runs, labels, _colors(len(runs))):
        _smoothed(ax, *series(run.steps(), "tokens/completion_len_mean"), f"length · {label}", color, "-")
        steps, values = series(run.steps(), "tokens/truncated_frac")
        if steps:
            twin.plot(steps, ema(values, max(1.0, len(steps) / 20)), color=color, linestyle="--", linewidth=1)
    twin.set_ylabel("truncated fraction (dashed)")
    ax.set_ylabel("completion tokens")
    ax.set_title("completion length and truncation")


def _stability(ax: Any, runs: list[RunData], labels: list[str]) -> None:
    keys = ("train/kl_ref", "train/clip_frac", "train/logprob_mismatch_mean", "rollout/staleness_mean")
    colors = dict(zip(keys, _colors(len(keys))))
    named: set[str] = set()
    for i, run in enumerate(runs):
        for key in keys:
            steps, values = series(run.steps(), key)
            if steps and any(v != 0 for v in values):
                name = key.split("/", 1)[1] if key not in named else "_"
                named.add(key)
                _smoothed(ax, steps, values, name, colors[key], STYLES[i % len(STYLES)])
    _style_legend(ax, labels)
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.set_title("KL to reference, clip fraction, vLLM mismatch, staleness")


def _phases(ax: Any, runs: list[RunData], labels: list[str]) -> None:
    """One run: its phases stacked (EMA); several: each run's wall clock per step."""
    if len(runs) == 1:
        records = runs[0].steps()
        overlapped = any("time/wait" in r for r in records)  # off sync: the collect phases ran during earlier steps
        present = [p for p in PHASES if any(f"time/{p}" in r for r in records)
                   and not (overlapped and p in COLLECT_PHASES)]
        if records and present:
            steps = [r["step"] for r in records]
            span = max(1.0, len(steps) / 20)
            stacks = [ema([float(r.get(f"time/{p}", 0.0) or 0.0) for r in records], span) for p in present]
            ax.stackplot(steps, stacks, labels=present, colors=_colors(len(present)), alpha=0.8)
            ax.plot(*_ema_series(records, "time/wall"), color="black", linewidth=1, label="wall clock")
            if overlapped:
                ax.plot(*_ema_series(records, "time/generate"), color="black", linestyle="--", linewidth=1,
                        label="generate (overlapped)")
        ax.set_title("seconds per phase (EMA, stacked)")
        return
    for run, label, color in zip(runs, labels, _colors(len(runs))):
        _smoothed(ax, *series(run.steps(), "time/wall"), label, color, "-")
    ax.set_title("seconds per step (wall clock)")


def _throughput(ax: Any, runs: list[RunData], labels: list[str]) -> None:
    for run, label, color in zip(runs, labels, _colors(len(runs))):
        _smoothed(ax, *series(run.steps(), "perf/tokens_per_s"), label, color, "-")
    ax.set_title("generated tokens per second of step")
