"""Paired-seed benchmark machinery shared by bench_curriculum.py, bench_allocation.py and bench_async.py.

Each (arm, seed) is a real `rlpost train <recipe>` run through the CLI (quickstart unless the bench sets
`args.recipe`). Its result (per-step records and held-out
eval points) is written to `<out>/results/<arm>-s<seed>.json` atomically when the run ends, so a benchmark is
resumable (a rerun with the same --out skips finished runs) and parallel-safe (two invocations with different or
overlapping --seeds share --out: a run is claimed by an exclusive lock file, a stale lock of a dead process is
taken over, and a run another process holds is left to it). Results made with other settings are refused, never
mixed in.

Statistics over seeds: paired differences with 95% bootstrap intervals, and time to a target accuracy: the steps
(and generated tokens) each arm's seed-mean curve needs to reach a held-out accuracy the baseline reaches, as a
ratio baseline / arm with a paired bootstrap interval.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
Point = tuple[int, dict]


def add_run_arguments(parser: argparse.ArgumentParser, steps: int) -> None:
    """The options every paired-seed benchmark shares (seeds, run length, eval, batch, learning rate)."""
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--eval-per-source", type=int, default=200)
    parser.add_argument("--eval-samples", type=int, default=4,
                        help="completions per held-out prompt in the sampled eval (its accuracy is their mean)")
    parser.add_argument("--prompts", type=int, default=32, help="prompts per step")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--metric", choices=("sampled", "greedy"), default="sampled",
                        help="held-out accuracy the AUC and time-to-target read (both are reported)")
    parser.add_argument("--target-frac", type=float, default=0.8,
                        help="time to target: the target is this share of the baseline's gain, from before "
                             "training to the mean of its last three evals (seed-mean curve)")
    parser.add_argument("--summarise-only", action="store_true",
                        help="start no run: summarise the finished ones in --out for --seeds")


def arms_parser(doc: str | None, steps: int, arms: list[str], out: str, **defaults: object
                ) -> argparse.ArgumentParser:
    """A benchmark's command line: the shared run options, --arms (the first is the baseline), --out and extra
    recipe overrides."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, steps=steps)
    parser.set_defaults(**defaults)
    parser.add_argument("--arms", nargs="+", choices=arms, default=arms,
                        help="the first is the baseline the others are compared with")
    parser.add_argument("--out", default=str(REPO / "runs" / out))
    parser.add_argument("override", nargs="*", help="extra key=value recipe overrides for every arm")
    return parser


def run_overrides(arm_overrides: list[str], seed: int, args: argparse.Namespace, name: str) -> list[str]:
    """The recipe overrides of one run: the arm's, then the benchmark's shared settings (the learning rate unless
    the arm sets its own), then the user's."""
    own_lr = any(o.startswith("learner.lr=") for o in arm_overrides)  # an arm may need its own (LoRA)
    return [*arm_overrides, f"run.steps={args.steps}", f"run.eval_every={args.eval_every}",
            f"run.eval_samples={args.eval_samples}", f"run.seed={seed}", f"rollout.seed={seed}",
            f"learner.seed={seed}", "run.max_train_minutes=0", f"run.name={name}",
            f"run.output_dir={Path(args.out) / 'runs'}", "run.save_final=false", "run.progress_bar=false",
            "run.tensorboard=false", f"data.n_eval_per_source={args.eval_per_source}",
            f"algorithm.prompts_per_step={args.prompts}", *([] if own_lr else [f"learner.lr={args.lr}"]),
            *args.override]


def run_arm(arm: str, seed: int, args: argparse.Namespace, arm_overrides: list[str]) -> dict | None:
    """One run's result: loaded when finished earlier, else trained now; None when another process holds it (or,
    with --summarise-only, when it has not run)."""
    name = f"{arm}-s{seed}"
    results = Path(args.out) / "results"
    results.mkdir(parents=True, exist_ok=True)
    overrides = run_overrides(arm_overrides, seed, args, name)
    recipe = getattr(args, "recipe", "quickstart")
    done = results / f"{name}.json"
    if done.is_file():
        return _load_result(done, overrides, recipe)
    if args.summarise_only or not _claim(results / f"{name}.lock"):
        return None
    try:
        result = _train(name, overrides, recipe)
        tmp = done.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"overrides": overrides, "recipe": recipe, **result}))
        os.replace(tmp, done)  # a result file is whole or absent
        return result
    finally:
        (results / f"{name}.lock").unlink(missing_ok=True)


