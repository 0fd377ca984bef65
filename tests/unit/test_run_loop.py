"""The driver's step loop (rlpost/app/run.py::_train_loop) with stand-ins for the trainer and the metrics log: the
`driver.step_done` fault point comes right after each step's metrics are written, which is what lets the
SIGKILL-and-resume test stop a run at a known step on any machine."""

from __future__ import annotations

from pathlib import Path

from rlpost.recipes import load_config

REPO = Path(__file__).resolve().parents[2]


class _Trainer:
    samples: list = []

    def step(self, step: int) -> dict[str, float]:
        return {"reward/mean": 0.5, "time/step": 0.1}


class _Log:
    def __init__(self) -> None:
        self.steps: list[int] = []

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.steps.append(step)

    def log_samples(self, step: int, samples: list) -> None:
        pass


def test_step_done_fault_point_follows_each_steps_metrics(monkeypatch, capsys):
    import actors.runtime
    from rlpost.app.run import _train_loop

    config = load_config("quickstart", ["run.steps=3", "run.progress_bar=false", "checkpoint.every=0",
                                        "run.eval_every=0"])
    log, seen = _Log(), []
    monkeypatch.setattr(actors.runtime, "injected_fault", lambda point: seen.append((point, list(log.steps))))
    assert _train_loop(config, _Trainer(), log, [], 0, lambda step: None)[0] == 3
    assert seen == [("driver.step_done", [1]), ("driver.step_done", [1, 2]), ("driver.step_done", [1, 2, 3])]
    assert "step    3 |" in capsys.readouterr().out


def test_step_done_exit_stops_the_driver_at_the_nth_step():
    """The real hook, in a child process: `exit@2` ends it right after step 2 is logged, never later."""
    import os
    import subprocess
    import sys

    script = (
        "from rlpost.recipes import load_config\n"
        "from rlpost.app.run import _train_loop\n"
        "from tests.unit.test_run_loop import _Log, _Trainer\n"
        "config = load_config('quickstart', ['run.steps=5', 'run.progress_bar=false', 'checkpoint.every=0'])\n"
        "class Log(_Log):\n"
        "    def log(self, step, metrics):\n"
        "        print('logged', step, flush=True)\n"
        "_train_loop(config, _Trainer(), Log(), [], 0, lambda step: None)\n")
    env = {**os.environ, "RLPOST_INJECT_FAULT": "driver.step_done:exit@2"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120,
                            cwd=REPO)
    assert result.returncode == 17, result.stderr[-2000:]
    assert [line for line in result.stdout.splitlines() if line.startswith("logged")] == ["logged 1", "logged 2"]
