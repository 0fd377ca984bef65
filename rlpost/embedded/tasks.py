"""The embedded task suite: digit sums, one distribution (`data_source`) per length, verified by exact match.

A prompt is k digits followed by '=' ("3527=") and the answer is their sum in decimal ("17"). A tiny transformer
estimates the sum by attending over the digits, so its answers are near misses whose precision falls as k grows:
short sums are solved after a short warm start, middle ones partly, long ones rarely — graded difficulty with a
sampling distribution that RL can sharpen. Train and held-out splits come from one seed and never share a prompt.
`data.embedded_sources` picks the distributions: the default five (one easy, three graded, one unreachable) or
GRADED, twelve, for curriculum experiments: sum2-sum4 solved within a few steps, sum5-sum10 graded, sum12 rarely
solved (pass@8 15% from the base model) and sum14 / sum16 unreachable (pass@8 under 2%).
Leaves out: knights-and-knaves puzzles and scratchpad traces.
"""

from __future__ import annotations

import random

SOURCES: tuple[str, ...] = ("sum3", "sum5", "sum7", "sum9", "sum13")
GRADED: tuple[str, ...] = ("sum2", "sum3", "sum4", "sum5", "sum6", "sum7", "sum8", "sum9", "sum10", "sum12", "sum14",
                           "sum16")
MAX_DIGITS = 18  # prompts stay within data.max_prompt_tokens' default (48) and answers within 3 digits


def length(source: str) -> int:
    """Number of digits of a source name such as 'sum6'."""
    if not source.startswith("sum") or not source[3:].isdigit() or not 1 <= int(source[3:]) <= MAX_DIGITS:
        raise ValueError(f"unknown embedded data_source {source!r}: sources are 'sumK' with K from 1 to "
                         f"{MAX_DIGITS} digits, e.g. {', '.join(SOURCES)}")
    return int(source[3:])


def digits(source: str) -> int:
    """Digit count of any embedded source: 'sumK' (answer only) or 'traceK' (a trace, rlpost/embedded/traces.py)."""
    if source.startswith("trace"):
        from rlpost.embedded.traces import trace_length

        return trace_length(source)
    return length(source)


def make_row(digits: tuple[int, ...]) -> dict[str, str]:
    """One problem: the prompt, the reference answer and its data_source."""
    return {"prompt": "".join(map(str, digits)) + "=", "answer": str(sum(digits)),
            "data_source": f"sum{len(digits)}"}


def make_rows(source: str, n: int, seed: int, exclude: set[str] | None = None) -> list[dict[str, str]]:
    """Up to `n` distinct problems of one source (fewer if it has fewer), skipping prompts in `exclude`."""
    from rlpost.embedded.traces import trace_row

    k, make = digits(source), (trace_row if source.startswith("trace") else make_row)
    rng = random.Random(f"{seed}:{source}")
    seen = set(exclude or ())
    rows: list[dict[str, str]] = []
    while len(rows) < min(n, 10**k - len(exclude or ())):
        row = make(tuple(rng.randrange(10) for _ in range(k)))
        if row["prompt"] not in seen:
            seen.add(row["prompt"])
            rows.append(row)
    return rows


def make_suite(n_train: int, n_test: int, seed: int = 0,
               sources: tuple[str, ...] = SOURCES) -> dict[str, list[dict[str, str]]]:
    """Disjoint train and test splits with up to n_train / n_test problems per source (test drawn first); sources
    may be 'sumK' or 'traceK' (whose rows carry the full trace in a 'trace' column).

    A source with few distinct problems (sum2 has 100) keeps at most a quarter of them for test.
    """
    suite: dict[str, list[dict[str, str]]] = {"train": [], "test": []}
    for source in sources:
        test = make_rows(source, min(n_test, 10 ** digits(source) // 4), seed + 1)
        suite["test"] += test
        suite["train"] += make_rows(source, n_train, seed, exclude={row["prompt"] for row in test})
    return suite


def score(completion: str, answer: str) -> float:
    """1.0 when the completion (decoded, without special tokens) is exactly the answer, else 0.0."""
    return 1.0 if completion.strip() == answer.strip() else 0.0
