"""Rollout allocators owned by the driver: how many samples each prompt of a step gets (prompt -> n_i).

`fixed` gives every prompt rollout.samples_per_prompt. `gvm` is the published GVM: a pre-pass of `prepass_samples`
rollouts per prompt gives the acceptance rate p_i and, from the learner, the mean embedding-gradient norm G_i of
the accepted samples; then n_i follows rlpost/allocation.py under the budget samples_per_prompt x prompts. The
pre-pass runs every step on that step's prompts, or (`allocator.schedule: iteration`, as GVM's code) once per
iteration over the prompts of its steps (rlpost/collect.py plans them).
`gvm_online` needs no pre-pass: it estimates p_i (Beta prior, posterior mean) and G_i (mean over accepted samples
seen; the mean over all prompts for a new one; 0 for one never accepted) from the earlier training rollouts of the
same prompt, and gives every prompt at least `min_samples`. `make_allocator` builds the one a recipe names from
`ALLOCATORS`, keyed by each class's `kind`.
"""

from __future__ import annotations

from typing import Any

from rlpost.allocation import gvm_allocation, gvm_continuous, round_preserving_sum, variance_ratio_vs_uniform
from rlpost.config import AllocatorConfig
from rlpost.types import Prompt, PromptStats


class FixedAllocator:
    kind = "fixed"
    needs_prepass = False          # the driver runs a pre-pass and hands its statistics to allocate()
    learns_from_rollouts = False   # the driver feeds each round's training rollouts to update()

    def __init__(self, samples_per_prompt: int) -> None:
        self.n = samples_per_prompt

    @classmethod
    def from_config(cls, cfg: AllocatorConfig, n: int) -> FixedAllocator:
        """The allocator built from the recipe's `allocator` section, around `n` samples per prompt."""
        return cls(n)

    def estimates(self, prompts: list[Prompt]) -> list[PromptStats] | None:
        """What the allocator believes about these prompts without a pre-pass (None: nothing)."""
        return None

    def allocate(self, prompts: list[Prompt], stats: list[PromptStats] | None = None) -> list[int]:
        return [self.n] * len(prompts)

    def update(self, prompts: list[Prompt], stats: list[PromptStats], counts: list[int]) -> None:
        """Fixed allocation learns nothing."""

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_kind(self.kind, state)


class GvmAllocator(FixedAllocator):
    """GVM as published: n_i proportional to G_i / sqrt(p_i + alpha / p_i^(beta - 1)) from a pre-pass."""

    kind = "gvm"
    needs_prepass = True

    def __init__(self, samples_per_prompt: int, alpha: float = 1e-3, beta: float = 2.0) -> None:
        super().__init__(samples_per_prompt)
        self.alpha, self.beta = alpha, beta

    @classmethod
    def from_config(cls, cfg: AllocatorConfig, n: int) -> FixedAllocator:
        return cls(n, cfg.alpha, cfg.beta)

    def allocate(self, prompts: list[Prompt], stats: list[PromptStats] | None = None) -> list[int]:
        if stats is None or len(stats) != len(prompts):
            raise ValueError("GVM allocates from pre-pass statistics, one per prompt")
        return gvm_allocation([s.grad_norm for s in stats], [s.accept_rate for s in stats],
                              self.n * len(prompts), self.alpha, self.beta)


