"""The quickstart recipe submitted with `ray job submit` to a real local Ray cluster (`ray start --head`)."""

from __future__ import annotations

import json
import os
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
def ray_cluster(tmp_path):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    port, dashboard = _free_port(), _free_port()
    temp = Path("/tmp") / f"rlpost-ray-{os.getpid()}"  # short: Ray's socket paths have a length limit
    start = [RAY, "start", "--head", f"--port={port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
             "--include-dashboard=true", "--num-cpus=6", f"--temp-dir={temp}", "--disable-usage-stats"]
    subprocess.run(start, check=True, env=env, capture_output=True, timeout=180)
    try:
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_quickstart_as_a_ray_job(ray_cluster, tmp_path):
    address, env = ray_cluster
    out = tmp_path / "runs"
    submit = [RAY, "job", "submit", f"--address={address}", "--", RLPOST, "train", "quickstart", "run.steps=2",
              "data.n_eval_per_source=8", "algorithm.prompts_per_step=8", "run.progress_bar=false",
              f"run.output_dir={out}"]
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
