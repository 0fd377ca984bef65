"""The learning-curve prior LC-PFN is trained on (Adriaensen et al. 2023, after Domhan et al. 2015), in numpy.

A curve over epochs x = 1..L is a weighted sum of three parametric families with random parameters (the paper's
"peaked" priors), kept only when it rises from its first to its last point and stays within [0, 1]; observations add
Gaussian noise whose scale is log-normal. Rejection is vectorised: a batch of candidates is drawn at once and the
accepted ones kept, so a training batch of thousands of curves takes milliseconds.
"""

from __future__ import annotations

import numpy as np

FAMILIES = ("pow3", "ilog2", "janoschek")


def _pow3(x: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """c - a x^-alpha; a ~ U(-0.6, 0.6), c ~ U(0, 1.25), alpha ~ LogNormal(0, 2)."""
    a, c = rng.uniform(-0.6, 0.6, (n, 1)), rng.uniform(0.0, 1.25, (n, 1))
    alpha = rng.lognormal(0.0, 2.0, (n, 1))
    with np.errstate(over="ignore", invalid="ignore"):
        return c - a * x ** (-alpha)


def _ilog2(x: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """c - a / log(x + 1); c ~ U(0, 1), a ~ U(-0.5, 0.5)."""
    c, a = rng.uniform(0.0, 1.0, (n, 1)), rng.uniform(-0.5, 0.5, (n, 1))
    return c - a / np.log(x + 1.0)


def _janoschek(x: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """a - (a - beta) exp(-k x^delta); a ~ U(0, 1), beta ~ U(0, 2), k ~ LogNormal(-2, 1), delta ~ LogNormal(0, .5)."""
    a, beta = rng.uniform(0.0, 1.0, (n, 1)), rng.uniform(0.0, 2.0, (n, 1))
    k, delta = rng.lognormal(-2.0, 1.0, (n, 1)), rng.lognormal(0.0, 0.5, (n, 1))
    with np.errstate(over="ignore", invalid="ignore"):
        return a - (a - beta) * np.exp(-k * x**delta)


def sample_curves(rng: np.random.Generator, n: int, length: int, falling: float = 0.0) -> tuple[np.ndarray,
                                                                                                np.ndarray]:
    """`n` curves of `length` points from the prior: (noise-free curves, noisy observations), each (n, length).

    `falling`: the share of curves reflected to 1 - y, so they fall instead of rising. The paper's prior (0) only
    rises; an RL run with too high a learning rate collapses, and a network that has never seen a falling curve
    predicts its recovery (measured in README, Sweeps)."""
    x = np.arange(1, length + 1, dtype=np.float64)[None, :]
    clean: list[np.ndarray] = []
    have = 0
    while have < n:
        m = max(64, 3 * (n - have))
        weights = rng.uniform(0.0, 1.0, (m, len(FAMILIES)))
        y = (weights[:, :1] * _pow3(x, rng, m) + weights[:, 1:2] * _ilog2(x, rng, m)
             + weights[:, 2:] * _janoschek(x, rng, m))
        ok = np.isfinite(y).all(axis=1) & (y[:, -1] > y[:, 0]) & (y >= 0).all(axis=1) & (y <= 1).all(axis=1)
        clean.append(y[ok])
        have += int(ok.sum())
    curves = np.concatenate(clean)[:n]
    if falling:
        curves = np.where(rng.uniform(0.0, 1.0, (n, 1)) < falling, 1.0 - curves, curves)
    sigma = np.exp(rng.normal(-4.0, 1.0, (n, 1)))
    return curves, curves + rng.normal(0.0, 1.0, curves.shape) * sigma
