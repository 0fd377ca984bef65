"""Golden vectors for group advantages (seed-algorithms.md §10.1) and the conventions around them."""

import pytest

from rlpost.advantages import batch_advantages, group_advantages


def test_grpo_unbiased_std_golden():
    adv = group_advantages([1, 0, 0, 0], std_normalize=True, ddof=1, eps=1e-6)
    assert adv == pytest.approx([1.499997, -0.499999, -0.499999, -0.499999], abs=1e-6)


def test_dr_grpo_mean_only_golden():
    assert group_advantages([1, 0, 0, 0], std_normalize=False) == pytest.approx([0.75, -0.25, -0.25, -0.25])


def test_singleton_rules():
    assert group_advantages([1.0], singleton_rule="raw") == [1.0]
    assert group_advantages([1.0], singleton_rule="zero") == [0.0]
    with pytest.raises(ValueError):
        group_advantages([1.0], singleton_rule="nope")


def test_population_std_differs_from_unbiased():
    biased = group_advantages([1, 0], ddof=0, eps=0.0)
    unbiased = group_advantages([1, 0], ddof=1, eps=0.0)
    assert biased == pytest.approx([1.0, -1.0])
    assert unbiased == pytest.approx([0.70710678, -0.70710678])


def test_constant_group_has_zero_advantage_and_is_counted():
    values, metrics = batch_advantages([[1, 1, 1], [1, 0, 0]], std_normalize=True, ddof=1, eps=1e-6,
                                       singleton_rule="raw")
    assert values[0] == [0.0, 0.0, 0.0]
    assert metrics["adv/zero_signal_group_frac"] == 0.5
    assert sum(values[1]) == pytest.approx(0.0, abs=1e-9)
