"""GPU check (issue 16): every GPU-only path of rlpost, each a named check with its own timeout, in one run of
under 10 minutes on a box with an NVIDIA GPU; one table at the end (check, PASS/FAIL/SKIP, seconds, one-line
detail), the same as JSON (gpu_check.json, rewritten after each check) and a log per check, in --out, else $OUT,
else runs/gpu_check-<time>. Exit status 1 when any check failed.

  python scripts/gpu_check.py stage      # here, with network: .cache/gpu_wheels/{manifest.json, wheels.tar.NNN}
  python scripts/gpu_check.py install    # on the box, once every part is there: into .cache/gpu_site
  python scripts/gpu_check.py run [--only a,b] [--skip a,b] [--budget 560]   # the checks (`all`: install + run)
  python scripts/gpu_check.py list       # the checks and what each does
A box without network gets the parts one per call (each under the 64 MiB a call carries), the first call with the
manifest and .cache/base_model; `stage` prints the plan. Install in the call that carries the last part, so the
checks get a call of their own (scripts/gpu_check.sh says it in full).

The checks: the install; the GPU, torch and imports; the vLLM names actors/ uses; a vLLM generate of the embedded
model; the DeepSpeed learner in bf16 with ZeRO-2 and ZeRO-3 (CPU transport, so the learner is judged alone); the
IPC and NCCL weight transports with the logprob probe (`sync/probe_max_abs_diff` in metrics.jsonl after every sync,
at most --probe-tol); a vLLM engine killed mid-run (RLPOST_INJECT_FAULT) rejoining each transport; the quickstart
recipe; the peer benchmark in bf16 (rlpost on the GPU, TRL's GRPOTrainer on the GPU sampling with vLLM in colocate
mode). NCCL refuses two ranks on one device, so its checks need two GPUs and are skipped on one; IPC needs the
learner and vLLM on one GPU.
Standard library only at module level: the parent runs under the image's bare Python; checks are child processes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _gpu_check_box as box  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WHEELS = Path(os.environ.get("GPU_CHECK_WHEELS", REPO / ".cache" / "gpu_wheels")).resolve()
SITE = Path(os.environ.get("GPU_CHECK_SITE", REPO / ".cache" / "gpu_site")).resolve()
WORK = REPO / ".cache" / "gpu_check"  # run directories, the bench's model; not brought back
SKIP_RC = 3  # a check command's way of saying it does not apply here
MIN_SLOT_S = 20.0  # a check is not started with less time than this left in the budget
STOP_GRACE_S = 15.0  # a timed-out check gets SIGTERM, and SIGKILL 10 s later
DETAIL_WIDTH = 110
LOG_KEEP = (64_000, 256_000)  # head and tail bytes kept of a longer log
FAST = ["run.max_train_minutes=0", "run.save_final=false", "run.tensorboard=false", "run.progress_bar=false",
        "checkpoint.every=0", "data.eval_split=", "rollout.gpu_memory_utilization=0.25",
        "resources.placement_timeout_s=120", "resources.call_timeout_s=240"]


@dataclass(frozen=True)
class Outcome:
    """What a finished (or killed) check command left: exit status (None: timed out), time, log, work folder."""

    rc: int | None
    seconds: float
    log: Path
    work: Path


Judge = Callable[[Outcome], tuple[str, str]]  # -> (PASS or FAIL, one-line detail)


@dataclass(frozen=True)
class Check:
    name: str
    what: str
    argv: tuple[str, ...]
    timeout_s: float
    judge: Judge
    env: Mapping[str, str] = field(default_factory=dict)
    gpus: int = 1  # fewest GPUs it can run on
    needs: tuple[str, ...] = ()  # checks that must have passed


@dataclass
class Result:
    name: str
    status: str  # PASS, FAIL or SKIP
    seconds: float
    detail: str
    log: str = ""


# ---------------------------------------------------------------- logs and judges (pure)

def failing_line(text: str) -> str:
    """The line that says why a command failed: the last exception line, else the last line that mentions an
    error, else the last non-empty line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for pattern in (r"^[\w.]*(Error|Exception|Exit|Interrupt)\b.*", r"(?i)\berror\b"):
        hits = [line for line in lines if re.search(pattern, line)]
        if hits:
            return hits[-1]
    return lines[-1] if lines else "(no output)"


