"""Format rewards: the `<think>...</think><answer>...</answer>` layout (R1-style, Train Long Think Short §4.1).

Leaves out: partial credit per tag (a format reward that pays for half a layout is easy to game) and checks on
what is inside the tags; pair it with a correctness reward for that.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from rewards.protocol import Completion, completion_text

_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
_LAYOUT = re.compile(r"\s*<think>.*</think>\s*<answer>.*</answer>\s*", re.DOTALL)
_LAYOUT_PREFILLED = re.compile(r".*</think>\s*<answer>.*</answer>\s*", re.DOTALL)


def has_think_answer_layout(completion: str, think_prefilled: bool = False) -> bool:
    """Whether `completion` is exactly a think block then an answer block, each tag once, only whitespace outside.

    With `think_prefilled` the prompt already opened `<think>`, so the completion starts inside the think block: it
    must not open another one but must close it.
    """
    expected = dict.fromkeys(_TAGS, 1)
    if think_prefilled:
        expected["<think>"] = 0
    if any(completion.count(tag) != n for tag, n in expected.items()):
        return False
    layout = _LAYOUT_PREFILLED if think_prefilled else _LAYOUT
    return layout.fullmatch(completion) is not None


def think_answer_format(prompts: Sequence[Any], completions: Sequence[Completion], completion_ids: Sequence[Any],
                        think_prefilled: bool = False, **_: Any) -> list[float]:
    """1.0 for a completion laid out as `<think>...</think>` then `<answer>...</answer>` (see
    `has_think_answer_layout`), else 0.0. Set `think_prefilled` when the chat template already opened `<think>`.
    """
    return [float(has_think_answer_layout(completion_text(c), think_prefilled)) for c in completions]
