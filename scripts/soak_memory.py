"""Memory soak: train the embedded default for a few hundred steps and report whether resident memory grows.

Runs `rlpost train quickstart` in a subprocess and samples, every couple of seconds, the resident set size (RSS) of
the driver and of each actor process (found by Ray's process titles: ray::RolloutWorker, ray::LearnerWorker,
ray::RewardWorker, plus the reward worker's child process), tagged with the step the run had logged. After a
warm-up (the first 20% of steps: allocator caches, vLLM's first batches) it fits a least-squares line per process
and prints MiB per 100 steps. A leak shows as a slope that stays positive however long the run.
Usage: python scripts/soak_memory.py [--steps 300] [--out runs/soak]
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
ROLES = ("ray::RolloutWorker", "ray::LearnerWorker", "ray::RewardWorker", "actors.reward")


def last_step(out: Path) -> int:
    files = list(out.glob("soak-*/metrics.jsonl"))
    if not files:
        return -1
    lines = files[0].read_text().splitlines()
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
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    command = [str(Path(sys.executable).parent / "rlpost"), "train", "quickstart", f"run.steps={args.steps}",
               "run.max_train_minutes=0", "data.n_eval_per_source=8", "run.progress_bar=false", "run.name=soak",
               f"run.output_dir={out}"]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    driver = psutil.Process(proc.pid)
    samples: dict[str, list[tuple[int, float]]] = defaultdict(list)
    while proc.poll() is None:
        step = last_step(out)
        if step >= 1:
            for name, p in processes(driver).items():
                try:
                    samples[name].append((step, p.memory_info().rss / 2**20))
                except psutil.Error:
                    pass
        time.sleep(args.every)
    if proc.returncode != 0:
        raise SystemExit(f"the soak run failed (exit {proc.returncode}); run it by hand: {' '.join(command)}")
    warm = args.steps // 5
    print(f"memory soak: {args.steps} steps of quickstart; RSS after warm-up (step > {warm}), least-squares slope")
    print(f"{'process':28s} {'first MiB':>10s} {'last MiB':>10s} {'MiB/100 steps':>14s} {'samples':>8s}")
    for name, points in sorted(samples.items()):
        kept = [(s, m) for s, m in points if s > warm]
        if len(kept) >= 3:
            print(f"{name:28s} {kept[0][1]:10.1f} {kept[-1][1]:10.1f} {slope(kept):14.2f} {len(kept):8d}")


if __name__ == "__main__":
    main()
