"""A run killed with SIGKILL after its step-2 checkpoint and resumed with `resume=auto` logs, for every later step,
the same metrics as the same run left alone: bit-exact on this CPU stack (vLLM sampling seeds come from the step,
the sampler's RNG and the learner's optimizer state come from the checkpoint); only wall-clock timings differ."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO, RLPOST, run_cli

ARGS = ["quickstart", "run.steps=4", "checkpoint.every=2", "data.n_eval_per_source=8", "algorithm.prompts_per_step=8",
        "run.progress_bar=false", "run.name=resume"]


def _metrics(out: Path) -> dict[int, dict]:
    (run_dir,) = list(out.iterdir())
    return {r["step"]: r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}


def _timing(key: str) -> bool:
    """Keys that depend on the clock or the process: timings, rates, the peak FLOPs (measured, cached by whichever
    rank of whichever run measures first) with the MFU made from them, and a learner process's peak RSS."""
    return (key.startswith("time/") or (key.startswith("sync/") and key.endswith("_s"))
            or key in ("timestamp", "perf/tokens_per_s", "perf/mfu", "perf/peak_flops", "rollout/idle_frac",
                       "memory/learner_peak_rss_mb"))


MODES = {"sync": ["rollout.mode=sync"], "one_step_off": ["rollout.mode=one_step_off", "allocator.kind=gvm_online"],
         "memory": ["rollout.mode=sync", "memory.exploit_weight=1", "memory.explore_weight=1",
                    "memory.explore_phase=4", "memory.extract=all"],
         "tools": ["rollout.mode=one_step_off"],
         "lora": ["rollout.mode=sync", "model.lora_rank=8", "learner.lr=2e-3"]}
RECIPE = {"tools": "tools"}  # multi-turn episodes with the add tool (recipes/tools.yaml), ahead of their step


