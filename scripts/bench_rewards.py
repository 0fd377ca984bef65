"""Reward-stage throughput: what the isolation costs and what more workers buy.

Scores the same completions (GSM8K-style answers, half right) with `math_accuracy` three ways, in this process:
1. in-process: the function called directly, in chunks (the baseline, no isolation);
2. one reward worker: the child process, pipes and output checks of actors/reward.py, chunk by chunk;
3. N workers: N RewardWorkers (N child processes), chunks dealt in turn as the Ray pool does (threads only wait on
   pipes here, so Ray itself is left out of the measurement).
Prints completions per second and the ratios against the baseline. Usage:
    python scripts/bench_rewards.py [--completions 2048] [--chunk 64] [--workers 2]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.reward import RewardSettings, RewardWorker  # noqa: E402
from rewards import load_reward  # noqa: E402
from rlpost.types import RewardRequest  # noqa: E402


def make_request(n: int, seed: int = 0) -> RewardRequest:
    """n completions over n/8 prompts: a worked answer ending in a boxed number, right about half the time."""
    rng = random.Random(seed)
    completions, answers = [], []
    for _ in range(n):
        a, b = rng.randint(10, 999), rng.randint(10, 999)
        got = a + b if rng.random() < 0.5 else a + b + rng.randint(1, 9)
        completions.append(f"We add {a} and {b}. {a} + {b} = {got}, so the answer is \\boxed{{{got}}}.")
        answers.append(f"{a} + {b} = {a + b}\n#### {a + b}")
    return RewardRequest(["q"] * n, completions, [[1] * 20] * n, {"answer": answers}, {"step": 1},
                         [8] * (n // 8) + ([n % 8] if n % 8 else []))


def chunks(request: RewardRequest, size: int) -> list[RewardRequest]:
    n = len(request.completions)
    return [request.slice(lo, min(n, lo + size)) for lo in range(0, n, size)]


def in_process(parts: list[RewardRequest]) -> float:
    fn = load_reward("math_accuracy")
    start = time.perf_counter()
    for part in parts:
        fn(prompts=part.prompts, completions=part.completions, completion_ids=part.completion_ids, **part.columns,
           **part.run)
    return time.perf_counter() - start


def pooled(parts: list[RewardRequest], workers: int) -> float:
    settings = RewardSettings(["math_accuracy"], weights=[], timeout_s=60.0, args={}, on_error="raise",
                              max_error_rate=1.0, memory_mb=0)
    pool = [RewardWorker(settings) for _ in range(workers)]
    for worker in pool:  # warm: the child's first call imports sympy's lazily loaded parts
        worker.score(parts[0])
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as threads:
        shares = [parts[i::workers] for i in range(workers)]
        list(threads.map(lambda pair: [pair[0].score(p) for p in pair[1]], zip(pool, shares)))
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--completions", type=int, default=2048)
    parser.add_argument("--chunk", type=int, default=64, help="completions per call (reward.chunk_size)")
    parser.add_argument("--workers", type=int, default=2, help="workers for the pooled run")
    args = parser.parse_args(argv)
    parts = chunks(make_request(args.completions), args.chunk)
    in_process(parts[:1])  # warm the in-process imports too
    base = in_process(parts)
    rows = [("in-process (baseline)", base), ("1 worker (child process)", pooled(parts, 1))]
    if args.workers > 1:
        rows.append((f"{args.workers} workers", pooled(parts, args.workers)))
    print(f"{args.completions} completions, math_accuracy, chunks of {args.chunk}")
    for label, seconds in rows:
        print(f"  {label:28s} {args.completions / seconds:8.0f} completions/s  {base / seconds:5.2f}x baseline")


if __name__ == "__main__":
    main()