def detail_line(text: str) -> str:
    """A probe's own summary (its last '[gpu_check] ' line), else the last non-empty line."""
    marked = [line.split("[gpu_check] ", 1)[1] for line in text.splitlines() if "[gpu_check] " in line]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return marked[-1] if marked else (lines[-1] if lines else "")


def read_log(log: Path) -> str:
    return log.read_text(errors="replace") if log.exists() else ""


def judge_exit(outcome: Outcome) -> tuple[str, str]:
    """A probe's judge: exit 0 passes, SKIP_RC skips (with its summary line), anything else fails."""
    text = read_log(outcome.log)
    if outcome.rc in (0, SKIP_RC):
        return ("PASS" if outcome.rc == 0 else "SKIP"), detail_line(text)
    return "FAIL", failing_line(text)


def read_steps(work: Path) -> list[dict[str, Any]]:
    """Every record of the newest metrics.jsonl under `work` (the step-0 record holds the start-up probe only)."""
    found = sorted(work.glob("**/metrics.jsonl"), key=lambda p: p.stat().st_mtime)
    records = []
    for line in (found[-1].read_text().splitlines() if found else []):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return sorted((r for r in records if isinstance(r, dict) and "step" in r), key=lambda r: r["step"])


def _nan_max(values: Sequence[float]) -> float:
    return max(values, default=float("nan"))


def run_verdict(records: list[dict[str, Any]], steps: int, probe_tol: float) -> tuple[str, str]:
    """PASS when all `steps` training steps were logged and every probe after a sync stayed within `probe_tol`."""
    def values(key: str, rows: list[dict[str, Any]]) -> list[float]:
        return [abs(float(r[key])) for r in rows if key in r]

    trained = [r for r in records if "tokens/generated" in r]
    probes, walls = values("sync/probe_max_abs_diff", trained), values("time/wall", trained[1:])
    detail = (f"{len(trained)}/{steps} steps; probe max {_nan_max(probes):.1e} (before training "
              f"{_nan_max(values('sync/probe_max_abs_diff', [r for r in records if r['step'] == 0])):.1e}); "
              f"mismatch max {_nan_max(values('train/logprob_mismatch_mean', trained)):.1e}; "
              f"{sum(walls) / max(1, len(walls)):.2f} s/step")
    if len(trained) < steps:
        return "FAIL", f"too few steps logged: {detail}"
    if not probes or max(probes) > probe_tol:
        return "FAIL", f"vLLM and the learner disagree (probe over {probe_tol:g}): {detail}"
    return "PASS", detail


def judge_run(steps: int, probe_tol: float, must_say: str = "") -> Judge:
    """A training run's judge: it exited 0, logged every step, the probes agree (and the log says `must_say`)."""
    def judge(outcome: Outcome) -> tuple[str, str]:
        text = read_log(outcome.log)
        if outcome.rc != 0:
            return "FAIL", failing_line(text)
        status, detail = run_verdict(read_steps(outcome.work), steps, probe_tol)
        if must_say and must_say not in text:
            return "FAIL", f"the log never says {must_say!r}; {detail}"
        after = [line.split(": ", 1)[-1] for line in text.splitlines() if "held-out greedy accuracy after" in line]
        return status, detail + (f"; accuracy after: {after[-1]}" if after else "")
    return judge


