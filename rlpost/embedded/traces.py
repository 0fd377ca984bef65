"""The embedded reasoning-trace task: digit sums answered after a scratchpad of partial sums, whose length the policy
controls.

A prompt is k digits and '=' ("3527="), as in the digit-sum suite; the completion is a trace of partial sums then
the answer after '#': "3+5=8;8+2=10;10+7=17;#17". Only the final answer is verified (`score`): a trace may skip or
merge steps ("3+5+2=10;10+7=17;#17", or just "#17") and still be right, so a length reward can shorten traces
without touching correctness, which is what length curricula claim. A tiny model adds one digit at a time far more
reliably than three, so shorter traces cost accuracy unless learnt: the trade-off the methods are measured on.

The base model for this task (`rlpost.embedded.model`, task 'trace') is warm-started on mostly full traces with a
few merged and skipped ones (`trace_text`), so every length is reachable by sampling. Sources are 'traceK'.
"""

from __future__ import annotations

import random

TRACE_SOURCES: tuple[str, ...] = ("trace3", "trace4", "trace5", "trace6")
ANSWER_MARK = "#"
MAX_TRACE_DIGITS = 8  # the longest full trace (8 digits: 7 steps, about 55 characters) fits 64 new tokens


def trace_length(source: str) -> int:
    """Number of digits of a source name such as 'trace5'."""
    if not source.startswith("trace") or not source[5:].isdigit() or not 1 <= int(source[5:]) <= MAX_TRACE_DIGITS:
        raise ValueError(f"unknown trace data_source {source!r}: sources are 'traceK' with K from 1 to "
                         f"{MAX_TRACE_DIGITS} digits, e.g. {', '.join(TRACE_SOURCES)}")
    return int(source[5:])


def trace_text(digits: tuple[int, ...], merges: tuple[bool, ...] | None = None) -> str:
    """The scratchpad and answer for `digits`. `merges[i]` True leaves out the partial sum after digit i+1, so the
    next step adds several digits ("3+5+2=10"); the last step is always written, unless every entry is True: then
    no step is ("#17"). None writes every step."""
    total = sum(digits)
    if len(digits) < 2:
        return f"{ANSWER_MARK}{total}"
    merges = merges or (False,) * (len(digits) - 1)
    if all(merges):
        return f"{ANSWER_MARK}{total}"
    steps, terms, running = [], [str(digits[0])], digits[0]
    for i, d in enumerate(digits[1:]):
        terms.append(str(d))
        running += d
        if i == len(digits) - 2 or not merges[i]:
            steps.append(f"{'+'.join(terms)}={running}")
            terms = [str(running)]
    return ";".join(steps) + f";{ANSWER_MARK}{total}"


def trace_row(digits: tuple[int, ...]) -> dict[str, str]:
    """One problem of source 'trace<len(digits)>': the prompt, the reference answer, and the full trace."""
    return {"prompt": "".join(map(str, digits)) + "=", "answer": str(sum(digits)),
            "data_source": f"trace{len(digits)}", "trace": trace_text(digits)}


def sft_target(prompt: str, rng: random.Random, merge_p: float, skip_p: float) -> str:
    """The SFT completion for a trace prompt: the full trace, or (with probability `merge_p`) one with random steps
    merged, or (`skip_p`) the bare answer."""
    digits = tuple(int(c) for c in prompt.rstrip("="))
    draw = rng.random()
    if draw < skip_p:
        return trace_text(digits, (True,) * max(0, len(digits) - 1))
    if draw < skip_p + merge_p and len(digits) > 2:
        return trace_text(digits, tuple(rng.random() < 0.5 for _ in range(len(digits) - 1)))
    return trace_text(digits)


def final_answer(completion: str) -> str | None:
    """The text after the last answer mark, stripped; None without a mark."""
    if ANSWER_MARK not in completion:
        return None
    return completion.rsplit(ANSWER_MARK, 1)[1].strip()


def reasoning(completion: str) -> str:
    """The trace before the answer mark (the whole completion without one)."""
    return completion.rsplit(ANSWER_MARK, 1)[0] if ANSWER_MARK in completion else completion


def score(completion: str, answer: str) -> float:
    """1.0 when the answer after the last '#' is exactly the reference, else 0.0; the trace is not checked."""
    return 1.0 if final_answer(completion) == answer.strip() else 0.0