def _load_result(path: Path, overrides: list[str], recipe: str) -> dict:
    result = json.loads(path.read_text())
    if result["overrides"] != overrides or result.get("recipe", "quickstart") != recipe:
        raise SystemExit(f"bench: {path} was made with other settings ({result.get('recipe', 'quickstart')} "
                         f"{result['overrides']}); use another --out or the same settings")
    print(f"[bench] {path.stem}: finished earlier, reused", flush=True)
    return result


def _claim(lock: Path) -> bool:
    """Create the lock exclusively; take over one whose process is gone."""
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(lock.read_text() or 0)
                os.kill(pid, 0)
            except (ValueError, ProcessLookupError, FileNotFoundError):
                lock.unlink(missing_ok=True)  # stale: its process died
                continue
            except PermissionError:
                pass  # alive, another user's
            print(f"[bench] {lock.stem}: running in process {lock.read_text()}, left to it", flush=True)
            return False
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True
    return False


def _train(name: str, overrides: list[str], recipe: str = "quickstart") -> dict:
    out_dir = Path(next(o for o in overrides if o.startswith("run.output_dir=")).split("=", 1)[1])
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "rlpost.app.cli", "train", recipe, *overrides],
                          cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"bench: the {name} run failed (exit {proc.returncode})")
    run_dir = sorted(out_dir.glob(f"{name}-*"))[-1]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    evals = json.loads((run_dir / "eval.json").read_text())
    points = [(0, evals.get("before_all") or evals["before"])]
    points += [(r["step"], {k[5:]: v for k, v in r.items() if k.startswith("eval/")}) for r in records
               if "eval/mean" in r and r["step"] > 0]
    seconds = time.perf_counter() - started
    print(f"[bench] {name}: {len(records) - 1} steps in {seconds:.0f}s, held-out mean (greedy) "
          f"{100 * points[0][1]['mean']:.1f}% -> {100 * points[-1][1]['mean']:.1f}%", flush=True)
    return {"records": records, "points": points, "run_dir": str(run_dir), "seconds": seconds}


def run_all(arms: dict[str, list[str]], args: argparse.Namespace) -> dict[tuple[str, int], dict]:
    """Every (arm, seed) of --seeds, seed by seed; the ones finished (now or before) by the time this returns."""
    results = {}
    for seed in args.seeds:
        for arm, overrides in arms.items():
            result = run_arm(arm, seed, args, overrides)
            if result is not None:
                results[(arm, seed)] = result
    return results


def run_paired(arms: dict[str, list[str]], args: argparse.Namespace) -> tuple[dict[tuple[str, int], dict], list[int]]:
    """Every run of --seeds (run_all), and the seeds every arm has finished; exits when there is none."""
    Path(args.out).mkdir(parents=True, exist_ok=True)
    results = run_all(arms, args)
    seeds = complete_seeds(results, list(arms), args.seeds)
    if not seeds:
        raise SystemExit(f"bench: no seed of {args.seeds} has every arm finished in {args.out}")
    return results, seeds


def complete_seeds(results: dict, arms: list[str], seeds: list[int]) -> list[int]:
    """The seeds every arm has finished: the paired statistics use only these."""
    return [s for s in seeds if all((a, s) in results for a in arms)]


def accuracy(point: dict, metric: str, sources: tuple[str, ...] | None = None) -> float:
    """Held-out accuracy of one eval point: 'greedy' or 'sampled' (mean@k), over all sources or a subset."""
    prefix = "" if metric == "greedy" else "sampled/"
    if sources is None:
        return point[f"{prefix}mean"]
    return sum(point[f"{prefix}{s}"] for s in sources) / len(sources)


