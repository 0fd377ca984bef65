"""Checkpoints a run can resume from, written so that a crash at any moment leaves the previous one usable.

A checkpoint is run_dir/checkpoints/step_NNNNNN/ holding `learner/` (DeepSpeed state of every rank, optimizer
included), `hf/` (Hugging Face weights) and `driver.json` (step, sampler and allocator state, the training prompts
after filtering, the before-training eval). It is written under a `.tmp` name, completed with a `COMPLETE` marker,
and renamed into place; only then are checkpoints beyond checkpoint.keep_last deleted. Resuming picks the newest
directory with the marker, so a half-written one is never read. The learner ranks write into the same directory:
on several machines run_dir must be on a shared filesystem.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from rlpost.atomic import write_text_atomic
from rlpost.config import RootConfig
from rlpost.recipes import to_yaml

MARKER = "COMPLETE"
# Keys that may differ between a run and its resumption: how long to train, where output goes, how it is shown.
RESUMABLE_CHANGES = ("run.steps", "run.output_dir", "run.name", "run.max_train_minutes", "run.progress_bar",
                     "run.eval_every", "checkpoint.every", "checkpoint.keep_last", "checkpoint.on_sigterm",
                     "checkpoint.stop_grace_s",
                     "checkpoint.resume", "resources.call_timeout_s", "resources.placement_timeout_s",
                     "resources.address", "run.loggers", "run.tensorboard", "run.log_samples_every",
                     "run.log_samples_per_source")


class ResumeError(ValueError):
    """No checkpoint to resume from, or one written by a different recipe."""


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step_{step:06d}"


def save(run_dir: Path, step: int, learner: Any, driver_state: dict[str, Any], keep_last: int,
         merged: bool = False) -> Path:
    """Write the checkpoint of `step` atomically (see the module docstring) and prune old ones; `merged`: a LoRA
    run's merged model too."""
    final = checkpoint_dir(run_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    learner.save_state(str(tmp / "learner"))
    learner.save_hf(str(tmp / "hf"), merged)
    (tmp / "driver.json").write_text(json.dumps({"step": step, **driver_state}))
    (tmp / MARKER).write_text(str(step))
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in complete_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _fsync_dir(path: Path) -> None:
    for file in (path / "driver.json", path / MARKER):
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (directories being written are ignored)."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and not p.name.endswith(".tmp") and (p / MARKER).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("_")[-1]))


def find_resume(config: RootConfig) -> tuple[Path, Path] | None:
    """(run directory, checkpoint) named by checkpoint.resume: 'auto', a run directory, or a checkpoint. 'auto'
    with nothing to resume gives None (start fresh), so one command serves a job's first start and its restarts;
    a path with no complete checkpoint is an error."""
    spec = config.checkpoint.resume
    if spec == "auto":
        runs = sorted(Path(config.run.output_dir).glob(f"{config.run.name}-*"), key=lambda p: p.stat().st_mtime)
        for run_dir in reversed(runs):
            done = complete_checkpoints(run_dir)
            if done:
                return run_dir, done[-1]
        return None
    path = Path(spec)
    if (path / MARKER).is_file():
        return path.parent.parent, path
    done = complete_checkpoints(path)
    if not done:
        raise ResumeError(f"checkpoint.resume={spec!r}: neither a complete checkpoint nor a run directory with one")
    return path, done[-1]


def check_same_recipe(run_dir: Path, config: RootConfig) -> None:
    """Refuse to resume a run written by another recipe: every key must match except those in RESUMABLE_CHANGES."""
    from omegaconf import OmegaConf

    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        raise ResumeError(f"{run_dir}: no config.yaml, so not a run directory rlpost wrote")
    saved = _flat(OmegaConf.to_container(OmegaConf.create(saved_path.read_text())))
    current = _flat(OmegaConf.to_container(OmegaConf.create(to_yaml(config))))
    differ = sorted(k for k in set(saved) | set(current)
                    if saved.get(k) != current.get(k) and k not in RESUMABLE_CHANGES)
    if differ:
        shown = "; ".join(f"{k}: {saved.get(k)!r} in the checkpoint's run, {current.get(k)!r} now" for k in differ[:5])
        raise ResumeError(f"cannot resume {run_dir}: it was written by a different recipe ({shown}"
                          f"{'; ...' if len(differ) > 5 else ''}). Start fresh, or resume with the same recipe.")


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}."))
    return out


def load_driver_state(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / "driver.json").read_text())


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop the metric and sample lines of steps after `step` (logged by the interrupted run, about to be redone);
    a line the kill cut short is dropped too."""
    for name in ("metrics.jsonl", "samples.jsonl"):
        path = run_dir / name
        if not path.is_file():
            continue
        kept = [line for line in path.read_text().splitlines() if _step_of(line) <= step]
        write_text_atomic(path, "".join(line + "\n" for line in kept))


def _step_of(line: str) -> float:
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return float("inf")
