"""The shipped two-node recipe (the quickstart with vLLM and the learner pinned to different nodes) submitted with
`rlpost submit` (`ray job submit`) to a real two-node local Ray cluster: `ray start --head` plus a second node joined
with `ray start --address`, each labelled with a custom resource."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO, RLPOST

RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def two_node_cluster():
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    port, dashboard = _free_port(), _free_port()
    temp = Path("/tmp") / f"rlpost-ray-{os.getpid()}"  # short: Ray's socket paths have a length limit
    head = [RAY, "start", "--head", f"--port={port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
            "--include-dashboard=true", "--num-cpus=3", '--resources={"rollout_node": 1}', f"--temp-dir={temp}",
            "--disable-usage-stats"]
    worker = [RAY, "start", f"--address=127.0.0.1:{port}", "--num-cpus=3", '--resources={"learner_node": 2}',
              "--disable-usage-stats"]
    try:
        subprocess.run(head, check=True, env=env, capture_output=True, timeout=180)
        subprocess.run(worker, check=True, env=env, capture_output=True, timeout=180)
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_two_node_recipe_through_rlpost_submit(two_node_cluster, tmp_path):
    address, env = two_node_cluster
    out = tmp_path / "runs"
    submit = [RLPOST, "submit", "two_node", "run.steps=2", "data.n_eval_per_source=8", "algorithm.prompts_per_step=8",
              "run.progress_bar=false", f"run.output_dir={out}", f"--address={address}", f"--working-dir={REPO}"]
    deadline = time.monotonic() + 120
    while True:  # the head's job agent registers with the dashboard a little after `ray start` returns
        result = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=900, cwd=REPO)
        if "No available agent to submit job" not in result.stderr + result.stdout or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert result.returncode == 0 and "succeeded" in result.stdout, result.stdout[-4000:] + result.stderr[-2000:]
    (run_dir,) = list(out.iterdir())
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps if "reward/mean" in r] == [1, 2]
    assert (run_dir / "final" / "model.safetensors").is_file()
    placement = json.loads((run_dir / "placement.json").read_text())
    assert len(placement["rollout"]) == 1 and len(placement["learner"]) == 2
    assert not set(placement["rollout"]) & set(placement["learner"]), placement  # vLLM and DeepSpeed apart
    assert len({*placement["rollout"], *placement["learner"]}) == 2 and "placement: rollout on node" in result.stdout


def test_ray_job_stop_checkpoints_the_run(two_node_cluster, tmp_path):
    """`ray job stop` on a submitted run: SIGTERM reaches the driver, the step in flight finishes, a checkpoint is
    written and the job ends stopped. (`rlpost submit` also raises Ray's 3 s wait before SIGKILL to
    checkpoint.stop_grace_s; this tiny model's step and checkpoint fit in 3 s, so the test does not rely on it.)"""
    address, env = two_node_cluster
    out = tmp_path / "runs"
    submit = [RLPOST, "submit", "two_node", "run.steps=50", "data.n_eval_per_source=8", "run.progress_bar=false",
              f"run.output_dir={out}", f"--address={address}", f"--working-dir={REPO}", "--no-wait"]
    deadline = time.monotonic() + 120
    while True:
        result = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
        if "No available agent to submit job" not in result.stderr + result.stdout or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    (job,) = set(re.findall(r"raysubmit_\w+", result.stdout + result.stderr))
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # stop once step 1 is out
        metrics = list(out.glob("*/metrics.jsonl"))
        if metrics and '"step": 1' in metrics[0].read_text():
            break
        time.sleep(0.5)
    stop = subprocess.run([RAY, "job", "stop", f"--address={address}", job], env=env, capture_output=True,
                          text=True, timeout=600)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    status = subprocess.run([RAY, "job", "status", f"--address={address}", job], env=env, capture_output=True,
                            text=True, timeout=60)
    assert "was stopped" in status.stdout + status.stderr
    logs = subprocess.run([RAY, "job", "logs", f"--address={address}", job], env=env, capture_output=True,
                          text=True, timeout=60).stdout
    (line,) = [x for x in logs.splitlines() if "SIGTERM: stopped after step" in x]
    step = int(line.split("step ")[1].split()[0])
    (run_dir,) = list(out.iterdir())
    assert (run_dir / "checkpoints" / f"step_{step:06d}" / "COMPLETE").is_file()
    assert (run_dir / "checkpoints" / f"step_{step:06d}" / "hf" / "model.safetensors").is_file()


def test_submit_uploads_no_outputs_or_caches(tmp_path):
    """The command `rlpost submit` runs: excludes, absolute run directory, quoted overrides (no cluster needed)."""
    from rlpost.app.commands import UPLOAD_EXCLUDES, submit_command
    from rlpost.recipes import load_config

    overrides = ["reward.functions=[exact_match, my.py:fn]"]
    command = submit_command("quickstart", overrides, load_config("quickstart"), "http://h:8265", "/py", ".",
                             cache_dir="/c")
    env = json.loads(command[command.index("--") - 1].split("=", 1)[1])
    assert env["working_dir"] == "." and env["excludes"] == UPLOAD_EXCLUDES and env["env_vars"] == {
        "RLPOST_CACHE_DIR": "/c", "RAY_JOB_STOP_WAIT_TIME_S": "600"}  # checkpoint.stop_grace_s
    assert {"runs", ".cache", ".venv", ".git"} <= set(UPLOAD_EXCLUDES)
    entry = command[command.index("--") + 1:]
    assert entry[:6] == ["/py", "-m", "rlpost.app.cli", "train", "quickstart", overrides[0]]
    assert entry[6:] == [f"run.output_dir={Path.cwd() / 'runs'}"]