@pytest.mark.parametrize("mode", list(MODES))
def test_sigkill_then_resume_repeats_the_uninterrupted_run(tmp_path, mode):
    """one_step_off: the step-2 checkpoint holds step 3's batch, generated before the kill; the resumed run trains
    on those rollouts (none is lost or regenerated with other weights), so it too repeats the run left alone. It
    runs online GVM, whose gradient-norm calls from the background collection must queue behind each step's
    training on the learner ranks for the two runs to agree. memory: Memory-R+'s memories come back from the
    checkpoint, so steps 3 and 4 score the same and the memories at the end are the same. tools: episodes (model and
    environment turns, the environment-token mask) are what the pending batch holds, and the episodes of the steps
    after it repeat too. lora: the adapter and its optimizer state come back from the learner's checkpoint and the
    resumed run syncs the adapter into vLLM before its first step."""
    alone, killed = tmp_path / "alone", tmp_path / "killed"
    args = [RECIPE.get(mode, ARGS[0]), *ARGS[1:], *MODES[mode]]
    result = run_cli("train", *args, f"run.output_dir={alone}", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]

    # The driver stops itself right after writing step 3 (after the step-2 checkpoint), so the kill lands there
    # however fast the machine: polling alone let a fast run write step 4 before the kill.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RLPOST_INJECT_FAULT": "driver.step_done:hang@3"}
    proc = subprocess.Popen([RLPOST, "train", *args, f"run.output_dir={killed}"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline and proc.poll() is None:  # kill once step 3 is out (the driver hangs)
            runs = list(killed.glob("resume-*/metrics.jsonl")) if killed.exists() else []
            if runs and '"step": 3' in runs[0].read_text():
                break
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert 3 in _metrics(killed) and 4 not in _metrics(killed)

    (checkpoint,) = killed.glob("resume-*/checkpoints/step_000002")
    pending = json.loads((checkpoint / "driver.json").read_text())["pending"]
    result = run_cli("train", *args, f"run.output_dir={killed}", "resume=auto", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming" in result.stdout and "from step_000002" in result.stdout
    a, b = _metrics(alone), _metrics(killed)
    if mode not in ("one_step_off", "tools"):
        assert pending == []
    else:  # step 3's batch, stored: its tokens are the ones step 3 trained on in both runs
        assert [p["step"] for p in pending] == [3] and pending[0]["tokens"] == a[3]["tokens/generated"]
        assert a[3]["rollout/staleness_max"] == 1
    assert sorted(a) == sorted(b) == [0, 1, 2, 3, 4]  # step 3 of the killed run was dropped and redone
    for step in (3, 4):
        same = {k: v for k, v in a[step].items() if not _timing(k)}
        assert same == {k: v for k, v in b[step].items() if not _timing(k)}, step
    (run_a,), (run_b,) = list(alone.iterdir()), list(killed.iterdir())
    assert json.loads((run_a / "eval.json").read_text())["after"] == json.loads((run_b / "eval.json").read_text())[
        "after"]
    if mode == "tools":  # episodes called the tool, the stored batch kept their environment-token masks
        assert all(a[s]["env/call_rate"] > 0 and a[s]["env/env_tokens"] > 0 for s in (1, 2, 3, 4))
        assert any(not m for g in pending[0]["generated"] for s in g["samples"] for m in s.get("env_mask", [True]))
    if mode == "memory":
        assert a[4]["memory/explore_keys"] >= 4 and a[4]["reward/memory_explore"] > 0  # both terms at work
        ends = [json.loads((r / "checkpoints" / "step_000004" / "driver.json").read_text())["memory"]
                for r in (run_a, run_b)]
        assert ends[0] == ends[1] and len(ends[0]["exploit"]["keys"]) == a[4]["memory/exploit_keys"] > 0


def test_sigterm_checkpoints_after_the_step_in_flight_and_stops(tmp_path):
    """What `ray job stop` or a preempted node does: the step in flight finishes, a checkpoint is written (none is
    due: checkpoint.every=0), the run exits 143 (terminated, not done), and resume=auto finishes it."""
    out = tmp_path / "runs"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen([RLPOST, "train", *ARGS, "checkpoint.every=0", f"run.output_dir={out}"], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:  # SIGTERM once step 1 is out
        runs = list(out.glob("resume-*/metrics.jsonl")) if out.exists() else []
        if runs and '"step": 1' in runs[0].read_text():
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 143, stdout[-2000:] + stderr[-3000:]
    (line,) = [x for x in stdout.splitlines() if "SIGTERM: stopped after step" in x]
    step = int(line.split("step ")[1].split()[0])
    assert step < 4
    (run_dir,) = list(out.iterdir())
    assert (run_dir / "checkpoints" / f"step_{step:06d}" / "COMPLETE").is_file()
    assert not (run_dir / "final").exists() and max(_metrics(out)) == step
    result = run_cli("train", *ARGS, "checkpoint.every=0", f"run.output_dir={out}", "resume=auto", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"from step_{step:06d}" in result.stdout and sorted(_metrics(out)) == [0, 1, 2, 3, 4]


def test_a_dead_learner_rank_stops_the_run_with_a_resumable_checkpoint(tmp_path):
    out = tmp_path / "runs"  # one command for the first start and the restart, as a resubmitted job would run
    result = run_cli("train", *ARGS, f"run.output_dir={out}", "resume=auto", timeout=900,
                     env={"RLPOST_INJECT_FAULT": "learner.train.rank1:exit@3"})  # rank 1 dies in step 3
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    assert "has a complete checkpoint; starting fresh" in result.stdout
    assert "learner.train: the actor died" in result.stderr and "Traceback" not in result.stderr
    assert "the last checkpoint is" in result.stderr and "step_000002" in result.stderr
    assert "resume=auto" in result.stderr
    result = run_cli("train", *ARGS, f"run.output_dir={out}", "resume=auto", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "from step_000002" in result.stdout and 4 in _metrics(out)


def test_runs_finish_when_vllm_engines_and_reward_workers_die_mid_step(tmp_path):
    """Each actor exits at its 3rd call, so the run's first engine dies generating step 2 and every replacement
    dies again later: the run still completes every step, re-syncing each new engine."""
    for fault in ("rollout.generate:exit@3", "reward.score:exit@3"):
        out = tmp_path / fault.split(".")[0]
        result = run_cli("train", *ARGS, "checkpoint.every=0", f"run.output_dir={out}", timeout=900,
                         env={"RLPOST_INJECT_FAULT": fault})
        assert result.returncode == 0, fault + result.stdout[-2000:] + result.stderr[-3000:]
        assert "died" in result.stderr and "replaced" in result.stderr, fault
        metrics = _metrics(out)
        assert sorted(metrics) == [0, 1, 2, 3, 4], fault
        assert all(abs(metrics[s]["train/logprob_mismatch_mean"]) < 1e-3 for s in (1, 2, 3, 4)), fault
