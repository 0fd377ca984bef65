"""Experiment trackers that receive a run's metrics besides metrics.jsonl: TensorBoard, Weights & Biases, MLflow
(`run.loggers`). Each gets every finite scalar of every step, the step's logged completions, and (W&B, MLflow) the
resolved recipe as the run's config or parameters.

wandb and mlflow are optional (`pip install "rlpost[track]"`); naming one that is not installed stops the run
before any actor starts (`check_loggers`). Where the data goes is each tool's own setting: W&B's `WANDB_MODE`
(`offline` writes under run_dir/wandb), `WANDB_PROJECT` (default "rlpost") and API key; MLflow's
`MLFLOW_TRACKING_URI` (default: a file store in run_dir/mlruns) and `MLFLOW_EXPERIMENT_NAME` (default "rlpost").
A resumed run continues the same W&B run (its id comes from the run directory's name); W&B keeps the steps it had,
so the redone steps after the checkpoint are logged only by the other trackers.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from rlpost.config import RecipeError

PACKAGES = {"wandb": "wandb", "mlflow": "mlflow"}  # logger name -> the module it needs


class Tracker(Protocol):
    def log(self, step: int, scalars: dict[str, float], lists: dict[str, list[float]]) -> None: ...

    def samples(self, step: int, rows: list[dict[str, Any]], table: str) -> None: ...

    def close(self) -> None: ...


def check_loggers(names: list[str]) -> None:
    """A clear error for a logger this environment cannot run."""
    for name in names:
        module = PACKAGES.get(name)
        if module and importlib.util.find_spec(module) is None:
            raise RecipeError(f"key 'run.loggers' names {name!r}, but the {module} package is not installed: "
                              f"pip install \"rlpost[track]\" (or {module}), or drop it from run.loggers")


def open_trackers(names: list[str], run_dir: Path, config: dict[str, Any],
                  purge_step: int | None = None) -> list[Tracker]:
    """One tracker per name, in order (TensorBoard's events purge the steps a resumed run redoes)."""
    makers: dict[str, Callable[[], Tracker]] = {
        "tensorboard": lambda: TensorBoardTracker(run_dir, purge_step),
        "wandb": lambda: WandbTracker(run_dir, config), "mlflow": lambda: MlflowTracker(run_dir, config)}
    return [makers[name]() for name in dict.fromkeys(names)]


def finite(metrics: dict[str, Any]) -> tuple[dict[str, float], dict[str, list[float]]]:
    """The finite scalars and the non-empty numeric lists of a metrics record (step and timestamp left out)."""
    scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
               and math.isfinite(v) and k not in ("step", "timestamp")}
    lists = {k: [float(x) for x in v] for k, v in metrics.items() if isinstance(v, list) and v}
    return scalars, lists


class TensorBoardTracker:
    """Scalars, lists as histograms, completions as a text table, in run_dir/tb."""

    def __init__(self, run_dir: Path, purge_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=purge_step)

    def log(self, step: int, scalars: dict[str, float], lists: dict[str, list[float]]) -> None:
        import numpy as np

        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)
        for key, values in lists.items():
            self.writer.add_histogram(key, np.asarray(values, dtype=np.float32), step)

    def samples(self, step: int, rows: list[dict[str, Any]], table: str) -> None:
        self.writer.add_text("samples", table, step)

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """A W&B run named after the run directory, with the recipe as its config; completions as a wandb.Table."""

    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        import wandb

        self.wandb = wandb
        run_id = hashlib.blake2b(run_dir.name.encode(), digest_size=8).hexdigest()
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "rlpost"), name=run_dir.name, id=run_id,
                              dir=str(run_dir), config=config, resume="allow")

    def log(self, step: int, scalars: dict[str, float], lists: dict[str, list[float]]) -> None:
        self.run.log({**scalars, **{k: self.wandb.Histogram(v) for k, v in lists.items()}}, step=step)

    def samples(self, step: int, rows: list[dict[str, Any]], table: str) -> None:
        names = sorted({k for r in rows for k in r if not isinstance(r[k], dict)})
        columns: list[str | int] = list(names)
        data = [[r.get(c) for c in names] for r in rows]
        self.run.log({"samples": self.wandb.Table(columns=columns, data=data)}, step=step)

    def close(self) -> None:
        self.run.finish()


class MlflowTracker:
    """An MLflow run named after the run directory, with the recipe as parameters; completions as a JSON artifact."""

    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        import mlflow

        self.mlflow = mlflow
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks file stores to opt in
            mlflow.set_tracking_uri((run_dir / "mlruns").resolve().as_uri())
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "rlpost"))
        self.run = mlflow.start_run(run_name=run_dir.name)
        params = {k: str(v)[:500] for k, v in config.items()}  # MLflow caps a parameter's value
        keys = sorted(params)
        for i in range(0, len(keys), 100):  # and a batch at 100
            mlflow.log_params({k: params[k] for k in keys[i: i + 100]})

    def log(self, step: int, scalars: dict[str, float], lists: dict[str, list[float]]) -> None:
        self.mlflow.log_metrics(scalars, step=step)

    def samples(self, step: int, rows: list[dict[str, Any]], table: str) -> None:
        self.mlflow.log_dict({"step": step, "samples": rows}, f"samples/step_{step:06d}.json")

    def close(self) -> None:
        self.mlflow.end_run()
