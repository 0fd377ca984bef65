"""How well the LC-PFN extrapolator (rlpost/sweep/pfn.py, the cached network `rlpost sweep` uses) predicts a
learning curve's final value from its first points, against two simple baselines, on held-out curves from its prior
and on real rlpost held-out curves.

For every curve and number of observed points k, each method gives a predictive distribution of the last value:
- LC-PFN: its bar distribution, in one forward pass (the default network, whose prior has 20% falling curves, and
  the one trained on the paper's prior, rising curves only);
- last value: a normal centred on the last observed value;
- power law: y = c - a x^-alpha fitted to the observed points by least squares (alpha on a grid, c and a in closed
  form), a normal centred on its prediction at the last point.
The baselines' spreads are fitted by maximum likelihood on other curves (for prior curves, a separate calibration
set; for real curves, every other curve: leave one out), which favours them. Reported: the mean log-likelihood of
the true final value (higher is better) and the mean absolute error of the point prediction (LC-PFN's median).

Real curves are every rlpost run found under --runs with a held-out curve (eval/sampled/mean at each eval, the step-0
eval from eval.json): the runs the other benches leave behind (bench_curriculum, bench_allocation, bench_tools,
bench_sweep and so on) and any of your own.

    python scripts/bench_lcpfn.py
    python scripts/bench_lcpfn.py --runs 'runs/bench_sweep/**/metrics.jsonl'
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ALPHAS = np.exp(np.linspace(math.log(0.02), math.log(5.0), 60))


def power_law(y: np.ndarray, horizon: int) -> float:
    """Least-squares fit of c - a x^-alpha to y at x = 1..len(y); its value at x = horizon."""
    x = np.arange(1, len(y) + 1, dtype=float)
    best, best_sse = float(y[-1]), math.inf
    for alpha in ALPHAS:
        design = np.stack([np.ones_like(x), -(x ** -alpha)], axis=1)
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        sse = float(np.sum((design @ coef - y) ** 2))
        if sse < best_sse:
            best_sse, best = sse, float(coef[0] - coef[1] * horizon ** -alpha)
    return best


def normal_ll(residuals: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    return -0.5 * (residuals / sigma) ** 2 - np.log(sigma * math.sqrt(2 * math.pi))


def evaluate(pfns: dict[str, Any], curves: list[np.ndarray], k: int,
             calibration: list[np.ndarray] | None) -> dict[str, float]:
    """Mean log-likelihood and absolute error of the final value for each method, observing the first k points."""
    finals = np.array([c[-1] for c in curves])
    out: dict[str, float] = {"curves": len(curves)}
    for name, pfn in pfns.items():
        pfn_ll, pfn_pred = [], []
        start = time.perf_counter()
        for c in curves:
            p = pfn.predict([float(v) for v in c[:k]], len(c))
            pfn_ll.append(p.log_density(float(c[-1])))
            pfn_pred.append(p.quantile(0.5))
        out[f"{name}_ms"] = 1000 * (time.perf_counter() - start) / len(curves)
        out[f"{name}_ll"] = float(np.mean(pfn_ll))
        out[f"{name}_mae"] = float(np.mean(np.abs(np.array(pfn_pred) - finals)))
    last = np.array([c[k - 1] for c in curves])
    law = np.array([power_law(c[:k], len(c)) for c in curves])
    for name, pred in (("last", last), ("power_law", law)):
        res = finals - pred
        if calibration is not None:  # a separate set of curves of the same kind
            cal = np.array([c[-1] - (c[k - 1] if name == "last" else power_law(c[:k], len(c))) for c in calibration])
            sigma = np.full(len(res), max(float(np.sqrt(np.mean(cal ** 2))), 1e-4))
        else:  # leave one out
            total = np.sum(res ** 2)
            sigma = np.sqrt(np.maximum((total - res ** 2) / max(1, len(res) - 1), 1e-8))
        out[f"{name}_ll"] = float(np.mean(normal_ll(res, sigma)))
        out[f"{name}_mae"] = float(np.mean(np.abs(res)))
    return out


def real_curves(pattern: str) -> list[np.ndarray]:
    """eval/sampled/mean per eval, with the step-0 value from eval.json, for every finished run with at least 5
    points (a stopped sweep trial has no eval.json), each distinct curve once."""
    curves: list[np.ndarray] = []
    seen: set[tuple[float, ...]] = set()
    for path in sorted(glob.glob(pattern, recursive=True)):
        run_dir = Path(path).parent
        try:
            before = json.loads((run_dir / "eval.json").read_text()).get("before_all", {}).get("sampled/mean")
        except (OSError, ValueError):
            before = None
        points = {}
        for line in Path(path).read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if "eval/sampled/mean" in row:
                points[int(row["step"])] = float(row["eval/sampled/mean"])
        if before is not None and points and 0 not in points:
            points[0] = float(before)
        curve = tuple(points[s] for s in sorted(points))
        if len(points) >= 5 and 0 in points and curve not in seen:  # the sweep benches rerun identical trials
            seen.add(curve)
            curves.append(np.array(curve))
    return curves


METHODS = ("lcpfn", "lcpfn_paper", "last", "power_law")


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| curves | observed | n | log-lik LC-PFN | log-lik LC-PFN, paper's prior | log-lik last value | "
             "log-lik power law | MAE LC-PFN | MAE LC-PFN, paper's prior | MAE last value | MAE power law |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        best = max(METHODS, key=lambda m: r[f"{m}_ll"])
        ll = [f"**{r[f'{m}_ll']:.2f}**" if m == best else f"{r[f'{m}_ll']:.2f}" for m in METHODS]
        mae = [f"{r[f'{m}_mae']:.3f}" for m in METHODS]
        lines.append(f"| {r['data']} | {r['observed']} | {r['curves']} | " + " | ".join(ll + mae) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=str(REPO / "runs" / "**" / "metrics.jsonl"))
    parser.add_argument("--prior-curves", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=12345, help="seed of the held-out prior curves")
    parser.add_argument("--out", default=str(REPO / "runs" / "bench_lcpfn.json"))
    args = parser.parse_args()
    from rlpost.app.sweep import cached_extrapolator
    from rlpost.sweep.pfn import PFNSettings
    from rlpost.sweep.prior import sample_curves

    pfns = {"lcpfn": cached_extrapolator(PFNSettings()), "lcpfn_paper": cached_extrapolator(PFNSettings(falling=0.0))}
    rows = []
    rng = np.random.default_rng(args.seed)
    for label, length, falling in (("prior with 20% falling", 11, 0.2), ("prior with 20% falling", 21, 0.2),
                                   ("paper's prior (rising)", 21, 0.0)):
        _, held = sample_curves(rng, args.prior_curves, length, falling)
        _, cal = sample_curves(rng, args.prior_curves, length, falling)
        for frac in (0.2, 0.4, 0.6):
            k = max(3, round(frac * length))
            rows.append({"data": f"{label}, {length} points", "observed": f"{k} of {length}",
                         **evaluate(pfns, list(held), k, list(cal))})
    real = real_curves(args.runs)
    for frac in (0.3, 0.5, 0.7):
        rows.append({"data": "rlpost runs (eval/sampled/mean)", "observed": f"{int(frac * 100)}%",
                     **_real_row(pfns, real, frac)})
    print(table(rows))
    Path(args.out).write_text(json.dumps({"pfn": {k: p.report for k, p in pfns.items()}, "rows": rows,
                                          "args": vars(args)}, indent=1))
    print(f"\n[bench] LC-PFN {pfns['lcpfn'].report.get('settings')} trained in "
          f"{pfns['lcpfn'].report.get('train_seconds')} s; {len(real)} real curves of "
          f"{min(map(len, real))}-{max(map(len, real))} points; numbers: {args.out}")


def _real_row(pfns: dict[str, Any], curves: list[np.ndarray], frac: float) -> dict[str, Any]:
    """Real curves have different lengths: each observes round(frac x its length) points (at least 3)."""
    by_k: dict[int, list[np.ndarray]] = {}
    for c in curves:
        by_k.setdefault(min(len(c) - 1, max(3, round(frac * len(c)))), []).append(c)
    parts = []
    for k, group in by_k.items():
        res = evaluate(pfns, group, k, None)
        parts.append((len(group), res))
    total = sum(n for n, _ in parts)
    return {key: sum(n * r[key] for n, r in parts) / total for key in parts[0][1] if key != "curves"} | \
        {"curves": total}


if __name__ == "__main__":
    main()
