"""Checkpoint files: atomic writes that an interruption cannot corrupt, keep-last-N, finding what to resume, and
refusing a run written by another recipe. The learner is a stand-in that writes files (no DeepSpeed here; the real
save/load is exercised by tests/e2e/test_resume.py)."""

import json

import pytest

from rlpost import checkpoint as ckpt
from rlpost.recipes import load_config, to_yaml


class FileLearner:
    """Writes what a learner would, and can fail half-way through like a crash during the write."""

    def __init__(self, fail_at_hf: bool = False) -> None:
        self.fail_at_hf = fail_at_hf

    def save_state(self, path: str) -> None:
        from pathlib import Path

        Path(path).mkdir(parents=True)
        (Path(path) / "rank0.pt").write_text("state")

    def save_hf(self, path: str, merged: bool = False) -> None:
        if self.fail_at_hf:
            raise KeyboardInterrupt("interrupted while writing weights")
        from pathlib import Path

        Path(path).mkdir(parents=True)


def _run_dir(tmp_path, overrides=()):
    config = load_config("quickstart", [f"run.output_dir={tmp_path}", "run.name=r", *overrides])
    run_dir = tmp_path / "r-20260101-000000"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(to_yaml(config))
    return config, run_dir


def test_interrupted_write_leaves_the_previous_checkpoint_to_resume(tmp_path):
    config, run_dir = _run_dir(tmp_path)
    ckpt.save(run_dir, 2, FileLearner(), {"sampler": {"kind": "uniform"}}, keep_last=2)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save(run_dir, 4, FileLearner(fail_at_hf=True), {}, keep_last=2)
    assert (run_dir / "checkpoints" / "step_000004.tmp").is_dir()  # the half-written one is left aside
    found_dir, found = ckpt.find_resume(load_config("quickstart", [f"run.output_dir={tmp_path}", "run.name=r",
                                                                   "resume=auto"]))
    assert (found_dir, found.name) == (run_dir, "step_000002")
    assert ckpt.load_driver_state(found) == {"step": 2, "sampler": {"kind": "uniform"}}
    ckpt.save(run_dir, 4, FileLearner(), {}, keep_last=2)  # the next save replaces the leftover
    assert [p.name for p in ckpt.complete_checkpoints(run_dir)] == ["step_000002", "step_000004"]


def test_keep_last_and_unmarked_directories(tmp_path):
    _, run_dir = _run_dir(tmp_path)
    for step in (1, 2, 3):
        ckpt.save(run_dir, step, FileLearner(), {}, keep_last=2)
    assert [p.name for p in ckpt.complete_checkpoints(run_dir)] == ["step_000002", "step_000003"]
    (run_dir / "checkpoints" / "step_000009").mkdir()  # no COMPLETE marker: a write killed before the rename
    assert ckpt.complete_checkpoints(run_dir)[-1].name == "step_000003"


def test_resume_refuses_another_recipe_and_allows_more_steps(tmp_path):
    _, run_dir = _run_dir(tmp_path)
    ckpt.check_same_recipe(run_dir, load_config("quickstart", [f"run.output_dir={tmp_path}", "run.name=r",
                                                                "run.steps=900", "resume=auto"]))
    other = load_config("quickstart", [f"run.output_dir={tmp_path}", "run.name=r", "learner.lr=0.1"])
    with pytest.raises(ckpt.ResumeError, match="different recipe.*learner.lr: 5e-05 in the checkpoint's run, 0.1 now"):
        ckpt.check_same_recipe(run_dir, other)


def test_nothing_to_resume_starts_fresh_with_auto_and_is_an_error_with_a_path(tmp_path):
    (tmp_path / "r-20260101-000000" / "checkpoints" / "step_000002.tmp").mkdir(parents=True)  # died mid-write
    assert ckpt.find_resume(load_config("quickstart", [f"run.output_dir={tmp_path}", "run.name=r",
                                                       "resume=auto"])) is None
    with pytest.raises(ckpt.ResumeError, match="neither a complete checkpoint nor a run directory"):
        ckpt.find_resume(load_config("quickstart", [f"checkpoint.resume={tmp_path}"]))


def test_truncate_metrics_drops_steps_after_the_checkpoint(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "x": s}) + "\n" for s in range(5)))
    ckpt.truncate_metrics(tmp_path, 2)
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2]
