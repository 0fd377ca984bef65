"""The reward-function protocol: how rlpost calls a plugin, and the decorator that declares its calling style.

A reward function is called with keyword arguments only, the contract of TRL's GRPOTrainer, so TRL reward
functions work unchanged:

    fn(prompts=[...], completions=[...], completion_ids=[[...]], **columns) -> list[float | None]

one value per completion (None: "no score from this function"; if every function says None the sample is skipped).
`columns` holds every dataset column (one entry per completion, e.g. `answer`, `data_source`), the run columns
`step`, `max_new_tokens` and (with a length-budget curriculum) `length_budget`, `components` (the values of the
functions listed before this one, by name) and this function's `reward.args` entry. A function without **kwargs
receives only the arguments it names.

Calling styles, declared with `@reward(...)` (undecorated functions are batched, like TRL's):
- batched (default): one call per chunk of completions; `batch_size` caps the chunk (e.g. a model-based verifier);
- group: one call per prompt group (all samples of one prompt together), e.g. Kimi's length penalty;
- async: `async def` functions are awaited in the worker; nothing to declare.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

RUN_COLUMNS = ("step", "max_new_tokens", "length_budget", "components")


@dataclass(frozen=True)
class RewardStyle:
    """How the worker calls one function: per prompt group or in batches of at most `batch_size` completions."""

    group: bool = False
    batch_size: int | None = None


def reward(*, group: bool = False, batch_size: int | None = None) -> Callable[[F], F]:
    """Declare a reward function's calling style (see the module docstring); the function itself is unchanged."""
    if batch_size is not None and batch_size < 1:
        raise ValueError("batch_size must be at least 1")

    def mark(fn: F) -> F:
        fn.__rlpost_reward__ = RewardStyle(group=group, batch_size=batch_size)  # type: ignore[attr-defined]
        return fn

    return mark


def style_of(fn: Callable[..., Any]) -> RewardStyle:
    """The declared calling style, or the batched default."""
    style = getattr(fn, "__rlpost_reward__", None)
    return style if isinstance(style, RewardStyle) else RewardStyle()
