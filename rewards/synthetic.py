"""Rewards for the embedded synthetic suites: exact match of the reference answer (digit sums), and of the answer
after a reasoning trace (the trace task)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rewards.protocol import Completion, completion_text


def exact_match(prompts: Sequence[Any], completions: Sequence[Completion], completion_ids: Sequence[Sequence[int]],
                answer: Sequence[str], **_: Any) -> list[float]:
    """1.0 when the stripped completion equals the stripped reference answer, else 0.0."""
    from rlpost.embedded.tasks import score

    return [score(completion_text(c), a) for c, a in zip(completions, answer, strict=True)]


def trace_answer(prompts: Sequence[Any], completions: Sequence[Completion], completion_ids: Sequence[Sequence[int]],
                 answer: Sequence[str], **_: Any) -> list[float]:
    """The reasoning-trace task: 1.0 when the text after the completion's last '#' is the reference answer, else 0.0;
    the trace before it is not checked (rlpost/embedded/traces.py)."""
    from rlpost.embedded.traces import score

    return [score(completion_text(c), a) for c, a in zip(completions, answer, strict=True)]


def tool_answer(prompts: Sequence[Any], completions: Sequence[Completion], completion_ids: Sequence[Sequence[int]],
                answer: Sequence[str], **_: Any) -> list[float]:
    """The tool task: 1.0 when the episode's final answer (the text after its last ']', the whole completion when no
    tool was called) is the reference, else 0.0 (rlpost/embedded/tools.py)."""
    from rlpost.embedded.tools import score

    return [score(completion_text(c), a) for c, a in zip(completions, answer, strict=True)]
