"""`rlpost report RUN_DIR [RUN_DIR ...]`: what a user looks at after (and during) training, for one run or several.

A run directory holds `config.yaml`, `metrics.jsonl` (one record per step; `eval/*` on eval steps), `eval.json`
(held-out accuracy before and after) and `samples.jsonl` (sample completions every `run.log_samples_every` steps).
Any of the last three may be missing or short: a run still in progress, or resumed, reports what it has (a resumed
run's metrics file is already cut back to its checkpoint and rewritten, so steps never repeat). The report is one
PNG dashboard (rlpost/dashboard.py) and one markdown summary: the final numbers per run, the recipe keys in which
the runs differ, and the latest sample completions of each run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rlpost.metrics import sample_rows
from rlpost.rundir import RunData, load_run

# keys that differ between any two runs without being a difference of recipe
IGNORED_KEYS = ("run.name", "run.output_dir", "run.progress_bar", "run.tensorboard", "run.loggers",
                "checkpoint.resume")


def differing_keys(runs: list[RunData]) -> dict[str, list[Any]]:
    """The recipe keys whose values differ between the runs, each with its value per run (None: not set)."""
    keys = sorted({k for r in runs for k in r.config} - set(IGNORED_KEYS))
    return {k: [r.config.get(k) for r in runs] for k in keys if len({json.dumps(r.config.get(k)) for r in runs}) > 1}


def run_labels(runs: list[RunData], diffs: dict[str, list[Any]]) -> list[str]:
    """A legend label per run: its directory name, plus the differing values when there are few."""
    if not diffs or len(diffs) > 3:
        return [r.name for r in runs]
    return [f"{r.name} ({', '.join(f'{k}={v[i]}' for k, v in diffs.items())})" for i, r in enumerate(runs)]


def final_row(run: RunData) -> dict[str, Any]:
    """The headline numbers of a run: steps, held-out accuracy before/after (or the latest eval), reward, speed."""
    steps = run.steps()
    evals = run.evals()
    latest = evals[-1][1] if evals else {}
    wall = sum(float(r.get("time/wall", r.get("time/step", 0.0)) or 0.0) for r in steps)
    tokens = sum(float(r.get("tokens/generated", 0.0) or 0.0) for r in steps)
    tail = steps[-max(1, len(steps) // 10):] if steps else []
    return {"steps": steps[-1]["step"] if steps else 0, "done": bool(run.after),
            "held_out_before": run.before.get("mean", math.nan), "held_out_latest": latest.get("mean", math.nan),
            "reward_last10pct": _mean([r.get("reward/mean") for r in tail]),
            "train_s": wall, "tokens_per_s": tokens / wall if wall else math.nan,
            "per_source": {k: v for k, v in latest.items() if k != "mean"}}


def _mean(values: list[Any]) -> float:
    kept = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(kept) / len(kept) if kept else math.nan


def markdown(runs: list[RunData], diffs: dict[str, list[Any]], figure: str) -> str:
    """The summary: final table per run, the differing keys, the latest samples of each run."""
    rows = [final_row(r) for r in runs]
    lines = ["# rlpost report", "", f"![dashboard]({figure})", "", "## Runs", "",
             "| run | steps | state | held-out before | held-out latest | change | reward (last 10%) | train s "
             "| tokens/s |", "|---|---|---|---|---|---|---|---|---|"]
    for run, row in zip(runs, rows):
        lines.append(f"| {run.name} | {row['steps']} | {'done' if row['done'] else 'in progress'} "
                     f"| {_pct(row['held_out_before'])} | {_pct(row['held_out_latest'])} "
                     f"| {_points(row['held_out_latest'] - row['held_out_before'])} | {row['reward_last10pct']:.3f} "
                     f"| {row['train_s']:.0f} | {row['tokens_per_s']:,.0f} |")
    sources = sorted({s for row in rows for s in row["per_source"]})
    if sources:
        lines += ["", "Held-out accuracy per data_source (latest eval):", "",
                  "| run | " + " | ".join(sources) + " |", "|---|" + "---|" * len(sources)]
        lines += [f"| {run.name} | " + " | ".join(_pct(row["per_source"].get(s, math.nan)) for s in sources) + " |"
                  for run, row in zip(runs, rows)]
    lines += ["", "## Recipe keys that differ", ""]
    if len(runs) < 2:
        lines.append("(one run)")
    elif not diffs:
        lines.append("(none: the runs share every recipe key)")
    else:
        lines += ["| key | " + " | ".join(r.name for r in runs) + " |", "|---|" + "---|" * len(runs)]
        lines += [f"| `{k}` | " + " | ".join(f"`{v}`" for v in values) + " |" for k, values in diffs.items()]
    for run in runs:
        lines += sample_table(run)
    return "\n".join(lines) + "\n"


def sample_table(run: RunData, width: int = 60) -> list[str]:
    """The run's latest logged sample completions as a markdown table (none logged: a line saying so)."""
    if not run.samples:
        return ["", f"## Samples of {run.name}", "", "(no samples.jsonl: set run.log_samples_every)"]
    latest = run.samples[-1]
    return ["", f"## Samples of {run.name} (step {latest['step']})", "", *sample_rows(latest["samples"], width)]


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%" if math.isfinite(value) else "–"


def _points(value: float) -> str:
    return f"{100 * value:+.1f}" if math.isfinite(value) else "–"


def report(paths: list[Path], out: Path | None = None, dpi: int = 80) -> tuple[Path, Path]:
    """Read the runs, write `report.png` and `report.md` into `out` (default: the first run's directory)."""
    from rlpost.dashboard import draw_dashboard

    runs = [load_run(p) for p in paths]
    out = out or paths[0]
    out.mkdir(parents=True, exist_ok=True)
    diffs = differing_keys(runs)
    png, md = out / "report.png", out / "report.md"
    draw_dashboard(runs, run_labels(runs, diffs), png, dpi)
    md.write_text(markdown(runs, diffs, png.name))
    return png, md
