"""A run directory, read: its metrics, recipe, held-out evals and logged completions (for `rlpost report`).

A run still in progress may be writing its last line; a resumed run's files are already cut back to its checkpoint
and rewritten, so steps never repeat.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RunData:
    """One run directory, read."""

    name: str
    path: Path
    records: list[dict[str, Any]]
    config: dict[str, Any]  # flattened: "rollout.mode" -> "sync"
    before: dict[str, float] = field(default_factory=dict)  # held-out accuracy before training
    after: dict[str, float] = field(default_factory=dict)  # after training (empty while the run is in progress)
    samples: list[dict[str, Any]] = field(default_factory=list)  # samples.jsonl, one record per logged step

    def evals(self) -> list[tuple[int, dict[str, float]]]:
        """Held-out accuracy over steps: before training (step 0), every eval step, after training (last step)."""
        points = [(0, self.before)] if self.before else []
        points += [(r["step"], {k[5:]: v for k, v in r.items()
                                if k.startswith("eval/") and "/" not in k[5:] and v is not None})
                   for r in self.records if "eval/mean" in r]
        if self.after:
            last = self.records[-1]["step"] if self.records else 0
            points = [p for p in points if p[0] != last] + [(last, self.after)]
        return points

    def steps(self) -> list[dict[str, Any]]:
        """The training steps' records (step 0 holds only the first probe)."""
        return [r for r in self.records if r.get("step", 0) >= 1]


def load_run(path: Path) -> RunData:
    """Read a run directory; a clear error when it is not one."""
    metrics = path / "metrics.jsonl"
    if not metrics.is_file():
        raise FileNotFoundError(f"{path} is not an rlpost run directory (no metrics.jsonl)")
    records = _jsonl(metrics)
    config = flatten(_yaml(path / "config.yaml")) if (path / "config.yaml").is_file() else {}
    evals = json.loads((path / "eval.json").read_text()) if (path / "eval.json").is_file() else {}
    samples = _jsonl(path / "samples.jsonl") if (path / "samples.jsonl").is_file() else []
    return RunData(path.name, path, records, config, evals.get("before", {}), evals.get("after", {}), samples)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a JSONL file (a run in progress may be writing its last one)."""
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _yaml(path: Path) -> dict[str, Any]:
    from omegaconf import OmegaConf

    loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    return {str(k): v for k, v in loaded.items()} if isinstance(loaded, dict) else {}


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one mapping of dotted keys."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out
