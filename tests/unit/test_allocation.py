"""GVM allocation against the golden vector of seed-algorithms.md §10.4."""

from __future__ import annotations

import pytest

from rlpost.allocation import (
    gvm_allocation,
    gvm_scores,
    round_preserving_sum,
    variance_ratio_vs_uniform,
)

G, P = [2.0, 1.0, 1.0, 0.0], [0.125, 0.5, 1.0, 0.25]


def test_gvm_golden_vector():  # §10.4
    scores = gvm_scores(G, P, alpha=1e-3, beta=2.0)
    assert scores == pytest.approx([5.4841, 1.4114, 0.9995, 0.0], abs=1e-4)
    assert [s / sum(scores) for s in scores] == pytest.approx([0.6946, 0.1788, 0.1266, 0.0], abs=1e-4)
    assert gvm_allocation(G, P, 32) == [22, 6, 4, 0]


def test_variance_ratio_golden_vector():  # §10.4, without alpha: n proportional to G / sqrt(p)
    g, p = [2.0, 1.0, 1.0], [0.125, 0.5, 1.0]
    optimal = [gi / pi ** 0.5 for gi, pi in zip(g, p)]  # continuous allocation, any scale
    assert variance_ratio_vs_uniform(g, p, optimal) == pytest.approx(65.14 / 105, abs=1e-3)
    assert variance_ratio_vs_uniform(g, p, [5, 5, 5]) == pytest.approx(1.0)


def test_prompts_that_never_succeed_get_nothing_and_the_total_is_kept():
    assert gvm_allocation([1.0, 3.0], [0.0, 0.5], 16) == [0, 16]
    assert gvm_allocation([0.0, 0.0], [0.5, 0.5], 16) == [0, 0]
    for total in range(0, 40):
        assert sum(round_preserving_sum([0.3, 0.3, 0.4, 1e-9], total)) == total


def test_continuous_allocation_keeps_the_total_and_the_predicted_ratio_is_finite():
    from rlpost.allocation import gvm_continuous

    cont = gvm_continuous(G, P, 32)
    assert sum(cont) == pytest.approx(32) and cont[3] == 0
    assert variance_ratio_vs_uniform(G[:3], P[:3], gvm_continuous(G[:3], P[:3], 24)) < 1
