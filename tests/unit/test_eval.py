"""Held-out evaluation: greedy, and mean@k sampled accuracy with its standard error over prompts."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from rlpost.prepass import accuracy_only, accuracy_with_error, evaluate
from rlpost.types import Prompt


def test_standard_error_golden_values():
    result = accuracy_with_error({"a": [1.0, 0.0, 1.0, 0.0], "b": [0.5, 0.5, 1.0, 0.0]})
    assert result["a"] == 0.5 and result["b"] == 0.5 and result["mean"] == 0.5
    se_a = math.sqrt((4 * 0.25) / 3 / 4)  # sample variance 1/3 over 4 prompts
    se_b = math.sqrt((0 + 0 + 0.25 + 0.25) / 3 / 4)
    assert result["se/mean"] == pytest.approx(math.sqrt(se_a ** 2 + se_b ** 2) / 2)
    assert accuracy_only(result) == {"a": 0.5, "b": 0.5, "mean": 0.5}


def test_standard_error_leaves_out_unscored_and_single_prompt_sources():
    result = accuracy_with_error({"a": [1.0, float("nan"), 0.0], "b": [1.0]})
    assert result["a"] == 0.5 and result["b"] == 1.0
    assert result["se/mean"] == pytest.approx(math.sqrt(0.5 / 2) / 2)  # only 'a' has a variance; the mean is over 2
    assert math.isnan(accuracy_with_error({"a": [1.0]})["se/mean"])


class _Rollouts:
    """Answers request i's j-th completion correctly when (i + j) is even: per prompt 1/2, 1/3 or 2/3 correct."""

    def __init__(self):
        self.asked: list[tuple[int, bool]] = []

    def requests(self, prompts, step, n, greedy=False, round_=0):
        self.asked.append((n, greedy))
        return [SimpleNamespace(n=n, index=i) for i, _ in enumerate(prompts)]

    def generate(self, prompts, requests):
        return [SimpleNamespace(prompt=p, samples=[SimpleNamespace(accuracy=float((r.index + j) % 2 == 0),
                                                                   token_ids=[0] * (1 + j)) for j in range(r.n)])
                for p, r in zip(prompts, requests)]

    def score(self, groups, run, where):
        return groups


def _prompts(n: int) -> list[Prompt]:
    return [Prompt(uid=i, text="1=", token_ids=[1], answer="1", data_source="s") for i in range(n)]


def test_sampled_eval_averages_k_completions_per_prompt():
    rollouts = _Rollouts()
    sampled = evaluate(rollouts, _prompts(4), {}, sampled=True, k=3)
    assert rollouts.asked == [(3, False)]
    assert sampled["s"] == pytest.approx((2 / 3 + 1 / 3 + 2 / 3 + 1 / 3) / 4)
    assert sampled["se/mean"] == pytest.approx(math.sqrt(4 * (1 / 6) ** 2 / 3 / 4))
    greedy = evaluate(rollouts, _prompts(4), {})
    assert rollouts.asked[-1] == (1, True) and greedy["s"] == 0.5
    assert sampled["len/mean"] == 2.0 and greedy["len/mean"] == 1.0  # lengths 1, 2, 3 per prompt; greedy 1