def judge_bench(result_json: Path) -> Judge:
    def judge(outcome: Outcome) -> tuple[str, str]:
        if outcome.rc != 0 or not result_json.exists():
            return "FAIL", failing_line(read_log(outcome.log))
        results = json.loads(result_json.read_text())["results"]
        cells = [f"{name} {r['tokens_per_s']:,.0f} tok/s ({r['s_per_step']:.2f} s/step)"
                 for name, r in results.items() if "tokens_per_s" in r]
        return "PASS", "; ".join(cells)
    return judge


def trim_log(path: Path, keep: tuple[int, int] = LOG_KEEP) -> None:
    """Keep a long log's head and tail, so the logs stay small enough to bring back from the box."""
    head, tail = keep
    size = path.stat().st_size if path.exists() else 0
    if size <= head + tail:
        return
    with path.open("rb") as f:
        first = f.read(head)
        f.seek(size - tail)
        last = f.read()
    path.write_bytes(first + f"\n[trimmed] ... {size - head - tail} bytes cut ...\n".encode() + last)


# ---------------------------------------------------------------- the runner

def run_command(argv: Sequence[str], env: Mapping[str, str], timeout_s: float, log: Path,
                cwd: Path = REPO) -> tuple[int | None, float]:
    """Run `argv` in its own process group, output into `log`; on timeout the whole group is stopped (TERM, then
    KILL after 10 s) and the status is None. What the group left behind is killed either way."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(list(argv), cwd=cwd, env=dict(env), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            rc: int | None = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            rc = None
            for sig, grace in ((signal.SIGTERM, STOP_GRACE_S * 2 / 3), (signal.SIGKILL, STOP_GRACE_S / 3)):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(timeout=grace)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue
        seconds = time.monotonic() - started
    try:  # whatever the command left running (an engine process, a Ray worker) would hold the GPU for the next
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return rc, seconds


def run_checks(checks: Sequence[Check], gpus: int, budget_s: float, logs: Path, work: Path,
               env: Mapping[str, str], min_slot_s: float = MIN_SLOT_S, started: float | None = None,
               on_result: Callable[[list[Result]], object] | None = None) -> list[Result]:
    """Each check in turn, whatever the others did: skipped when it needs more GPUs than are visible, when a check
    it needs ran and did not pass, or when less than `min_slot_s` of the budget is left; its timeout is cut to
    what is left less the time a timed-out check takes to stop, so the whole run ends within the budget.
    `on_result` sees the results so far after each check (the report is kept current in case the run is killed)."""
    started = time.monotonic() if started is None else started
    results: list[Result] = []
    for check in checks:
        status = {r.name: r.status for r in results}
        left = budget_s - (time.monotonic() - started) - STOP_GRACE_S
        failed_needs = [f"{n} ({status[n]})" for n in check.needs if status.get(n, "PASS") != "PASS"]
        if check.gpus > gpus:
            plural = "s" if check.gpus > 1 else ""
            result = Result(check.name, "SKIP", 0.0, f"needs {check.gpus} GPU{plural}, {gpus} visible")
        elif failed_needs:
            result = Result(check.name, "SKIP", 0.0, "needs " + ", ".join(failed_needs))
        elif left < min_slot_s:
            result = Result(check.name, "SKIP", 0.0, f"time budget of {budget_s:.0f}s spent")
        else:
            result = _run_one(check, min(check.timeout_s, left), logs, work, env)
        results.append(result)
        print(f"[gpu_check] {result.name}: {result.status} ({result.seconds:.0f}s) {result.detail}", flush=True)
        if on_result is not None:
            on_result(results)
    return results


def _run_one(check: Check, timeout_s: float, logs: Path, work: Path, env: Mapping[str, str]) -> Result:
    log, check_work = logs / f"{check.name}.log", work / check.name
    shutil.rmtree(check_work, ignore_errors=True)  # a judge must never read an earlier run's metrics
    check_work.mkdir(parents=True)
    rc, seconds = run_command(check.argv, {**env, **check.env}, timeout_s, log)
    outcome = Outcome(rc, seconds, log, check_work)
    if rc is None:
        status, detail = "FAIL", f"timed out after {timeout_s:.0f}s; last: {failing_line(read_log(log))}"
    else:
        try:
            status, detail = check.judge(outcome)
        except Exception as err:  # a judge that cannot read what the run left is a failed check, not a crash
            status, detail = "FAIL", f"could not judge: {type(err).__name__}: {err}"
    trim_log(log)
    for metrics in sorted(check_work.glob("**/metrics.jsonl"))[-1:]:  # small; comes back with the logs
        shutil.copyfile(metrics, logs / f"{check.name}.metrics.jsonl")
    return Result(check.name, status, round(seconds, 1), detail, str(log))


def format_table(results: Sequence[Result], width: int = DETAIL_WIDTH) -> str:
    """The closing table: one row per check, the detail cut to `width` characters (the JSON has it whole)."""
    name_w = max([len("check"), *(len(r.name) for r in results)])
    lines = [f"{'check':<{name_w}}  status  {'seconds':>7}  detail"]
    for r in results:
        detail = r.detail if len(r.detail) <= width else r.detail[: width - 3] + "..."
        lines.append(f"{r.name:<{name_w}}  {r.status:<6}  {r.seconds:>7.1f}  {detail}")
    counts = {s: sum(r.status == s for r in results) for s in ("PASS", "FAIL", "SKIP")}
    lines.append(", ".join(f"{n} {s.lower()}ed" if s != "SKIP" else f"{n} skipped" for s, n in counts.items()))
    return "\n".join(lines)


def write_report(results: Sequence[Result], out: Path, info: Mapping[str, Any]) -> Path:
    """gpu_check.json (every field of every result plus `info`) and gpu_check.txt (the table) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "gpu_check.json"
    path.write_text(json.dumps({**info, "failed": [r.name for r in results if r.status == "FAIL"],
                                "checks": [asdict(r) for r in results]}, indent=1))
    (out / "gpu_check.txt").write_text(format_table(results) + "\n")
    return path


