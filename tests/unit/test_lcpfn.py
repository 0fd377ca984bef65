"""LC-PFN pieces (rlpost/sweep/prior.py, rlpost/sweep/pfn.py): the curve prior, the bar distribution's arithmetic
on golden values, the network's attention structure, and training from the prior with its cache."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rlpost.sweep.pfn import BarDistribution, CurvePFN, PFNSettings, ensure_pfn, load_pfn, train_pfn
from rlpost.sweep.prior import sample_curves

TINY = PFNSettings(length=8, d_model=16, layers=1, heads=2, buckets=10, steps=30, batch=16)


def test_prior_curves_rise_and_stay_in_range():
    clean, noisy = sample_curves(np.random.default_rng(0), 500, 12)
    assert clean.shape == noisy.shape == (500, 12)
    assert (clean[:, -1] > clean[:, 0]).all() and (clean >= 0).all() and (clean <= 1).all()
    noise = noisy - clean
    assert 0 < np.median(np.abs(noise)) < 0.1  # log-normal noise scale around exp(-4)
    again, _ = sample_curves(np.random.default_rng(0), 500, 12)
    assert np.array_equal(clean, again)


def test_a_share_of_prior_curves_falls():
    clean, _ = sample_curves(np.random.default_rng(1), 2000, 10, falling=0.25)
    falls = clean[:, -1] < clean[:, 0]
    assert 0.2 < falls.mean() < 0.3 and (clean >= 0).all() and (clean <= 1).all()
    rising, _ = sample_curves(np.random.default_rng(1), 2000, 10)
    assert (rising[:, -1] > rising[:, 0]).all()


def test_bar_distribution_golden_values():
    bars = BarDistribution(torch.tensor([0.0, 1.0, 2.0, 4.0]))
    logits = torch.zeros(3)  # each bucket 1/3
    assert math.isclose(float(bars.log_density(logits, torch.tensor(0.5))), math.log(1 / 3), rel_tol=1e-6)
    assert math.isclose(float(bars.log_density(logits, torch.tensor(3.0))), math.log(1 / 6), rel_tol=1e-6)
    assert math.isclose(float(bars.prob_above(logits, 1.5)), 0.5, rel_tol=1e-6)
    assert math.isclose(float(bars.prob_above(logits, 3.0)), 1 / 6, rel_tol=1e-6)
    assert float(bars.prob_above(logits, -1.0)) == pytest.approx(1.0)
    assert float(bars.prob_above(logits, 9.0)) == pytest.approx(0.0)
    assert float(bars.mean(logits)) == pytest.approx(5 / 3)
    assert float(bars.quantile(logits, 0.5)) == pytest.approx(1.5)
    assert float(bars.quantile(torch.tensor([0.0, -50.0, -50.0]), 0.5)) == pytest.approx(0.5, abs=1e-4)


def test_queries_see_only_the_observed_points():
    torch.manual_seed(0)
    model = CurvePFN(TINY).eval()
    x_obs, y_obs = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[0.2, 0.3, 0.35]])
    with torch.no_grad():
        alone = model(x_obs, y_obs, torch.tensor([[8.0]]))
        with_others = model(x_obs, y_obs, torch.tensor([[5.0, 8.0, 6.0]]))
        other_curve = model(x_obs, torch.tensor([[0.2, 0.3, 0.9]]), torch.tensor([[8.0]]))
    assert torch.allclose(alone[0, 0], with_others[0, 1], atol=1e-5)  # other queries change nothing
    assert not torch.allclose(alone, other_curve)  # the observed values do


def test_training_beats_a_uniform_guess_on_held_out_prior_curves():
    s = PFNSettings(length=10, d_model=32, layers=2, heads=2, buckets=20, steps=300, batch=32)
    pfn = train_pfn(s, log=lambda line: None)
    _, noisy = sample_curves(np.random.default_rng(123), 200, 10)
    scores = [pfn.predict(list(c[:4]), 10).log_density(float(c[-1])) for c in noisy]
    borders = pfn.bars.borders
    uniform = -math.log(float(borders[-1] - borders[0]))  # a flat density over the same support
    assert np.mean(scores) > uniform + 0.5


def test_prediction_checks_its_input_and_maps_long_curves():
    pfn = train_pfn(TINY, log=lambda line: None)
    with pytest.raises(ValueError):
        pfn.predict([0.1, 0.2], 2)
    with pytest.raises(ValueError):
        pfn.predict([], 5)
    long = pfn.predict([0.1] * 20, 30)  # beyond the network's length: mapped onto it
    assert 0.0 <= long.prob_above(0.1) <= 1.0 and long.quantile(0.05) <= long.quantile(0.95)


def test_cache_is_reused_and_keyed_by_settings(tmp_path):
    lines: list[str] = []
    first = ensure_pfn(tmp_path / "pfn", TINY, log=lines.append)
    assert any("training" in line for line in lines) and (tmp_path / "pfn" / "report.json").exists()
    lines.clear()
    again = ensure_pfn(tmp_path / "pfn", TINY, log=lines.append)
    assert lines == []  # loaded, not retrained
    observed = [0.2, 0.3, 0.35]
    assert again.predict(observed, 8).mean() == pytest.approx(first.predict(observed, 8).mean(), abs=1e-6)
    other = PFNSettings(**{**TINY.__dict__, "seed": 1})
    ensure_pfn(tmp_path / "pfn", other, log=lines.append)
    assert lines and load_pfn(tmp_path / "pfn").settings == other
    (tmp_path / "pfn" / "model.pt").write_bytes(b"broken")
    assert load_pfn(tmp_path / "pfn") is None
