"""Memory soak: train the embedded default for a few hundred steps and report whether resident memory grows.

Runs `rlpost train quickstart` in a subprocess and samples, every couple of seconds, the resident set size (RSS) of
the driver and of each actor process (found by Ray's process titles: ray::RolloutWorker, ray::LearnerWorker,
ray::RewardWorker, plus the reward worker's child process), tagged with the step the run had logged. After a
warm-up (the first 20% of steps: allocator caches, vLLM's first batches) it fits a least-squares line per process
and prints MiB per 100 steps, over the whole post-warm-up window and over its last half: a leak shows as a slope
that stays positive however long the run; a cache filling up shows as a slope that falls toward zero. The samples
go to OUT/memory.jsonl (one line per sample: step, process, MiB) for plotting or a second look.
With --trace-driver the driver runs under tracemalloc and OUT/tracemalloc.txt lists the Python allocation sites
that grew most between the end of the warm-up and the end of the run: growth that RSS shows and this list does not
is native (Ray's core worker, the C allocator), not Python objects kept alive by rlpost.
Usage: python scripts/soak_memory.py [--steps 300] [--out runs/soak] [--trace-driver]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
# Runs the CLI under tracemalloc: a snapshot when the run logs its first step past the warm-up, one at exit, and the
# allocation sites that grew most between them written to a file. argv: out dir, warm-up step, then the CLI's args.
TRACE_DRIVER = """
import atexit, sys, threading, time, tracemalloc
from pathlib import Path
out, warm = Path(sys.argv[1]), int(sys.argv[2])
sys.argv = ["rlpost"] + sys.argv[3:]
sys.path.insert(0, "scripts")
from soak_memory import last_step
tracemalloc.start(8)
first = []
def watch():
    while last_step(out) <= warm:
        time.sleep(1)
    first.append(tracemalloc.take_snapshot())
def report():
    if not first:
        return
    diff = tracemalloc.take_snapshot().compare_to(first[0], "traceback")
    with open(out / "tracemalloc.txt", "w") as f:
        total = sum(d.size_diff for d in diff)
        f.write(f"Python allocations from step {warm + 1} to the end: {total / 2**20:+.2f} MiB in all\\n")
        for d in diff[:15]:
            f.write(f"\\n{d.size_diff / 2**20:+.3f} MiB, {d.count_diff:+d} blocks\\n")
            f.write("\\n".join("    " + line for line in d.traceback.format()) + "\\n")
atexit.register(report)
threading.Thread(target=watch, daemon=True).start()
from rlpost.app.cli import main
sys.exit(main(sys.argv[1:]))
"""
ROLES = ("ray::RolloutWorker", "ray::LearnerWorker", "ray::RewardWorker", "actors.reward")


def last_step(out: Path) -> int:
    files = sorted(out.glob("soak-*/metrics.jsonl"), key=lambda f: f.stat().st_mtime)
    if not files:
        return -1
    lines = files[-1].read_text().splitlines()
    return json.loads(lines[-1])["step"] if lines else -1


def processes(driver: psutil.Process) -> dict[str, psutil.Process]:
    """The driver and every rlpost actor process on this machine, by a readable name."""
    found = {"driver": driver}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        for role in ROLES:
            if cmd.startswith(role) or (role == "actors.reward" and "-m actors.reward" in cmd):
                found[f"{role.replace('ray::', '')}[{proc.info['pid']}]"] = proc
    return found


def slope(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of (step, MiB) points, in MiB per 100 steps."""
    n = len(points)
    mx = sum(s for s, _ in points) / n
    my = sum(m for _, m in points) / n
    var = sum((s - mx) ** 2 for s, _ in points)
    return 100 * sum((s - mx) * (m - my) for s, m in points) / var if var else 0.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", default="runs/soak")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between samples")
    parser.add_argument("--trace-driver", action="store_true",
                        help="run the driver under tracemalloc and list the allocation sites that grew")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    warm = args.steps // 5
    train = ["train", "quickstart", f"run.steps={args.steps}", "run.max_train_minutes=0", "data.n_eval_per_source=8",
             "run.progress_bar=false", "run.name=soak", f"run.output_dir={out}"]
    if args.trace_driver:
        command = [sys.executable, "-c", TRACE_DRIVER, str(out), str(warm), *train]
    else:
        command = [str(Path(sys.executable).parent / "rlpost"), *train]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    driver = psutil.Process(proc.pid)
    samples: dict[str, list[tuple[int, dict[str, float]]]] = defaultdict(list)
    while proc.poll() is None:
        step = last_step(out)
        if step >= 1:
            for name, p in processes(driver).items():
                try:
                    samples[name].append((step, memory(p)))
                except (psutil.Error, OSError):
                    pass
        time.sleep(args.every)
    if proc.returncode != 0:
        raise SystemExit(f"the soak run failed (exit {proc.returncode}); run it by hand: {' '.join(command)}")
    with open(out / "memory.jsonl", "w") as f:
        for name, points in sorted(samples.items()):
            for step, mib in points:
                f.write(json.dumps({"process": name, "step": step, **{k: round(v, 2) for k, v in mib.items()}}) + "\n")
    report(samples, warm, args.steps)
    print(f"samples: {out / 'memory.jsonl'}")
    if args.trace_driver:
        print(f"driver's Python allocation growth: {out / 'tracemalloc.txt'}")


def memory(proc: psutil.Process) -> dict[str, float]:
    """Resident MiB in all and split: anonymous (heap: where a leak grows) and shared memory (the pages of Ray's
    object store a process has touched; they count in RSS without being the process's own)."""
    fields = {"rss": "VmRSS", "anon": "RssAnon", "shmem": "RssShmem"}
    status = Path(f"/proc/{proc.pid}/status")
    if not status.exists():
        return {"rss": proc.memory_info().rss / 2**20}
    values = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
    return {key: int(values[name].split()[0]) / 1024 for key, name in fields.items() if name in values}


def report(samples: dict[str, list[tuple[int, dict[str, float]]]], warm: int, steps: int) -> None:
    """Slopes over the training steps after the warm-up (samples taken during the final eval and shutdown, all
    tagged with the last step, are left out), for the whole window and its last half."""
    half = (warm + steps) // 2
    print(f"memory soak: {steps} steps of quickstart; resident MiB during steps {warm + 1}..{steps - 1}, "
          "least-squares slope in MiB per 100 steps")
    print(f"{'process':24s} {'RSS first':>10s} {'RSS last':>9s} {'RSS slope':>10s} {'last half':>10s}   "
          f"{'anon first':>10s} {'anon last':>10s} {'anon slope':>10s} {'last half':>10s}")
    for name, points in sorted(samples.items()):
        kept = [(s, m) for s, m in points if warm < s < steps]
        if len(kept) < 3:
            continue
        cells = []
        for key in ("rss", "anon"):
            series = [(s, m[key]) for s, m in kept if key in m]
            late = [(s, m) for s, m in series if s > half]
            if len(series) < 3:
                cells.append(f"{'-':>10s} {'-':>9s} {'-':>10s} {'-':>10s}")
                continue
            late_slope = f"{slope(late):10.2f}" if len(late) >= 3 else f"{'-':>10s}"
            cells.append(f"{series[0][1]:10.1f} {series[-1][1]:9.1f} {slope(series):10.2f} {late_slope}")
        print(f"{name:24s} {cells[0]}   {cells[1]}")


if __name__ == "__main__":
    main()
