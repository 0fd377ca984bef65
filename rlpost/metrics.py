"""Run outputs for humans and tools: metrics.jsonl, TensorBoard events, phase timers, tables and plots.

Leaves out: W&B and other remote loggers.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class MetricsLog:
    """Append one JSON line per step to metrics.jsonl (and the step's logged completions to samples.jsonl), and
    hand the same to the run's trackers (rlpost/trackers.py: TensorBoard, W&B, MLflow)."""

    def __init__(self, run_dir: Path, loggers: list[str], purge_step: int | None = None,
                 config: dict[str, Any] | None = None) -> None:
        from rlpost.trackers import open_trackers

        self.path = run_dir / "metrics.jsonl"
        self.file = self.path.open("a")
        # on resume, TensorBoard hides the interrupted run's events from purge_step on (they are redone)
        self.trackers = open_trackers(loggers, run_dir, config or {}, purge_step)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """One record: the step, when it was written (unix seconds, JSON only) and the metrics."""
        from rlpost.trackers import finite

        record = {"step": step, "timestamp": round(time.time(), 3), **{k: _plain(v) for k, v in metrics.items()}}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        scalars, lists = finite(record)
        for tracker in self.trackers:
            tracker.log(step, scalars, lists)

    def log_samples(self, step: int, samples: list[dict[str, Any]]) -> None:
        """One samples.jsonl record of the step's logged completions; the trackers get them too (a table)."""
        if not samples:
            return
        rows = [{k: _plain(v) for k, v in s.items()} for s in samples]
        with (self.path.parent / "samples.jsonl").open("a") as f:
            f.write(json.dumps({"step": step, "samples": rows}) + "\n")
        table = "\n".join(sample_rows(rows))
        for tracker in self.trackers:
            tracker.samples(step, rows, table)

    def close(self) -> None:
        self.file.close()
        for tracker in self.trackers:
            tracker.close()


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class PhaseTimer:
    """Wall time per named phase of one step (`time/<phase>` metrics)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[f"time/{name}"] = self.seconds.get(f"time/{name}", 0.0) + time.perf_counter() - start


def accuracy_table(before: dict[str, float], after: dict[str, float]) -> str:
    """A plain-text table of held-out accuracy per data_source, before and after training."""
    names = sorted(set(before) | set(after), key=lambda s: (s == "mean", s))
    lines = [f"{'data_source':<14} {'before':>8} {'after':>8} {'change':>8}"]
    for name in names:
        b, a = before.get(name, float("nan")), after.get(name, float("nan"))
        lines.append(f"{name:<14} {100 * b:>7.1f}% {100 * a:>7.1f}% {100 * (a - b):>+7.1f}")
    return "\n".join(lines)


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (runs have no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_run(metrics_path: Path, out_path: Path, weights_path: Path | None = None) -> None:
    """PNG of reward, per-source training accuracy and phase times over steps; with `weights_path`, also the
    sampling weight per data_source over steps (the curriculum at work) when the steps logged weights."""
    plt = pyplot()
    records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    records = [r for r in records if "reward/mean" in r]
    if not records:
        return
    steps = [r["step"] for r in records]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(steps, [r["reward/mean"] for r in records])
    axes[0].set_title("mean reward")
    for key in sorted(k for k in records[0] if k.startswith("acc/")):
        axes[1].plot(steps, [r.get(key, float("nan")) for r in records], label=key[4:])
    axes[1].set_title("training accuracy per data_source")
    axes[1].legend(fontsize=7)
    for key in sorted(k for k in records[0] if k.startswith("time/")):
        axes[2].plot(steps, [r.get(key, float("nan")) for r in records], label=key[5:])
    axes[2].set_title("seconds per phase")
    axes[2].legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel("step")
    save_figure(fig, out_path)
    keys = sorted({k for r in records for k in r if k.startswith("sampler/weight/")})
    if weights_path is None or not keys:
        return
    fig, ax = plt.subplots(figsize=(8, 4))
    for key in keys:
        ax.plot(steps, [r.get(key, float("nan")) for r in records], label=key.rsplit("/", 1)[1])
    ax.set_xlabel("step")
    ax.set_ylabel("sampling weight")
    ax.set_title("sampling weight per data_source")
    ax.legend(fontsize=7)
    save_figure(fig, weights_path)


def save_figure(fig: Any, path: Path) -> None:
    """Lay out, write as PNG and free the figure."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot().close(fig)


def sample_rows(samples: list[dict[str, Any]], width: int = 60) -> list[str]:
    """Logged completions as markdown table lines: source, prompt, completion, each reward, advantage, tokens."""
    rewards = sorted({k for s in samples for k in s.get("rewards", {})})
    lines = ["| data_source | prompt | completion | answer | " + " | ".join(rewards) + " | advantage | tokens |",
             "|---|---|---|---|" + "---|" * len(rewards) + "---|---|"]
    for s in samples:
        cells = [s.get("data_source", ""), _cell(s.get("prompt", ""), width), _cell(s.get("completion", ""), width),
                 _cell(s.get("answer", ""), width)]
        cells += [_num(s.get("rewards", {}).get(k)) for k in rewards]
        cells += [_num(s.get("advantage")), str(s.get("length", ""))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _cell(text: Any, width: int) -> str:
    flat = str(text).replace("\n", "⏎").replace("|", "\\|")
    return "`" + (flat if len(flat) <= width else flat[: width - 1] + "…") + "`"


def _num(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) else "–"