def exit_status(results: Sequence[Result]) -> int:
    return 1 if any(r.status == "FAIL" for r in results) else 0


# ---------------------------------------------------------------- the checks

def placement(gpus: int, transport: str, ranks: int = 1) -> tuple[list[str], dict[str, str]]:
    """Recipe overrides and environment that put a run's actors on the GPUs. IPC needs a learner rank and the vLLM
    engine on one GPU, and one GPU leaves no choice: fractional shares of one device (the others hidden, so Ray
    cannot spread the shares). Otherwise a whole GPU each, and up to `ranks` learner ranks (NCCL refuses two ranks
    on one device, so each rank needs its own)."""
    transport_set = [f"sync.transport={transport}"]
    if transport == "ipc" or gpus < 2:
        first = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0]
        return (["learner.world_size=1", "resources.rollout_gpus=0.4", "resources.learner_gpus=0.4", *transport_set],
                {"CUDA_VISIBLE_DEVICES": first})
    return ([f"learner.world_size={max(1, min(ranks, gpus - 1))}", "resources.rollout_gpus=1",
             "resources.learner_gpus=1", *transport_set], {})


def train_argv(name: str, work: Path, overrides: Sequence[str]) -> tuple[str, ...]:
    """`rlpost train` of the quickstart recipe through the CLI module, its runs under work/<name>."""
    return (sys.executable, "-m", "rlpost.app.cli", "train", "recipes/quickstart.yaml",
            f"run.output_dir={(work / name / 'runs').resolve()}", f"run.name={name}", *overrides)


