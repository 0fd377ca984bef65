"""Length rewards, on token lengths (`len(completion_ids[i])`): Kimi k1.5's group length penalty, DAPO's soft
overlong penalty, and a length-budget reward for the Train Long, Think Short curriculum.

Each returns a term meant to be added to a correctness reward (the recipe's reward weights scale it). They read token
lengths only, so plain-text and chat completions (rewards/protocol.py) score the same.
Leaves out: lengths of the thinking trace alone (Train Long, Think Short applies its length term to the trace, §4.1;
here it is the whole completion) and Kimi's long2short phase (a second run with a smaller max_new_tokens).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rewards.protocol import Completion, reward
from rlpost.shaping import overlong_penalty

BUDGET_SHAPES = ("within", "triangular", "step")


def kimi_length_rewards(lengths: Sequence[int], correct: Sequence[bool]) -> list[float]:
    """Kimi k1.5 §2.3.3 (research notes §5.4): λ_i = 0.5 - (len_i - min) / (max - min) over one prompt's group;
    λ_i when correct, min(0, λ_i) when wrong, so short right answers gain and long wrong ones lose. All 0 when every
    length is equal.
    """
    shortest, longest = min(lengths), max(lengths)
    if longest == shortest:
        return [0.0] * len(lengths)
    lambdas = [0.5 - (n - shortest) / (longest - shortest) for n in lengths]
    return [lam if ok else min(0.0, lam) for lam, ok in zip(lambdas, correct, strict=True)]


@reward(group=True)
def kimi_length_penalty(prompts: Sequence[Any], completions: Sequence[Completion],
                        completion_ids: Sequence[Sequence[int]],
                        components: Mapping[str, Sequence[float]] | None = None, step: int | None = None,
                        accuracy: str = "", threshold: float = 0.5, warmup_steps: int = 0,
                        **_: Any) -> list[float]:
    """Kimi k1.5's length reward for one prompt group (see `kimi_length_rewards`).

    Correctness is read from the reward listed before this one named `accuracy` (default: the first listed): a
    sample is correct when that value exceeds `threshold` (NaN, "no score", counts as wrong). Kimi switches the
    penalty on after a warm-up: zeros while `step < warmup_steps`.
    """
    if not components:
        raise ValueError("kimi_length_penalty needs an accuracy reward listed before it in reward.functions "
                         "(it reads correctness from that reward's values)")
    name = accuracy or next(iter(components))
    if name not in components:
        raise ValueError(f"kimi_length_penalty: accuracy={name!r} is not a reward listed before it "
                         f"(have {', '.join(components)})")
    if step is not None and step < warmup_steps:
        return [0.0] * len(completions)
    correct = [not math.isnan(v) and v > threshold for v in components[name]]
    return kimi_length_rewards([len(ids) for ids in completion_ids], correct)


def dapo_overlong(prompts: Sequence[Any], completions: Sequence[Completion], completion_ids: Sequence[Sequence[int]],
                  max_new_tokens: int | None = None, max_length: int = 0, buffer: int = 0, factor: float = 1.0,
                  **_: Any) -> list[float]:
    """DAPO's soft overlong punishment (research notes §1.4): 0 up to `max_length - buffer` tokens, then falling
    linearly to `-factor` at `max_length`. `max_length` 0 means the run's `max_new_tokens`; `buffer` 0 means a fifth
    of `max_length` (DAPO: 4096 of 20480).
    """
    limit = max_length or max_new_tokens or 0
    if limit <= 0:
        raise ValueError("dapo_overlong needs reward.args max_length or the run's max_new_tokens column")
    width = buffer or limit // 5
    return [overlong_penalty(len(ids), limit, width, factor) for ids in completion_ids]


def budget_score(length: int, budget: float, shape: str = "within") -> float:
    """The length term for `length` tokens against budget B: 'within' 1 up to B; 'triangular' length/B up to B;
    'step' 1 up to B and 0 beyond; 'within' and 'triangular' then fall linearly to 0 at 2B.
    """
    if shape not in BUDGET_SHAPES:
        raise ValueError(f"length_budget: unknown shape {shape!r}; choose one of {', '.join(BUDGET_SHAPES)}")
    if length <= budget:
        return length / budget if shape == "triangular" else 1.0
    return 0.0 if shape == "step" else max(0.0, 2.0 - length / budget)


def length_budget_reward(prompts: Sequence[Any], completions: Sequence[Completion],
                         completion_ids: Sequence[Sequence[int]], length_budget: float | None = None,
                         shape: str = "within", **_: Any) -> list[float]:
    """Train Long, Think Short's length-efficiency term against the curriculum's current budget B(t), the
    `length_budget` run column (research notes §4), shaped by `shape` (see `budget_score`).

    The paper's exact shape is unverified (§4.1: described secondhand as peaking at the budget, i.e. 'triangular'),
    so all three are offered; 'within' (no reward for being shorter than needed) is the default.
    """
    if length_budget is None:
        raise ValueError("length_budget reward needs the length_budget column: set sampler.budget_initial to turn "
                         "on the length-budget curriculum")
    if length_budget <= 0:
        raise ValueError(f"length_budget must be positive, got {length_budget}")
    return [budget_score(len(ids), length_budget, shape) for ids in completion_ids]