def auc(points: list[Point], key: Callable[[dict], float]) -> float:
    """Trapezoid area under accuracy(step), divided by the step span: a mean accuracy over training."""
    xs = [p[0] for p in points]
    ys = [key(p[1]) for p in points]
    area = sum((xs[i + 1] - xs[i]) * (ys[i] + ys[i + 1]) / 2 for i in range(len(xs) - 1))
    return area / (xs[-1] - xs[0])


def bootstrap_ci(diffs: list[float], draws: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean of `diffs`, resampling them with replacement."""
    rng = random.Random(seed)
    means = sorted(sum(rng.choice(diffs) for _ in diffs) / len(diffs) for _ in range(draws))
    return means[int(0.025 * draws)], means[int(0.975 * draws) - 1]


def paired(arm_values: list[float], base_values: list[float]) -> dict:
    """arm - baseline per seed, their mean, 95% bootstrap interval and the count of positive seeds."""
    diffs = [a - b for a, b in zip(arm_values, base_values)]
    low, high = bootstrap_ci(diffs)
    return {"per_seed": diffs, "mean": sum(diffs) / len(diffs), "ci95": [low, high],
            "positive_seeds": sum(d > 0 for d in diffs)}


def first_crossing(xs: list[float], ys: list[float], target: float) -> float | None:
    """The first x at which the piecewise-linear curve reaches `target`; None when it never does."""
    if ys and ys[0] >= target:
        return xs[0]
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if y1 >= target > y0:
            return x0 + (x1 - x0) * (target - y0) / (y1 - y0)
    return None


def tokens_at(records: list[dict], step: float) -> float:
    """Completion tokens generated up to `step` (pre-pass included), linear within a step."""
    total, done = 0.0, 0.0
    for r in sorted((r for r in records if r["step"] > 0), key=lambda r: r["step"]):
        tokens = r.get("tokens/generated", 0.0) + r.get("prepass/tokens", 0.0)
        if r["step"] <= step:
            total, done = total + tokens, r["step"]
        elif r["step"] - 1 < step:
            return total + tokens * (step - done) / (r["step"] - done)
    return total


def mean_curve(runs: list[dict], key: Callable[[dict], float]) -> tuple[list[int], list[float]]:
    """Eval steps and the seed-mean accuracy at each (the runs share their eval steps)."""
    steps = [p[0] for p in runs[0]["points"]]
    return steps, [sum(key(r["points"][i][1]) for r in runs) / len(runs) for i in range(len(steps))]


def _to_target(runs: list[dict], key: Callable[[dict], float], target: float) -> tuple[float, float, bool]:
    """(steps, tokens, reached) for the seed-mean curve of `runs`; an unreached target counts as the run length
    (a lower bound on the true steps)."""
    steps, ys = mean_curve(runs, key)
    crossing = first_crossing([float(s) for s in steps], ys, target)
    at = crossing if crossing is not None else float(steps[-1])
    tokens = sum(tokens_at(r["records"], at) for r in runs) / len(runs)
    return at, tokens, crossing is not None


def time_to_target(base: list[dict], arm: list[dict], key: Callable[[dict], float], frac: float,
                   draws: int = 2000, seed: int = 0) -> dict:
    """Steps and tokens to a target accuracy, baseline / arm (above 1: the arm gets there sooner), with 95%
    intervals from resampling the paired seeds. The target is `frac` of the baseline's gain from before training
    to the mean of its last three evals; an unreached target counts as the run length, so a ratio is then a bound
    (`unreached_draws` says how often that happened)."""
    def target_of(runs: list[dict]) -> float:
        _, ys = mean_curve(runs, key)
        return ys[0] + frac * (sum(ys[-3:]) / len(ys[-3:]) - ys[0])

    def ratios(b: list[dict], a: list[dict]) -> tuple[float, float, bool]:
        target = target_of(b)
        sb, tb, rb = _to_target(b, key, target)
        sa, ta, ra = _to_target(a, key, target)
        return sb / max(sa, 1e-9), tb / max(ta, 1e-9), rb and ra

    target = target_of(base)
    (steps_b, tokens_b, _), (steps_a, tokens_a, reached) = _to_target(base, key, target), _to_target(arm, key, target)
    rng = random.Random(seed)
    boot, unreached = [], 0
    for _ in range(draws):
        picks = [rng.randrange(len(base)) for _ in base]
        s, t, ok = ratios([base[i] for i in picks], [arm[i] for i in picks])
        boot.append((s, t))
        unreached += not ok
    interval = {}
    for i, name in enumerate(("steps", "tokens")):
        values = sorted(b[i] for b in boot)
        interval[name] = [values[int(0.025 * draws)], values[int(0.975 * draws) - 1]]
    return {"target": target, "baseline_steps": steps_b, "arm_steps": steps_a, "arm_reached": reached,
            "steps_ratio": steps_b / max(steps_a, 1e-9), "steps_ratio_ci95": interval["steps"],
            "baseline_tokens": tokens_b, "arm_tokens": tokens_a, "tokens_ratio": tokens_b / max(tokens_a, 1e-9),
            "tokens_ratio_ci95": interval["tokens"], "unreached_draws": unreached / draws}


def eval_noise(runs: list[dict], metric: str) -> dict:
    """How noisy the eval is: the mean standard error of one eval point (measurement); the standard error that
    measurement alone puts on a run's AUC (trapezoid weights, evals taken as independent); and the root-mean-square
    change between successive evals (measurement plus the policy's own drift)."""
    prefix = "" if metric == "greedy" else "sampled/"
    ses = [p[1].get(f"{prefix}se/mean", math.nan) for r in runs for p in r["points"]]
    jumps = [(b[1][f"{prefix}mean"] - a[1][f"{prefix}mean"]) ** 2 for r in runs
             for a, b in zip(r["points"][1:], r["points"][2:])]
    ses = [s for s in ses if not math.isnan(s)]
    auc_ses = [auc_standard_error(r["points"], f"{prefix}se/mean") for r in runs]
    auc_ses = [s for s in auc_ses if not math.isnan(s)]
    return {"se_mean": sum(ses) / len(ses) if ses else math.nan,
            "auc_se": sum(auc_ses) / len(auc_ses) if auc_ses else math.nan,
            "successive_rms": math.sqrt(sum(jumps) / len(jumps)) if jumps else math.nan}


def auc_standard_error(points: list[Point], se_key: str) -> float:
    """The AUC's standard error from the evals' own (independent) errors: sqrt(sum (w_i se_i)^2), w_i the trapezoid
    weight of eval i divided by the step span; NaN when an eval has no error recorded."""
    xs = [p[0] for p in points]
    span = xs[-1] - xs[0]
    weights = [((xs[i] - xs[i - 1]) if i else 0) / 2 + ((xs[i + 1] - xs[i]) if i < len(xs) - 1 else 0) / 2
               for i in range(len(xs))]
    return math.sqrt(sum((w / span * p[1].get(se_key, math.nan)) ** 2 for w, p in zip(weights, points)))


def overlay_report(results: dict, seed: int, out: Path) -> Path:
    """The arms' runs of one seed overlaid by `rlpost report` (the same dashboard as any run's): out/report.png and
    out/report.md, with the recipe keys in which the arms differ."""
    from rlpost.report import report

    dirs = [Path(r["run_dir"]) for (_, s), r in results.items() if s == seed]
    return report(dirs, out)[0]


def fmt_ci(d: dict, scale: float = 100.0, unit: str = " points") -> str:
    return (f"{scale * d['mean']:+.2f}{unit}, 95% CI [{scale * d['ci95'][0]:+.2f}, {scale * d['ci95'][1]:+.2f}] "
            f"({d['positive_seeds']}/{len(d['per_seed'])} seeds positive)")


def fmt_ratio(t: dict) -> str:
    bound = "" if t["arm_reached"] else " (arm never reached it: a bound)"
    return (f"steps {t['steps_ratio']:.2f}x [{t['steps_ratio_ci95'][0]:.2f}, {t['steps_ratio_ci95'][1]:.2f}], "
            f"tokens {t['tokens_ratio']:.2f}x [{t['tokens_ratio_ci95'][0]:.2f}, {t['tokens_ratio_ci95'][1]:.2f}]"
            f"{bound}; target {100 * t['target']:.1f}%, baseline at step {t['baseline_steps']:.0f}, arm at "
            f"{t['arm_steps']:.0f}")