def build_checks(gpus: int, work: Path, out: Path, probe_tol: float, stage: Path, site: Path) -> list[Check]:
    """Every check, in the order they run (cheap and fundamental first, the long bench last). Each runs whatever
    the others did (a failing import fails each check fast, with its own line), except that a rejoin is skipped
    when its transport's check failed: it would fail the same way, at the cost of a whole run."""
    me = (sys.executable, str(Path(__file__).resolve()))
    bf16 = ["model.dtype=bfloat16", "learner.lr=1e-3", *FAST]  # lr: a stale engine would be far off after 1 step

    def train(name: str, what: str, transport: str, steps: int, extra: Sequence[str], ranks: int = 1,
              env: Mapping[str, str] | None = None, must_say: str = "", min_gpus: int = 1,
              needs: tuple[str, ...] = (), tol: float | None = None) -> Check:
        where, where_env = placement(gpus, transport, ranks)
        return Check(name, what, train_argv(name, work, [*bf16, *where, f"run.steps={steps}", *extra]), 300,
                     judge_run(steps, probe_tol if tol is None else tol, must_say), {**where_env, **(env or {})},
                     min_gpus, needs)

    fault = {"RLPOST_INJECT_FAULT": "rollout.generate:exit@3"}  # the engine dies generating step 3 of 4
    quick_where, quick_env = placement(gpus, "cpu", ranks=2)
    bench_json = out / "bench_vs_trl.json"
    bench_sets = [f"--rlpost-set={o}" for o in [*placement(1, "cpu")[0], "rollout.gpu_memory_utilization=0.25"]]
    return [
        Check("install", f"join, check and install the staged wheels from {stage} into {site}",
              (*me, "install", "--wheels", str(stage), "--site", str(site)), 300, judge_exit, gpus=0),
        Check("env", "a GPU is visible; torch sees CUDA; vllm, ray, deepspeed, transformers and trl import",
              (*me, "probe", "env"), 180, judge_exit, gpus=0),  # runs anyway, to fail where no GPU is
        Check("vllm-api", "the vLLM names and LLM methods that actors/ uses exist in this vLLM",
              (*me, "probe", "vllm-api"), 120, judge_exit),
        Check("vllm-generate", "rlpost's RolloutWorker (vLLM, bf16) samples and scores on the GPU",
              (*me, "probe", "vllm-generate"), 240, judge_exit),
        train("learner-zero2", "DeepSpeed learner, bf16, ZeRO-2 (CPU transport), 3 steps", "cpu", 3,
              ["learner.zero_stage=2"], ranks=2),
        train("learner-zero3", "DeepSpeed learner, bf16, ZeRO-3 (CPU transport), 3 steps", "cpu", 3,
              ["learner.zero_stage=3"], ranks=2),
        train("sync-ipc", "CUDA IPC weight transport (learner and vLLM on one GPU) + probe", "ipc", 3,
              ["learner.zero_stage=2"]),
        train("sync-nccl", "NCCL weight transport (separate GPUs) + probe", "nccl", 3,
              ["learner.zero_stage=2"], min_gpus=2),
        train("rejoin-ipc", "a vLLM engine exits mid-run; its replacement joins the IPC transport", "ipc", 4,
              ["learner.zero_stage=2"], env=fault, must_say="replaced", needs=("sync-ipc",)),
        train("rejoin-nccl", "a vLLM engine exits mid-run; its replacement joins the NCCL transport", "nccl", 4,
              ["learner.zero_stage=2"], env=fault, must_say="replaced", min_gpus=2, needs=("sync-nccl",)),
        train("lora", "LoRA (bf16 base, rank 16), adapter-only sync into vLLM's LoRA + probe", "cpu", 3,
              ["model.lora_rank=16", "learner.zero_stage=2"], ranks=2),
        train("lora-merged", "LoRA with merged weights synced instead (sync.lora=merged) + probe", "cpu", 3,
              ["model.lora_rank=16", "sync.lora=merged", "learner.zero_stage=3"], ranks=2),
        # the learner's base is 4-bit NF4 and vLLM's bf16: the probe measures that quantization gap too
        train("qlora", "QLoRA (4-bit NF4 base, bitsandbytes), adapter-only sync; probe within 0.5", "cpu", 3,
              ["model.lora_rank=16", "model.load_in_4bit=true", "learner.zero_stage=2"], tol=0.5),
        Check("quickstart", "recipes/quickstart.yaml (float32, CPU transport), GPU resources, 30 steps with eval",
              train_argv("quickstart", work, [*quick_where, "rollout.gpu_memory_utilization=0.25", "run.steps=30",
                                              "run.tensorboard=false", "run.progress_bar=false"]),
              360, judge_run(30, probe_tol), quick_env),
        Check("async", "rlpost in rollout.mode sync, then one_step_off (the peer script's --rlpost-modes), 4 steps "
              "in bf16, vLLM and the learner sharing one GPU: s/step of each (idle fractions in its log)",
              (sys.executable, "scripts/bench_vs_trl.py", "--systems", "rlpost", "--rlpost-modes", "sync,one_step_off",
               "--steps", "4", "--learner-ranks", "1", "--dtype", "bfloat16",
               "--workdir", str((work / "async").resolve()), "--out", str((out / "async_modes.json").resolve()),
               *bench_sets),
              360, judge_bench(out / "async_modes.json"), placement(1, "cpu")[1]),
        Check("bench", "scripts/bench_vs_trl.py --quick --steps 3 in bf16: rlpost and TRL (vLLM colocate) on the "
              "GPU, bare vLLM",
              (sys.executable, "scripts/bench_vs_trl.py", "--quick", "--steps", "3", "--learner-ranks", "1",
               "--trl-device", "cuda", "--dtype", "bfloat16",
               "--workdir", str((work / "bench").resolve()), "--out", str(bench_json.resolve()), *bench_sets),
              420, judge_bench(bench_json), placement(1, "cpu")[1]),
    ]


