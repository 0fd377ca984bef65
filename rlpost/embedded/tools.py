"""The embedded tool-use task: digit sums that the model may answer directly or through an `add` tool.

The prompt is the digit-sum suite's ("3527="). In the tag format (rlpost/episodes.py) the model may write
`[add:3527]`; the environment answers `[=17]` and the model then writes the answer ("17"). Answering directly
works for short sums; the longest (sum13) are out of reach of the tiny model's arithmetic, so they are solved only by
calling the tool, which asks the model to copy the digits and then the result. The base model (`tool_settings` in
rlpost/embedded/model.py) is warm-started to call the tool on a small share of prompts of every length, so greedy
decoding answers directly (near 0 on sum13) while sampling sometimes calls the tool: RL has a behaviour to reinforce.

`DigitTools` is written to TRL's environment contract (reset, a typed and documented tool method), and is what the
recipe names (`environment.factory: rlpost.embedded.tools:DigitTools`).
"""

from __future__ import annotations

import random
from typing import Any

TOOL_CHARS = "!"  # the error replies' mark ('[!...]'): only the tool task's tokenizer has it
TOOL_SOURCES: tuple[str, ...] = ("sum3", "sum5", "sum7", "sum9", "sum13")


class DigitTools:
    """A calculator environment with one tool. Stateless across episodes: `reset` starts the call count."""

    def reset(self, **row: Any) -> None:
        self.calls = 0
        return None

    def add(self, digits: str) -> int:
        """Add up the digits of a number.

        Args:
            digits: The digits to add, written together, e.g. 35271.
        """
        self.calls += 1
        if not digits or not digits.isdigit():
            raise ValueError(f"add takes digits only, got {digits!r}")
        return sum(int(c) for c in digits)


def call_text(digits: str) -> str:
    """The model's tool call for a prompt's digits."""
    return f"[add:{digits}]"


def reply_text(value: Any) -> str:
    """The environment's reply to a successful call."""
    return f"[={value}]"


def sft_parts(prompt: str, rng: random.Random, tool_p: float) -> list[tuple[str, bool]]:
    """The SFT completion of a prompt as (text, trained) parts: with probability `tool_p` (always for a '?' prompt)
    a tool call, the environment's reply (not trained) and the answer; otherwise the answer alone."""
    digits = prompt[:-1]
    answer = str(sum(int(c) for c in digits))
    if prompt.endswith("?") or rng.random() < tool_p:
        return [(call_text(digits), True), (reply_text(answer), False), (answer, True)]
    return [(answer, True)]


def final_answer(completion: str) -> str:
    """The text after the episode's last ']' (the whole completion when no tool was called), stripped."""
    return completion.rsplit("]", 1)[-1].strip()


def score(completion: str, answer: str) -> float:
    """1.0 when the episode's final answer is exactly the reference, else 0.0."""
    return 1.0 if final_answer(completion) == answer.strip() else 0.0
