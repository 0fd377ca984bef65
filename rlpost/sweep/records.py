"""What a sweep trial leaves in its run directory besides a normal run's files: `status.json` (how the trial ended:
running, finished, stopped or failed, with its values, last step and metric) and `curve.jsonl` (one [step, value of
sweep.metric] per report). Read back by the summary and by a trial restarted after the sweep was restored."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rlpost.atomic import write_text_atomic

STATUS = "status.json"
CURVE = "curve.jsonl"


def ended_status(trials_dir: Path, name: str) -> dict[str, Any] | None:
    """The status of the newest run directory of trial `name` when the trial has ended (finished or stopped)."""
    for run_dir in sorted(trials_dir.glob(f"{name}-*"), reverse=True):
        status = read_status(run_dir)
        if status is not None:
            return status if status["status"] in ("finished", "stopped") else None
    return None


def read_status(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / STATUS).read_text())
    except (OSError, ValueError):
        return None


def read_curve(run_dir: Path) -> list[tuple[int, float]]:
    """The trial's reported (step, sweep.metric) points, in order (a resumed trial's repeats keep the latest)."""
    points: dict[int, float] = {}
    try:
        for line in (run_dir / CURVE).read_text().splitlines():
            if line.strip():
                step, value = json.loads(line)
                points[int(step)] = float(value)
    except OSError:
        pass
    return sorted(points.items())


def append_curve(run_dir: Path, step: int, value: float) -> None:
    with open(run_dir / CURVE, "a") as f:
        f.write(json.dumps([step, value]) + "\n")


def write_status(run_dir: Path, **fields: Any) -> None:
    write_text_atomic(run_dir / STATUS, json.dumps({**fields, "time": time.strftime("%Y-%m-%d %H:%M:%S")},
                                                   indent=2))


def check_same_sweep(sweep_dir: Path, spec: dict[str, Any]) -> None:
    """Record what the sweep in `sweep_dir` runs (recipe, overrides, search space) at its start; on a rerun, refuse
    another one, naming what differs: a restored Tune experiment keeps its own space and would ignore the new."""
    from rlpost.config import RecipeError

    path = sweep_dir / "sweep.json"
    if not path.exists():
        path.write_text(json.dumps(spec, indent=2))
        return
    old = json.loads(path.read_text())
    differ = [key for key in sorted(set(old) | set(spec)) if old.get(key) != spec.get(key)]
    if differ:
        raise RecipeError(f"{sweep_dir} holds a sweep with another {', '.join(differ)} ({path}); rerun the same "
                          "command to restore it, or give another --out")