def select(checks: list[Check], only: Sequence[str], skip: Sequence[str]) -> list[Check]:
    """The checks named by --only (all when empty) less those named by --skip; unknown names are an error."""
    known = [c.name for c in checks]
    unknown = [n for n in [*only, *skip] if n not in known]
    if unknown:
        raise SystemExit(f"gpu_check: unknown check(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return [c for c in checks if (not only or c.name in only) and c.name not in skip]


def child_env(site: Path) -> dict[str, str]:
    """The checks' environment: the installed wheels and the repository first on the path, Ray without auth,
    vLLM's warnings kept (rlpost quiets them by default)."""
    path = [str(site.resolve()), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path), "RAY_AUTH_MODE": "disabled",
            "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING"), "PYTHONUNBUFFERED": "1",
            "PATH": os.pathsep.join([str(site.resolve() / "bin"), os.environ.get("PATH", "")])}


# ---------------------------------------------------------------- command line

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("all", "run", "install", "list"):
        p = sub.add_parser(name)
        p.add_argument("--wheels", type=Path, default=WHEELS, help="staged wheel parts (env GPU_CHECK_WHEELS)")
        p.add_argument("--site", type=Path, default=SITE, help="install target, put on PYTHONPATH (GPU_CHECK_SITE)")
        p.add_argument("--only", type=_names, default=(), help="comma-separated checks to run (default: all)")
        p.add_argument("--skip", type=_names, default=(), help="comma-separated checks to leave out")
        p.add_argument("--budget", type=float, default=560.0, help="seconds for all checks together")
        p.add_argument("--probe-tol", type=float, default=0.5,
                       help="largest |vLLM - learner| logprob a probe may show; in bf16 the same weights differ by "
                            "0.03-0.09 (measured on CPU), a stale engine after 3 steps at lr 1e-3 by about 4.5")
        p.add_argument("--out", type=Path, default=None, help="table, JSON and logs (default $OUT, else runs/)")
    stage = sub.add_parser("stage", help="download and split the wheels the GPU image lacks (needs network)")
    stage.add_argument("--dest", type=Path, default=WHEELS)
    stage.add_argument("--python-version", default="3.12")
    stage.add_argument("--glibc", type=int, default=31, help="the image's glibc minor version (2.N)")
    stage.add_argument("--part-mb", type=float, default=60.0, help="part size in MB (10^6 bytes)")
    stage.add_argument("--also", action="append", default=[], help="another distribution to stage (repeatable)")
    probe = sub.add_parser("probe", help=argparse.SUPPRESS)
    probe.add_argument("name", choices=sorted(box.PROBES))
    args = parser.parse_args(argv)
    if getattr(args, "budget", 1.0) <= 0 or getattr(args, "part_mb", 1.0) <= 0:
        parser.error("--budget and --part-mb must be positive")
    return args


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def out_dir(arg: Path | None) -> Path:
    """--out, else $OUT (the device tool brings back what is written there), else runs/gpu_check-<time>."""
    if arg is not None:
        return arg
    return Path(os.environ["OUT"]) if os.environ.get("OUT") else Path("runs") / time.strftime("gpu_check-%Y%m%d-%H%M%S")


