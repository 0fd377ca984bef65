"""`run.loggers` (rlpost/trackers.py) offline: the scalars of every step reach TensorBoard, W&B (WANDB_MODE=offline,
read back from its run file) and MLflow (a local file store), equal to what metrics.jsonl holds; logged
completions arrive as a table; an unknown or uninstalled logger is a clear recipe error."""

from __future__ import annotations

import glob
import json
import math
import struct
from pathlib import Path

import pytest

from rlpost.config import RecipeError
from rlpost.metrics import MetricsLog
from rlpost.recipes import load_config
from rlpost.trackers import check_loggers

STEPS = [{"reward/mean": 0.25 * s, "acc/sum3": 0.5, "train/loss": -0.1 * s, "eval/mean": float("nan"),
          "alloc/n_hist": [8, 8, 4]} for s in (1, 2, 3)]
SAMPLES = [{"data_source": "sum3", "prompt": "12=", "completion": "3", "rewards": {"exact_match": 1.0},
            "reward": 1.0, "advantage": 0.5, "length": 2}]


def _write(run_dir: Path, loggers: list[str]) -> dict[int, dict]:
    log = MetricsLog(run_dir, loggers, config={"learner.lr": 5e-5, "rollout.mode": "sync"})
    for step, metrics in enumerate(STEPS, start=1):
        if step == 2:
            log.log_samples(step, SAMPLES)  # as the run loop does: a step's completions, then its metrics
        log.log(step, metrics)
    log.close()
    return {r["step"]: r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}


def _expected(records: dict[int, dict]) -> dict[int, dict[str, float]]:
    return {step: {k: v for k, v in r.items() if isinstance(v, float) and math.isfinite(v) and k != "timestamp"}
            for step, r in records.items()}


def _wandb_history(run_dir: Path) -> list[dict]:
    """The history records of an offline W&B run file (W&B's leveldb-style log of protobuf Records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))
    data, pos, block, payloads, buf = Path(path).read_bytes(), 7, 32768, [], b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos: pos + 7])
        if kind == 0 and length == 0:
            break
        buf, pos = buf + data[pos + 7: pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            payloads.append(buf)
            buf = b""
    history = []
    for payload in payloads:
        record = pb.Record()
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") == "history":
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in record.history.item})
    return history


def test_wandb_offline_gets_every_finite_scalar_of_every_step(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    expected = _expected(_write(tmp_path, ["wandb"]))
    history = _wandb_history(tmp_path)
    got = {h["_step"]: {k: v for k, v in h.items() if k in expected[h["_step"]]} for h in history
           if "reward/mean" in h}
    assert got == expected
    tables = [h for h in history if h.get("samples/_type") == "table-file"]  # the completions, at their step
    assert [(h["_step"], h["samples/nrows"]) for h in tables] == [(2, len(SAMPLES))]
    assert not any("eval/mean" in h for h in history)  # NaN is not sent


def test_mlflow_file_store_gets_every_finite_scalar_and_the_recipe(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    expected = _expected(_write(tmp_path, ["mlflow"]))
    (run,) = [Path(p).parent for p in glob.glob(str(tmp_path / "mlruns" / "*" / "*" / "meta.yaml"))
              if (Path(p).parent / "metrics").is_dir()]
    got: dict[int, dict[str, float]] = {}
    for path in (run / "metrics").rglob("*"):
        if path.is_file():
            for line in path.read_text().splitlines():
                _, value, step = line.split()
                got.setdefault(int(step), {})[str(path.relative_to(run / "metrics"))] = float(value)
    assert got == expected
    assert (run / "params" / "rollout.mode").read_text() == "sync"
    (table,) = list((run / "artifacts" / "samples").iterdir())
    assert json.loads(table.read_text())["samples"][0]["completion"] == "3"


def test_tensorboard_gets_the_scalars_and_the_samples_table(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    expected = _expected(_write(tmp_path, ["tensorboard"]))
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    got = {step: {key: events.Scalars(key)[step - 1].value for key in values} for step, values in expected.items()}
    assert {s: {k: pytest.approx(v) for k, v in vals.items()} for s, vals in expected.items()} == got
    assert "samples/text_summary" in events.Tags()["tensors"]


def test_unknown_and_missing_loggers_are_recipe_errors(monkeypatch):
    with pytest.raises(RecipeError, match=r"run.loggers.*'neptune'.*allowed: tensorboard, wandb, mlflow"):
        load_config("quickstart", ["run.loggers=[tensorboard,neptune]"])
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(RecipeError, match=r"'wandb', but the wandb package is not installed: pip install"):
        check_loggers(["tensorboard", "wandb"])
