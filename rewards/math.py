"""Math answer rewards. `gsm8k_final_number` compares the completion's last number with the number after '####' in
a GSM8K reference answer. Leaves out: symbolic equivalence with math-verify (reward-plugin issue).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _last_number(text: str) -> str | None:
    found = _NUMBER.findall(text)
    return found[-1].replace(",", "").rstrip(".") if found else None


def gsm8k_final_number(prompts: Sequence[str], completions: Sequence[str], completion_ids: Sequence[Any],
                       answer: Sequence[str], **_: Any) -> list[float]:
    """1.0 when the completion's last number equals the reference's final answer (after '####'), else 0.0."""
    scores = []
    for completion, reference in zip(completions, answer, strict=True):
        target = _last_number(reference.split("####")[-1])
        got = _last_number(completion)
        scores.append(1.0 if target is not None and got is not None and float(got) == float(target) else 0.0)
    return scores
