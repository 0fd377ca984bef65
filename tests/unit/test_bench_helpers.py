"""The benchmark scripts' statistics (their numbers end up in README and issue notes) and their --help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

from bench_allocation import accuracy_at_tokens, tokens_at  # noqa: E402
from bench_curriculum import auc, bootstrap_ci, rollout_share  # noqa: E402


def test_auc_is_the_mean_accuracy_over_steps():
    assert auc([(0, {"mean": 0.5}), (10, {"mean": 0.5}), (20, {"mean": 0.5})], lambda a: a["mean"]) == 0.5
    assert auc([(0, {"mean": 0.0}), (10, {"mean": 1.0})], lambda a: a["mean"]) == 0.5
    assert auc([(0, {"mean": 0.0}), (10, {"mean": 1.0}), (30, {"mean": 1.0})], lambda a: a["mean"]) == \
        pytest.approx((5 + 20) / 30)


def test_bootstrap_interval_brackets_the_mean_and_collapses_for_equal_values():
    low, high = bootstrap_ci([1.0, 2.0, 3.0, 4.0])
    assert low < 2.5 < high and low >= 1.0 and high <= 4.0
    assert bootstrap_ci([2.0, 2.0]) == (2.0, 2.0)


def test_token_accounting_and_interpolation():
    records = [{"step": 0}, {"step": 1, "tokens/generated": 10.0, "prepass/tokens": 5.0},
               {"step": 2, "tokens/generated": 10.0}]
    assert tokens_at(records, 1) == 15 and tokens_at(records, 2) == 25
    assert accuracy_at_tokens([(0, 0.2), (10, 0.4), (20, 0.8)], 15) == pytest.approx(0.6)
    share = rollout_share([{"sampler/count/a": 3.0, "sampler/count/b": 1.0}], ("a",))
    assert share == 0.75


@pytest.mark.parametrize("script", ["bench_curriculum.py", "bench_allocation.py"])
def test_bench_scripts_explain_themselves(script):
    out = subprocess.run([sys.executable, str(SCRIPTS / script), "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "--seeds" in out and "paired" in out


def test_soak_slope_is_mib_per_hundred_steps():
    from soak_memory import slope

    assert slope([(10, 100.0), (20, 101.0), (30, 102.0)]) == pytest.approx(10.0)
    assert slope([(10, 50.0), (20, 50.0), (30, 50.0)]) == 0.0
