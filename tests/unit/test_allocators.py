"""Allocators (prompt -> n_i): fixed, GVM from pre-pass statistics, and the online variant's estimates and state;
and the driver running GVM's pre-pass with per-prompt n over in-process fakes."""

from __future__ import annotations

import pytest

from rlpost.allocators import (
    FixedAllocator,
    GvmAllocator,
    OnlineGvmAllocator,
    PromptStats,
    allocation_metrics,
    make_allocator,
)
from rlpost.config import AllocatorConfig
from rlpost.types import Prompt

PROMPTS = [Prompt(u, f"p{u}", [1], "", "s") for u in range(4)]


def test_gvm_allocates_the_golden_vector_from_prepass_stats():
    stats = [PromptStats(p, g) for p, g in zip([0.125, 0.5, 1.0, 0.25], [2.0, 1.0, 1.0, 0.0])]
    counts = GvmAllocator(8).allocate(PROMPTS, stats)
    assert counts == [22, 6, 4, 0]
    metrics = allocation_metrics(counts, stats)
    assert metrics["alloc/zero_frac"] == 0.25 and metrics["alloc/n_max"] == 22
    assert metrics["alloc/predicted_variance_ratio"] < 1.0
    assert FixedAllocator(8).allocate(PROMPTS) == [8] * 4


@pytest.mark.parametrize("kind, direct", [
    ("fixed", lambda: FixedAllocator(8)),
    ("gvm", lambda: GvmAllocator(8, 0.01, 1.5)),
    ("gvm_online", lambda: OnlineGvmAllocator(8, 0.01, 1.5, 2.0, 3.0, 1)),
])
def test_make_allocator_passes_the_recipe_settings_to_the_allocator(kind, direct):
    config = AllocatorConfig(kind=kind, alpha=0.01, beta=1.5, prior_a=2.0, prior_b=3.0, min_samples=1)
    built, expected = make_allocator(config, 8), direct()
    assert type(built) is type(expected) and vars(built) == vars(expected)
    with pytest.raises(ValueError, match="unknown allocator.kind 'nope'"):
        make_allocator(AllocatorConfig(kind="nope"), 8)


def test_online_gvm_starts_from_the_prior_and_learns_from_rollouts():
    alloc = OnlineGvmAllocator(8, min_samples=2)
    assert alloc.allocate(PROMPTS) == [8, 8, 8, 8]  # nothing seen: every prompt looks alike
    seen = [PromptStats(0.0, 0.0), PromptStats(1.0, 1.0), PromptStats(0.25, 3.0), PromptStats(0.5, 1.0)]
    for _ in range(5):
        alloc.update(PROMPTS, seen, [8] * 4)
    counts = alloc.allocate(PROMPTS)
    assert sum(counts) == 32 and min(counts) >= 2
    assert counts[2] == max(counts) and counts[0] == 2  # large gradient, mixed outcomes vs never accepted
    clone = OnlineGvmAllocator(8, min_samples=2)
    clone.load_state_dict(alloc.state_dict())
    assert clone.allocate(PROMPTS) == counts
    with pytest.raises(ValueError, match="gvm_online"):
        GvmAllocator(8).load_state_dict(alloc.state_dict())
