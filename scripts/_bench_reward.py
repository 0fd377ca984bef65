"""The reward of scripts/bench_vs_trl.py, one plain-Python file that rlpost and TRL's GRPOTrainer both call unchanged.

Both call it with keyword arguments (`prompts`, `completions`, `completion_ids`, dataset columns, TRL's extras) and
read one float per completion. On a randomly initialised model exact match never fires; the share of digits in a
random completion varies in every group, so every group has live advantages and both systems train on every sample.
Leaves out: anything a benchmark would have to learn to score well; it only has to keep the step's work the same.
"""

from __future__ import annotations


def digit_fraction(prompts, completions, **kwargs):
    """Share of digit characters in each completion (0.0 for an empty one)."""
    return [sum(ch.isdigit() for ch in text) / max(1, len(text)) for text in completions]
