#!/usr/bin/env python
"""GVM rollout allocation on the embedded suite: a mechanism check at a frozen checkpoint, then learning curves.

1. Mechanism (no training, plain torch on the cached base model, seconds to minutes): M prompts from sum5-sum9; a
   pre-pass of N' samples per prompt gives p_i and G_i (embedding-gradient norm, actors/gradnorm.py); uniform and GVM
   allocations of the same total N are each sampled `--repeats` times, and the variance of the normalised gradient
   estimate g = sum_i sum_{accepted j} grad(-log pi(y_ij)) / (n_i p_i) w.r.t. the input embedding is measured. The
   measured ratio GVM/uniform is printed beside GVM's predicted ratio. Prompts whose pre-pass accepted nothing get no
   samples in either arm (both estimators target the same prompts).
2. Learning curves (real `rlpost train quickstart` runs, paired seeds, `--algorithm grpo` or `raft_pp`): the
   arms of `--arms` among fixed n=8 (the baseline), GVM with its pre-pass every step (`gvm`) or, as GVM's code,
   once per iteration of 9 steps over the iteration's prompts (`gvm_iter`), equal-compute uniform (`fixed16`: the
   same completions as a per-step pre-pass plus training) and the online variant (`gvm_online`). Held-out accuracy
   (mean@k sampled, or greedy: --metric) against update steps (AUC) and against generated tokens (pre-pass
   included), paired differences to fixed n with 95% bootstrap intervals over seeds, and the time to a target
   accuracy: steps and tokens for each arm's seed-mean curve to reach what fixed n reaches (GVM's paper: 2-4x
   fewer steps). Runs are resumable and parallel-safe (scripts/_paired.py).

    python scripts/bench_allocation.py                        # smoke: mechanism + 2 seeds x 60 steps
    python scripts/bench_allocation.py --algorithm raft_pp --seeds 0 1 2 3 4 5 --steps 90 --skip-mechanism
    python scripts/bench_allocation.py --mechanism-only
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _paired import (  # noqa: E402
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
    tokens_at,
)

from actors.gradnorm import embedding_grad_norms  # noqa: E402
from rlpost.allocation import gvm_allocation, gvm_continuous, variance_ratio_vs_uniform  # noqa: E402

ARMS = {"fixed8": ["allocator.kind=fixed"],
        "gvm": ["allocator.kind=gvm", "allocator.prepass_samples=8"],
        "gvm_iter": ["allocator.kind=gvm", "allocator.prepass_samples=8", "allocator.schedule=iteration"],
        "fixed16": ["allocator.kind=fixed", "rollout.samples_per_prompt=16"],
        "gvm_online": ["allocator.kind=gvm_online"]}


def _sample(model, tokenizer, prompt_ids: list[int], n: int, max_new: int, generator) -> list[list[int]]:
    """n completions at temperature 1 (token ids, EOS and padding cut)."""
    if n <= 0:
        return []
    ids = torch.tensor([prompt_ids] * n)
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0,
                             top_k=0, max_new_tokens=max_new, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id)
    completions = []
    for row in out[:, len(prompt_ids):].tolist():
        cut = row.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in row else len(row)
        completions.append([t for t in row[:cut] if t != tokenizer.pad_token_id] or [tokenizer.eos_token_id])
    return completions


def _accepted(tokenizer, completion: list[int], answer: str) -> bool:
    return tokenizer.decode(completion, skip_special_tokens=True).strip() == answer


def _estimate(model, rows, prompt_ids, counts, p, tokenizer, max_new, generator) -> torch.Tensor:
    """One draw of the normalised gradient estimate w.r.t. the input embedding (a flat vector)."""
    sequences, lens, weights = [], [], []
    for row, ids, n, p_i in zip(rows, prompt_ids, counts, p):
        for completion in _sample(model, tokenizer, ids, n, max_new, generator):
            if _accepted(tokenizer, completion, row["answer"]):
                sequences.append(ids + completion)
                lens.append(len(ids))
                weights.append(1.0 / (n * p_i))
    embed = model.get_input_embeddings().weight
    if not sequences:
        return torch.zeros_like(embed).flatten()
    width = max(map(len, sequences))
    ids = torch.tensor([s + [tokenizer.pad_token_id] * (width - len(s)) for s in sequences])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences])
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    logp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    pos = torch.arange(width - 1)[None, :]
    resp = (pos >= torch.tensor(lens)[:, None] - 1) & (pos < mask.sum(1)[:, None] - 1)
    loss = -(logp * resp * torch.tensor(weights)[:, None]).sum()
    (grad,) = torch.autograd.grad(loss, embed)
    return grad.flatten().detach()


def mechanism(args: argparse.Namespace) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from actors.runtime import cache_dir
    from rlpost.embedded.model import ensure_base_model
    from rlpost.embedded.tasks import make_suite

    path = ensure_base_model(cache_dir() / "base_model")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    suite = make_suite(200, 0, seed=0, sources=("sum5", "sum7", "sum9"))["train"]
    rows = [suite[i] for i in torch.randperm(len(suite), generator=torch.Generator().manual_seed(0))[: args.prompts]]
    prompt_ids = [tokenizer(r["prompt"])["input_ids"] for r in rows]
    generator = torch.Generator().manual_seed(1)
    started = time.perf_counter()
    p, g = [], []
    for row, ids in zip(rows, prompt_ids):
        completions = _sample(model, tokenizer, ids, args.prepass, args.max_new_tokens, generator)
        accepted = [c for c in completions if _accepted(tokenizer, c, row["answer"])]
        p.append(len(accepted) / len(completions))
        norms = embedding_grad_norms(model, [ids + c for c in accepted], [len(ids)] * len(accepted)) if accepted else []
        g.append(sum(norms) / len(norms) if norms else 0.0)
    live = [i for i in range(len(rows)) if p[i] > 0]
    rows, prompt_ids = [rows[i] for i in live], [prompt_ids[i] for i in live]
    p, g = [p[i] for i in live], [g[i] for i in live]
    total = args.samples_per_prompt * len(rows)
    allocations = {"uniform": [args.samples_per_prompt] * len(rows), "gvm": gvm_allocation(g, p, total)}
    predicted = variance_ratio_vs_uniform(g, p, gvm_continuous(g, p, total))  # before rounding
    measured = {}
    for name, counts in allocations.items():
        draws = torch.stack([_estimate(model, rows, prompt_ids, counts, p, tokenizer, args.max_new_tokens, generator)
                             for _ in range(args.repeats)])
        measured[name] = float(((draws - draws.mean(0)) ** 2).sum(1).mean() * args.repeats / (args.repeats - 1))
    result = {"prompts_with_signal": len(rows), "prompts_sampled": args.prompts, "total_samples": total,
              "accept_rates": p, "grad_norms": g, "gvm_counts": allocations["gvm"],
              "variance": measured, "measured_ratio": measured["gvm"] / measured["uniform"],
              "predicted_ratio": predicted, "repeats": args.repeats, "seconds": time.perf_counter() - started}
    print(f"[mechanism] {len(rows)} of {args.prompts} prompts accepted something in the pre-pass ({args.prepass} "
          f"samples each); budget {total} samples; GVM n_i = {allocations['gvm']}")
    print(f"[mechanism] gradient variance GVM / uniform: measured {result['measured_ratio']:.3f} "
          f"({args.repeats} draws each), predicted {predicted:.3f} (unrounded allocation; with rounding "
          f"{variance_ratio_vs_uniform(g, p, allocations['gvm']):.3f})  ({result['seconds']:.0f}s)", flush=True)
    return result


def accuracy_at_tokens(points: list[tuple[float, float]], budget: float) -> float:
    """Held-out accuracy at a token budget, linear between eval points."""
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= budget <= x1:
            return y0 + (y1 - y0) * (budget - x0) / max(x1 - x0, 1e-9)
    return points[-1][1]


def curves(args: argparse.Namespace) -> dict:
    arms = {arm: [*ARMS[arm], f"algorithm.preset={args.algorithm}"] for arm in args.arms}
    results = run_all(arms, args)
    seeds = complete_seeds(results, args.arms, args.seeds)
    if not seeds:
        raise SystemExit(f"bench: no seed of {args.seeds} has every arm finished in {args.out}")
    results = {(a, s): r for (a, s), r in results.items() if s in seeds}
    key = lambda point: accuracy(point, args.metric)  # noqa: E731
    by_tokens = {k: [(tokens_at(r["records"], step), key(acc)) for step, acc in r["points"]]
                 for k, r in results.items()}
    budget = min(v[-1][0] for v in by_tokens.values())  # the token count every arm reached
    summary: dict = {"seeds": seeds, "algorithm": args.algorithm, "metric": args.metric, "token_budget": budget,
                     "arms": {}}
    for arm in args.arms:
        rows = [results[(arm, s)] for s in seeds]
        summary["arms"][arm] = {
            "auc_steps": [auc(r["points"], key) for r in rows],
            "acc_at_budget": [accuracy_at_tokens(by_tokens[(arm, s)], budget) for s in seeds],
            "final_mean": [key(r["points"][-1][1]) for r in rows],
            "tokens_total": [by_tokens[(arm, s)][-1][0] for s in seeds],
            "eval_noise": {m: eval_noise(rows, m) for m in ("greedy", "sampled")}}
    base = args.arms[0]
    for arm in args.arms[1:]:
        for metric in ("auc_steps", "acc_at_budget"):
            summary[f"diff_{arm}_{metric}"] = paired(summary["arms"][arm][metric], summary["arms"][base][metric])
        summary[f"to_target_{arm}"] = time_to_target([results[(base, s)] for s in seeds],
                                                     [results[(arm, s)] for s in seeds], key, args.target_frac)
    _plot(results, by_tokens, Path(args.out) / "allocation.png", args.arms)
    overlay_report({k: v for k, v in results.items() if k[1] == seeds[0]}, seeds[0], Path(args.out))
    return summary


def _plot(results: dict, by_tokens: dict, path: Path, arms: list[str]) -> None:
    from rlpost.metrics import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    colours = dict(zip(arms, ("tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange")))
    for (arm, seed), r in results.items():
        first = seed == min(s for a, s in results if a == arm)
        axes[0].plot([p[0] for p in r["points"]], [p[1]["mean"] for p in r["points"]], color=colours[arm],
                     alpha=0.8, label=arm if first else None)
        axes[1].plot([x for x, _ in by_tokens[(arm, seed)]], [y for _, y in by_tokens[(arm, seed)]],
                     color=colours[arm], alpha=0.8, label=arm if first else None)
    axes[0].set_xlabel("update step")
    axes[1].set_xlabel("generated tokens (pre-pass included)")
    for ax in axes:
        ax.set_ylabel("held-out accuracy, mean over sources")
        ax.legend(fontsize=8)
    save_figure(fig, path)


def print_curves(c: dict, args: argparse.Namespace) -> None:
    print(f"\n{c['algorithm']}, seeds {c['seeds']}, {args.steps} steps, {args.prompts} prompts per step; accuracy: "
          f"{c['metric']}; token budget compared: {c['token_budget']:.0f}")
    print(f"{'arm':<11} {'AUC steps':>10} {'acc @ budget':>13} {'final':>7} {'tokens':>9}")
    for arm, a in c["arms"].items():
        avg = {k: sum(v) / len(v) for k, v in a.items() if isinstance(v, list)}
        print(f"{arm:<11} {100 * avg['auc_steps']:>9.1f}% {100 * avg['acc_at_budget']:>12.1f}% "
              f"{100 * avg['final_mean']:>6.1f}% {avg['tokens_total']:>9.0f}")
    base = args.arms[0]
    for key, d in c.items():
        if key.startswith("diff_"):
            print(f"{key[5:]} vs {base}: {fmt_ci(d)}, per seed {[round(100 * x, 2) for x in d['per_seed']]}")
        if key.startswith("to_target_"):
            print(f"time to target, {base} / {key[10:]}: {fmt_ratio(d)}")
    for m, noise in c["arms"][base]["eval_noise"].items():
        print(f"eval noise ({m}): standard error of one eval {100 * noise['se_mean']:.2f} points, of a run's AUC "
              f"{100 * noise['auc_se']:.2f}; rms change between successive evals {100 * noise['successive_rms']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, steps=60)  # --prompts is also the mechanism check's prompt count
    parser.add_argument("--algorithm", default="grpo", help="algorithm.preset of every arm (grpo, raft_pp, ...)")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=["fixed8", "gvm_iter"],
                        help="the first is the baseline the others are compared with")
    parser.add_argument("--prepass", type=int, default=8, help="mechanism: pre-pass samples per prompt")
    parser.add_argument("--samples-per-prompt", type=int, default=8, help="mechanism: budget per prompt")
    parser.add_argument("--repeats", type=int, default=40, help="mechanism: draws of each estimator")
    parser.add_argument("--max-new-tokens", type=int, default=4)
    parser.add_argument("--mechanism-only", action="store_true")
    parser.add_argument("--skip-mechanism", action="store_true")
    parser.add_argument("--out", default=None, help="default: runs/bench_allocation[_<algorithm>]")
    parser.add_argument("override", nargs="*", help="extra key=value recipe overrides for every arm")
    args = parser.parse_args()
    args.out = args.out or str(Path(__file__).resolve().parents[1] / "runs" / (
        "bench_allocation" + ("" if args.algorithm == "grpo" else f"_{args.algorithm}")))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    summary: dict = {"settings": vars(args)}
    if not args.skip_mechanism and not args.summarise_only:
        summary["mechanism"] = mechanism(args)
    if not args.mechanism_only:
        summary["curves"] = curves(args)
        print_curves(summary["curves"], args)
    (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"[bench] {Path(args.out) / 'summary.json'}")


if __name__ == "__main__":
    main()