class OnlineGvmAllocator(GvmAllocator):
    """GVM's rule on per-prompt estimates from earlier training rollouts (no pre-pass)."""

    kind = "gvm_online"
    needs_prepass = False
    learns_from_rollouts = True

    def __init__(self, samples_per_prompt: int, alpha: float = 1e-3, beta: float = 2.0, prior_a: float = 1.0,
                 prior_b: float = 1.0, min_samples: int = 2) -> None:
        super().__init__(samples_per_prompt, alpha, beta)
        self.prior_a, self.prior_b, self.min_samples = prior_a, prior_b, min_samples
        self.history: dict[int, list[float]] = {}  # uid -> [accepted, trials, grad-norm sum, grad-norm count]

    @classmethod
    def from_config(cls, cfg: AllocatorConfig, n: int) -> FixedAllocator:
        return cls(n, cfg.alpha, cfg.beta, cfg.prior_a, cfg.prior_b, cfg.min_samples)

    def estimates(self, prompts: list[Prompt]) -> list[PromptStats]:
        seen = [h for h in self.history.values() if h[3] > 0]
        g_default = sum(h[2] / h[3] for h in seen) / len(seen) if seen else 1.0
        out = []
        for prompt in prompts:
            acc, trials, g_sum, g_count = self.history.get(prompt.uid, [0.0, 0.0, 0.0, 0.0])
            p = (acc + self.prior_a) / (trials + self.prior_a + self.prior_b)
            # never accepted so far: no gradient to estimate from, so GVM's rule gives it nothing (p = 0 -> 0)
            grad = g_sum / g_count if g_count else (g_default if trials == 0 else 0.0)
            out.append(PromptStats(p, grad))
        return out

    def allocate(self, prompts: list[Prompt], stats: list[PromptStats] | None = None) -> list[int]:
        """GVM on the estimates (`stats`, or computed here), with at least `min_samples` each (a group needs two
        samples for a baseline)."""
        stats = stats if stats is not None else self.estimates(prompts)
        budget = self.n * len(prompts)
        floor = min(self.min_samples, budget // max(1, len(prompts)))
        extra = gvm_allocation([s.grad_norm for s in stats], [s.accept_rate for s in stats],
                               budget - floor * len(prompts), self.alpha, self.beta)
        if sum(extra) == 0:
            extra = round_preserving_sum([1.0] * len(prompts), budget - floor * len(prompts))
        return [floor + e for e in extra]

    def update(self, prompts: list[Prompt], stats: list[PromptStats], counts: list[int]) -> None:
        """Fold a step's observed acceptance (stats[i].accept_rate over counts[i] samples) and gradient norms in."""
        for prompt, s, n in zip(prompts, stats, counts):
            if n <= 0:
                continue
            h = self.history.setdefault(prompt.uid, [0.0, 0.0, 0.0, 0.0])
            h[0] += s.accept_rate * n
            h[1] += n
            if s.accept_rate > 0 and s.grad_norm > 0:
                h[2] += s.grad_norm
                h[3] += 1

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "history": {str(k): list(v) for k, v in self.history.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_kind(self.kind, state)
        self.history = {int(k): list(v) for k, v in state["history"].items()}


def allocation_metrics(counts: list[int], stats: list[PromptStats] | None, alpha: float = 1e-3,
                       beta: float = 2.0) -> dict[str, Any]:
    """Histogram summary of n_i, mean p_i and GVM's predicted variance ratio against uniform (same total), the
    latter on the unrounded GVM allocation."""
    m: dict[str, Any] = {
        "alloc/n_hist": list(counts), "alloc/n_mean": sum(counts) / len(counts), "alloc/n_min": float(min(counts)),
        "alloc/n_max": float(max(counts)), "alloc/zero_frac": sum(c == 0 for c in counts) / len(counts)}
    if stats:
        m["alloc/accept_rate_mean"] = sum(s.accept_rate for s in stats) / len(stats)
        g, p = [s.grad_norm for s in stats], [s.accept_rate for s in stats]
        continuous = gvm_continuous(g, p, float(sum(counts)), alpha, beta)
        if sum(continuous) > 0:
            m["alloc/predicted_variance_ratio"] = variance_ratio_vs_uniform(g, p, continuous)
    return m


# Every allocator by its `kind` (the values of rlpost.choices.AllocatorKind; a unit test keeps the two equal). A new
# allocator is its class (with `kind` and `from_config`) added to this tuple.
ALLOCATORS: dict[str, type[FixedAllocator]] = {cls.kind: cls for cls in (
    FixedAllocator, GvmAllocator, OnlineGvmAllocator)}


def make_allocator(cfg: AllocatorConfig, n: int) -> FixedAllocator:
    """The allocator a recipe's `allocator` section asks for, around rollout.samples_per_prompt = `n`."""
    if cfg.kind not in ALLOCATORS:
        raise ValueError(f"unknown allocator.kind {cfg.kind!r}")
    return ALLOCATORS[cfg.kind].from_config(cfg, n)


def _check_kind(kind: str, state: dict[str, Any]) -> None:
    if state.get("kind") != kind:
        raise ValueError(f"allocator state is for {state.get('kind')!r}; this run uses {kind!r}")