def command_install(args: argparse.Namespace) -> int:
    if not (args.wheels / box.MANIFEST).is_file():
        print(f"[gpu_check] no staged wheels in {args.wheels} ({box.MANIFEST} missing): the checks use what "
              "is importable")
        return SKIP_RC
    print(f"[gpu_check] {box.install(args.wheels, args.site)}")
    return 0


def command_stage(args: argparse.Namespace) -> int:
    manifest = box.stage(args.dest, args.python_version, args.glibc, int(args.part_mb * 1e6), args.also)
    print(f"[stage] {len(manifest['wheels'])} wheels, {manifest['size'] / 1e6:.0f} MB in {len(manifest['parts'])} "
          f"parts under {args.dest}; carry one call each (the first also takes the manifest and the base model):")
    for i, paths in enumerate(box.carry_plan(manifest, os.path.relpath(args.dest, REPO), [".cache/base_model"]), 1):
        print(f"  call {i}: carry {json.dumps(paths)}")
    return 0


def command_run(args: argparse.Namespace, started: float) -> int:
    """Run the chosen checks (for `all`, the install first), print the table and write the report."""
    out, gpus = out_dir(args.out), box.visible_gpus()
    checks = build_checks(len(gpus), WORK, out, args.probe_tol, args.wheels, args.site)
    if args.command == "run":
        checks = [c for c in checks if c.name != "install"]
    checks = select(checks, args.only, args.skip)
    if args.command == "list":
        print("\n".join(f"{c.name:<14} {c.timeout_s:>4.0f}s  {c.what}" for c in checks))
        return 0
    print(f"[gpu_check] {len(gpus)} GPU(s): {'; '.join(gpus) or 'none'}; {len(checks)} checks, budget "
          f"{args.budget:.0f}s; logs in {out / 'gpu_check_logs'}", flush=True)
    info = {"host": socket.gethostname(), "gpus": gpus, "budget_s": args.budget, "probe_tol": args.probe_tol,
            "argv": sys.argv[1:]}

    def report(results: list[Result]) -> Path:
        return write_report(results, out, {**info, "total_s": round(time.monotonic() - started, 1)})

    results = run_checks(checks, len(gpus), args.budget, out / "gpu_check_logs", WORK, child_env(args.site),
                         started=started, on_result=report)
    path = report(results)
    print("\n" + format_table(results) + f"\n[gpu_check] report: {path}")
    return exit_status(results)


def main(argv: Sequence[str] | None = None) -> int:
    started = time.monotonic()
    args = parse_args(argv)
    for key in ("wheels", "site", "out", "dest"):  # given relative to where it was called from
        if getattr(args, key, None) is not None:
            setattr(args, key, getattr(args, key).resolve())
    os.chdir(REPO)
    if args.command == "probe":
        return box.PROBES[args.name]()
    if args.command == "stage":
        return command_stage(args)
    if args.command == "install":
        return command_install(args)
    return command_run(args, started)


if __name__ == "__main__":
    sys.exit(main())
