"""DAPO golden vectors (seed-algorithms.md §10.7): overlong shaping and the dynamic-sampling group filter."""

import pytest

from rlpost.shaping import informative_group, overlong_penalty


def test_overlong_shaping_golden():
    assert overlong_penalty(16384, 20480, 4096, 1.0) == 0.0
    assert overlong_penalty(18432, 20480, 4096, 1.0) == pytest.approx(-0.5)
    assert overlong_penalty(20480, 20480, 4096, 1.0) == pytest.approx(-1.0)
    assert overlong_penalty(100, 20480, 4096, 1.0) == 0.0  # short completions are never rewarded
    assert overlong_penalty(18432, 20480, 4096, 0.5) == pytest.approx(-0.25)
    with pytest.raises(ValueError):
        overlong_penalty(10, 20, 0)


def test_group_filter_golden():
    assert not informative_group([1, 1, 1, 1])
    assert not informative_group([0, 0, 0, 0])
    assert informative_group([1, 0, 0, 0])
    assert not informative_group([1])  # a singleton has no group baseline
