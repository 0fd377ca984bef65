"""A small prior-data fitted network for learning curves (LC-PFN, Adriaensen et al. 2023), trained here from the
prior of rlpost/sweep/prior.py and cached.

The network reads a curve's first points (x, y) and, for later x, returns a distribution over y in one forward pass:
a transformer over one token per point, in which every token attends to the observed points only, and a bar
distribution head (softmax over fixed buckets, uniform density inside each). Trained on curves drawn fresh from the
prior, it approximates the Bayesian posterior predictive of that prior. The `lcpfn` package does the same at 512
dimensions, but its published weights are downloaded at run time (impossible offline) and its code no longer runs on
torch 2; this one is small enough to train in a few minutes on two CPU cores, and is built once like the base model.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rlpost.atomic import build_dir_atomic
from rlpost.sweep.prior import sample_curves

VERSION = 1  # bump when the architecture or training changes: the cache fingerprint includes it


@dataclass(frozen=True)
class PFNSettings:
    """What the cached network was trained with (its fingerprint names the cache entry)."""

    length: int = 40  # curve points the prior draws; longer curves are mapped onto 1..length
    d_model: int = 64
    layers: int = 3
    heads: int = 4
    buckets: int = 100
    steps: int = 4000
    batch: int = 64
    lr: float = 1e-3
    seed: int = 0
    falling: float = 0.2  # share of prior curves reflected into falling ones (rlpost/sweep/prior.py)

    def fingerprint(self) -> str:
        blob = json.dumps({**asdict(self), "version": VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class BarDistribution:
    """A distribution over y as probabilities of K buckets between K+1 borders, uniform inside each bucket."""

    def __init__(self, borders: torch.Tensor) -> None:
        self.borders = borders
        self.widths = borders[1:] - borders[:-1]

    def bucket(self, y: torch.Tensor) -> torch.Tensor:
        inner = self.borders[1:-1].contiguous()
        return torch.bucketize(y.clamp(self.borders[0], self.borders[-1]).contiguous(), inner, right=True)

    def log_density(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """log p(y) per element; y outside the borders counts as the edge bucket."""
        idx = self.bucket(y)
        logp = torch.log_softmax(logits, dim=-1).gather(-1, idx.unsqueeze(-1)).squeeze(-1)
        return logp - torch.log(self.widths[idx])

    def prob_above(self, logits: torch.Tensor, value: float) -> torch.Tensor:
        """P(Y > value)."""
        probs = torch.softmax(logits, dim=-1)
        share = ((self.borders[1:] - value) / self.widths).clamp(0.0, 1.0)
        return (probs * share).sum(-1)

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        centres = (self.borders[1:] + self.borders[:-1]) / 2
        return (torch.softmax(logits, dim=-1) * centres).sum(-1)

    def quantile(self, logits: torch.Tensor, q: float) -> torch.Tensor:
        """The q-quantile, interpolated inside its bucket."""
        cdf = torch.cumsum(torch.softmax(logits, dim=-1), dim=-1)
        idx = torch.searchsorted(cdf, torch.full((*cdf.shape[:-1], 1), q), right=False).clamp(max=cdf.shape[-1] - 1)
        below = torch.where(idx > 0, cdf.gather(-1, (idx - 1).clamp(min=0)), torch.zeros_like(idx, dtype=cdf.dtype))
        inside = (q - below) / (cdf.gather(-1, idx) - below).clamp(min=1e-12)
        return (self.borders[idx] + inside.clamp(0, 1) * self.widths[idx]).squeeze(-1)


class CurvePFN(nn.Module):
    """Observed points and query points in, bucket logits for each query point out."""

    def __init__(self, s: PFNSettings) -> None:
        super().__init__()
        self.length = s.length
        self.observed = nn.Linear(2, s.d_model)
        self.query = nn.Linear(1, s.d_model)
        layer = nn.TransformerEncoderLayer(s.d_model, s.heads, 4 * s.d_model, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, s.layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(s.d_model), nn.Linear(s.d_model, s.buckets))

    def forward(self, x_obs: torch.Tensor, y_obs: torch.Tensor, x_query: torch.Tensor) -> torch.Tensor:
        """x_obs, y_obs: (B, n); x_query: (B, t), x in 1..length. Returns (B, t, buckets)."""
        n, t = x_obs.shape[1], x_query.shape[1]
        scale = 1.0 / self.length
        tokens = torch.cat([self.observed(torch.stack([x_obs * scale, y_obs], -1)),
                            self.query((x_query * scale).unsqueeze(-1))], dim=1)
        mask = torch.ones(n + t, n + t, dtype=torch.bool)
        mask[:, :n] = False  # everyone sees the observed points; nobody sees a query point
        return self.head(self.encoder(tokens, mask=mask)[:, n:])


@dataclass
class Prediction:
    """The predictive distribution of one curve's value at its last point."""

    logits: torch.Tensor
    bars: BarDistribution

    def prob_above(self, value: float) -> float:
        return float(self.bars.prob_above(self.logits, value))

    def log_density(self, value: float) -> float:
        return float(self.bars.log_density(self.logits, torch.tensor(value, dtype=torch.float32)))

    def mean(self) -> float:
        return float(self.bars.mean(self.logits))

    def quantile(self, q: float) -> float:
        return float(self.bars.quantile(self.logits, q))


