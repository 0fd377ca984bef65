"""Math answer rewards: correctness by math_verify, SimpleRL-Zoo's boxed-format modes, and GSM8K's last number.

- `math_accuracy`: 1/0 by math_verify (numbers, fractions, LaTeX, sets and intervals compare by value, not by string).
- `boxed_math`: SimpleRL-Zoo's `compute_score` modes (research notes §6.1): correctness-only, mix, independent.
- `gsm8k_final_number`: the completion's last number against the number after '####' (no symbolic maths).

math_verify guards parse/verify with `signal.alarm`, which fails outside the main thread (the verl and TRL trackers
have the reports). Here both timeouts are disabled (`parsing_timeout=None`, `timeout_seconds=None`, accepted by
math_verify 0.9); the reward worker already runs every function in a child process with its own time limit, so a
pathological sympy expression costs that call, never a hang. math_verify logs one warning per process about this.
Leaves out: the Qwen-math answer parser SimpleRL-Zoo uses (math_verify plays its part) and per-dataset extraction.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from rewards.protocol import Completion, completion_text

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_GOLD_CONFIG = (LatexExtractionConfig(), ExprExtractionConfig())
BOXED_MODES = ("correct_only", "mix", "independent")


def _last_number(text: str) -> str | None:
    found = _NUMBER.findall(text)
    return found[-1].replace(",", "").rstrip(".") if found else None


def gsm8k_final_number(prompts: Sequence[Any], completions: Sequence[Completion], completion_ids: Sequence[Any],
                       answer: Sequence[str], **_: Any) -> list[float]:
    """1.0 when the completion's last number equals the reference's final answer (after '####'), else 0.0."""
    scores = []
    for completion, reference in zip(completions, answer, strict=True):
        target = _last_number(reference.split("####")[-1])
        got = _last_number(completion_text(completion))
        scores.append(1.0 if target is not None and got is not None and float(got) == float(target) else 0.0)
    return scores


def parse_gold(reference: str) -> list[Any] | None:
    """The reference answer as math_verify expressions, or None when nothing in it parses.

    GSM8K references keep only the text after the last '####'. A bare answer ('0.5', '1,234', '\\sqrt{2}', '(1,2)')
    is read as inline LaTeX `$...$`, so numbers, LaTeX without dollars, sets and intervals all parse; a reference that
    already has `$` or `\\boxed` is parsed as written. No fallback strings: a gold that yields no expression (empty,
    '???', broken LaTeX) gives None. Free text parses as a product of symbols (math_verify's reading), which
    only a completion boxing the same words matches.
    """
    text = reference.split("####")[-1].strip()
    if not text:
        return None
    if "$" not in text and "\\boxed" not in text:
        text = f"${text}$"
    gold = parse(text, extraction_config=_GOLD_CONFIG, fallback_mode="no_fallback", parsing_timeout=None)
    return gold or None


def answer_is_correct(gold: list[Any], text: str) -> bool:
    """Whether the answer math_verify extracts from `text` (a `\\boxed{}` answer first) equals the gold."""
    predicted = parse(text, parsing_timeout=None)
    return bool(predicted) and verify(gold, predicted, timeout_seconds=None)


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` in `text` (braces balanced); None when there is none or it is cut off."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for i in range(begin, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            if depth == 0:
                return text[begin:i]
            depth -= 1
    return None


def math_accuracy(prompts: Sequence[Any], completions: Sequence[Completion], completion_ids: Sequence[Any],
                  answer: Sequence[str], **_: Any) -> list[float | None]:
    """1.0 when math_verify finds the completion's answer equal to the reference `answer`, else 0.0.

    The completion's `\\boxed{}` answer is preferred, else the last expression math_verify finds. A reference that
    does not parse (see `parse_gold`) gives None, "no score", rather than 0: the sample is the dataset's fault.
    """
    scores: list[float | None] = []
    for completion, reference in zip(completions, answer, strict=True):
        gold = parse_gold(reference)
        scores.append(None if gold is None else float(answer_is_correct(gold, completion_text(completion))))
    return scores


def boxed_math(prompts: Sequence[Any], completions: Sequence[Completion], completion_ids: Sequence[Any],
               answer: Sequence[str], mode: str = "mix", format_penalty: float = -1.0, wrong_boxed: float = -0.5,
               correct_unboxed: float = 0.5, **_: Any) -> list[float | None]:
    """SimpleRL-Zoo's rule reward (`simplelr_math.compute_score`, research notes §6.1), selected by `mode`.

    - 'correct_only': 1/0 correctness, `\\boxed` not required (the paper's recommendation for weak base models);
    - 'mix' (SimpleRL-Zoo's default): correct and boxed 1; wrong but boxed `wrong_boxed`; no `\\boxed{}` at all
      `format_penalty`, even when the answer is right (the format rule overrides);
    - 'independent': correct and boxed 1; correct unboxed `correct_unboxed`; wrong boxed `wrong_boxed`; else
      `format_penalty`.
    When boxed, correctness is judged on the last box's content only; unboxed, on the whole completion. A reference
    that does not parse gives None, as in `math_accuracy`.
    """
    if mode not in BOXED_MODES:
        raise ValueError(f"boxed_math: unknown mode {mode!r}; choose one of {', '.join(BOXED_MODES)}")
    scores: list[float | None] = []
    for completion, reference in zip(map(completion_text, completions), answer, strict=True):
        gold = parse_gold(reference)
        if gold is None:
            scores.append(None)
            continue
        boxed = last_boxed(completion)
        correct = answer_is_correct(gold, completion if boxed is None else f"\\boxed{{{boxed}}}")
        if mode == "correct_only":
            scores.append(float(correct))
        elif boxed is not None:
            scores.append(1.0 if correct else wrong_boxed)
        elif mode == "independent" and correct:
            scores.append(correct_unboxed)
        else:
            scores.append(format_penalty)
    return scores
