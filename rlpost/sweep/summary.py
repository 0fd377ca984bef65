"""A sweep's summary, read back from its trials' run directories: a table (values, how each ended, steps run, the
metric's last value), the best configuration among finished trials, the compute used and saved by stopping, and a
plot of every trial's held-out curve. Written as summary.md, summary.json and curves.png in the sweep directory.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rlpost.sweep.records import read_curve, read_status


@dataclass
class TrialRow:
    name: str
    run_dir: str
    values: dict[str, Any]
    status: str  # finished | stopped | failed | running (never ended: the sweep was killed)
    steps_run: int
    last: float | None  # the metric at the last reported eval (the final value for a finished trial)
    curve: list[tuple[int, float]]
    train_seconds: float


def trial_rows(trials_dir: Path) -> list[TrialRow]:
    """One row per trial: its newest run directory (a trial restarted without a checkpoint has older ones)."""
    newest: dict[str, Path] = {}
    for run_dir in sorted(trials_dir.glob("trial_*-*")):
        if run_dir.is_dir():
            newest[run_dir.name.split("-")[0]] = run_dir  # trial_<tune id>-<time>[-n]
    rows = []
    for name, run_dir in sorted(newest.items()):
        status = read_status(run_dir) or {}
        curve = read_curve(run_dir)
        rows.append(TrialRow(name, str(run_dir), status.get("values", {}), status.get("status", "running"),
                             int(status.get("step", curve[-1][0] if curve else 0)),
                             curve[-1][1] if curve else None, curve, float(status.get("train_seconds", 0.0))))
    return rows


def best_trial(rows: list[TrialRow]) -> TrialRow | None:
    """The finished trial with the highest final metric (a stopped trial cannot be chosen: it never reached the end)."""
    done = [r for r in rows if r.status == "finished" and r.last is not None]
    return max(done, key=lambda r: r.last if r.last is not None else float("-inf")) if done else None


def summarise(sweep_dir: Path, metric: str, scheduler: str, steps: int, wall_seconds: float,
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write summary.md, summary.json and curves.png; returns what summary.json holds (with `extra`, e.g. the
    settings the LC-PFN extrapolator was trained with)."""
    rows = trial_rows(sweep_dir / "trials")
    best = best_trial(rows)
    used, full = sum(r.steps_run for r in rows), steps * len(rows)
    data = {"metric": metric, "scheduler": scheduler, "steps_per_trial": steps, "trials": [asdict(r) for r in rows],
            "best": asdict(best) if best else None, "steps_run": used, "steps_if_unstopped": full,
            "compute_saved": 1 - used / full if full else 0.0, "wall_seconds": round(wall_seconds, 1),
            "train_seconds": round(sum(r.train_seconds for r in rows), 1),
            "counts": {s: sum(r.status == s for r in rows) for s in ("finished", "stopped", "failed", "running")},
            **(extra or {})}
    (sweep_dir / "summary.json").write_text(json.dumps(data, indent=2))
    (sweep_dir / "summary.md").write_text(summary_markdown(data))
    plot_curves(rows, best, metric, sweep_dir / "curves.png")
    return data


def summary_markdown(data: dict[str, Any]) -> str:
    rows, best = data["trials"], data["best"]
    keys = sorted({k for r in rows for k in r["values"]})
    head = ["trial", *keys, "status", "steps", f"{data['metric']} (last)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        mark = " **best**" if best and r["name"] == best["name"] else ""
        last = "" if r["last"] is None else f"{r['last']:.3f}"
        lines.append("| " + " | ".join([r["name"] + mark, *(_fmt(r["values"].get(k)) for k in keys), r["status"],
                                        str(r["steps_run"]), last]) + " |")
    counts = ", ".join(f"{n} {s}" for s, n in data["counts"].items() if n)
    chosen = (f"best: {best['name']} ({', '.join(f'{k}={_fmt(v)}' for k, v in best['values'].items())}), "
              f"{data['metric']} {best['last']:.3f}" if best else "best: none (no trial finished)")
    return (f"# Sweep ({data['scheduler']} scheduler)\n\n{len(rows)} trials: {counts}. {chosen}.\n\n"
            f"Compute: {data['steps_run']} training steps of {data['steps_if_unstopped']} without stopping "
            f"({100 * data['compute_saved']:.0f}% saved); {data['train_seconds']:.0f} s training in trials, "
            f"{data['wall_seconds']:.0f} s wall" + (f" after {data['setup_seconds']:.0f} s of set-up"
                                                    if "setup_seconds" in data else "")
            + ".\n\n" + "\n".join(lines) + "\n")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "" if value is None else str(value)


def plot_curves(rows: list[TrialRow], best: TrialRow | None, metric: str, out: Path) -> None:
    """Every trial's curve; stopped trials dashed and ending in an x, the best one thick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in rows:
        if not r.curve:
            continue
        xs, ys = zip(*r.curve)
        is_best = best is not None and r.name == best.name
        style = "--" if r.status == "stopped" else "-"
        line, = ax.plot(xs, ys, style, lw=2.5 if is_best else 1.2, label=r.name + (" (best)" if is_best else ""))
        if r.status == "stopped":
            ax.plot(xs[-1], ys[-1], "x", color=line.get_color(), ms=8)
    ax.set_xlabel("training step")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    if len(rows) <= 12:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