class Extrapolator:
    """A trained CurvePFN: the predictive distribution of a curve's final value from its first values."""

    def __init__(self, model: CurvePFN, borders: torch.Tensor, settings: PFNSettings,
                 report: dict[str, Any] | None = None) -> None:
        self.model, self.bars, self.settings = model.eval(), BarDistribution(borders), settings
        self.report = report or {}

    def predict(self, observed: Sequence[float], horizon: int) -> Prediction:
        """Observed values at points 1..len(observed) of a curve of `horizon` points; the distribution of the value
        at point `horizon`. A curve longer than the network's length is mapped onto it linearly."""
        if not 1 <= len(observed) < horizon:
            raise ValueError(f"need 1 <= observed points ({len(observed)}) < horizon ({horizon})")
        x = torch.arange(1, len(observed) + 1, dtype=torch.float32)
        end = torch.tensor([float(horizon)])
        if horizon > self.settings.length:
            stretch = (self.settings.length - 1) / (horizon - 1)
            x, end = 1 + (x - 1) * stretch, 1 + (end - 1) * stretch
        with torch.no_grad():
            logits = self.model(x[None], torch.tensor([list(observed)], dtype=torch.float32), end[None])
        return Prediction(logits[0, 0], self.bars)


def _borders(rng: np.random.Generator, s: PFNSettings) -> torch.Tensor:
    """Equal-mass bucket borders over the prior's noisy values, the outer ones widened to [-1, 2]."""
    _, noisy = sample_curves(rng, 20_000, s.length, s.falling)
    edges = np.quantile(noisy.ravel(), np.linspace(0.0, 1.0, s.buckets + 1))
    edges[0], edges[-1] = min(edges[0], -1.0), max(edges[-1], 2.0)
    return torch.tensor(edges, dtype=torch.float32)


def train_pfn(s: PFNSettings, log: Callable[[str], None] = print) -> Extrapolator:
    """Train on fresh prior curves, each batch split at a random point into observed and queried values (noisy
    targets, as in the paper); Adam with linear warm-up and cosine decay."""
    torch.manual_seed(s.seed)
    rng = np.random.default_rng(s.seed)
    borders = _borders(rng, s)
    bars, model = BarDistribution(borders), CurvePFN(s)
    opt = torch.optim.Adam(model.parameters(), lr=s.lr)
    warm = max(1, s.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / warm) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, i / s.steps))))
    x = torch.arange(1, s.length + 1, dtype=torch.float32).expand(s.batch, -1)
    start, recent = time.perf_counter(), list[float]()
    for step in range(s.steps):
        _, noisy = sample_curves(rng, s.batch, s.length, s.falling)
        y = torch.tensor(noisy, dtype=torch.float32)
        n = int(rng.integers(1, s.length))
        loss = -bars.log_density(model(x[:, :n], y[:, :n], x[:, n:]), y[:, n:]).mean()
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        recent = (recent + [loss.item()])[-200:]
        if (step + 1) % 500 == 0:
            log(f"[lc-pfn] step {step + 1}/{s.steps}: loss {np.mean(recent):.3f} "
                f"({time.perf_counter() - start:.0f}s)")
    report = {"fingerprint": s.fingerprint(), "settings": asdict(s), "final_loss": float(np.mean(recent)),
              "train_seconds": round(time.perf_counter() - start, 1),
              "parameters": sum(p.numel() for p in model.parameters())}
    return Extrapolator(model, borders, s, report)


def ensure_pfn(out_dir: Path, settings: PFNSettings | None = None, log: Callable[[str], None] = print) -> Extrapolator:
    """The network trained with `settings`, from `out_dir` when it holds one, else trained now (a few minutes) and
    saved there; written to a temporary folder and renamed into place, so an interrupted build never looks done."""
    s = settings or PFNSettings()
    found = load_pfn(out_dir)
    if found is not None and found.settings == s:
        return found
    log(f"[lc-pfn] training the learning-curve extrapolator into {out_dir} from the prior (cached afterwards)")
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    pfn = train_pfn(s, log)
    build_dir_atomic(out_dir, lambda tmp: _save(pfn, tmp))
    return pfn


def _save(pfn: Extrapolator, folder: Path) -> None:
    torch.save({"state": pfn.model.state_dict(), "borders": pfn.bars.borders}, folder / "model.pt")
    (folder / "report.json").write_text(json.dumps(pfn.report, indent=2))


def load_pfn(out_dir: Path) -> Extrapolator | None:
    """The network saved in `out_dir`, or None when there is none or it is from another version."""
    try:
        report = json.loads((out_dir / "report.json").read_text())
        s = PFNSettings(**report["settings"])
        if report.get("fingerprint") != s.fingerprint():
            return None
        saved = torch.load(out_dir / "model.pt", map_location="cpu", weights_only=True)
        model = CurvePFN(s)
        model.load_state_dict(saved["state"])
    except Exception:  # missing, truncated or from another version: any of these means "train it again"
        return None
    return Extrapolator(model, saved["borders"], s, report)
