"""Prompt samplers owned by the driver: which prompts each step trains on.

Every sampler draws lazily (`next_batch(step)` is called when the step needs prompts, never ahead), so feedback
from step t's advantages (`update(groups)`) shapes step t+1: there is no prefetch lag. All randomness comes from one
`random.Random` per sampler whose state is part of `state_dict()`, so a sampler rebuilt with `load_state_dict()`
draws exactly what the original would have drawn next. `metrics()` reports, per data_source, the sampling weight in
force and the prompts drawn in the current step.

Samplers: uniform (without replacement, epoch by epoch), fixed mixture weights per data_source, DUMP (UCB over each
source's mean |advantage|, research notes §2), Kimi-style prioritised (probability proportional to 1 - success rate
per prompt, §5.3), and staged (all data, then a named subset of sources from a given step, §5.2). `make_sampler`
builds the one a recipe names from `SAMPLERS`, keyed by each class's `kind`.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from rlpost.config import SamplerConfig
from rlpost.curriculum import LearnabilityWindow, dump_weights, prioritised_probabilities
from rlpost.types import Group, Prompt


class _Sampler:
    """Shared plumbing: prompts grouped by data_source, one RNG, per-step draw counts."""

    kind = "base"

    def __init__(self, prompts: list[Prompt], batch_size: int, seed: int) -> None:
        if not prompts:
            raise ValueError("the training set is empty")
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        self.prompts, self.batch_size, self.seed = prompts, batch_size, seed
        self.rng = random.Random(f"rlpost-sampler:{seed}")
        groups: dict[str, list[int]] = defaultdict(list)
        for i, prompt in enumerate(prompts):
            groups[prompt.data_source].append(i)
        self.sources = sorted(groups)
        self.by_source = {s: groups[s] for s in self.sources}
        self._step: int | None = None
        self._drawn: Counter[str] = Counter()

    @classmethod
    def from_config(cls, cfg: SamplerConfig, prompts: list[Prompt], batch_size: int, seed: int) -> _Sampler:
        """The sampler built from the recipe's `sampler` section (a sampler with its own settings overrides this)."""
        return cls(prompts, batch_size, seed)

    def next_batch(self, step: int | None = None) -> list[Prompt]:
        """`batch_size` prompts for `step` (several calls in one step, as dynamic sampling makes, add up)."""
        if step != self._step:
            self._step, self._drawn = step, Counter()
        batch = [self.prompts[i] for i in self._draw(step)]
        self._drawn.update(p.data_source for p in batch)
        return batch

    def _draw(self, step: int | None) -> list[int]:
        raise NotImplementedError

    def update(self, groups: list[Group]) -> None:
        """Feedback after the step's advantages; samplers that ignore it keep this no-op."""

    def weights(self) -> dict[str, float]:
        """Probability that the next draw comes from each data_source."""
        return {s: len(self.by_source[s]) / len(self.prompts) for s in self.sources}

    def metrics(self) -> dict[str, float]:
        out = {f"sampler/weight/{s}": w for s, w in self.weights().items()}
        out.update({f"sampler/count/{s}": float(self._drawn.get(s, 0)) for s in self.sources})
        return out

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = self.rng.getstate()
        return {"kind": self.kind, "seed": self.seed, "rng": [version, list(internal), gauss],
                "n_prompts": len(self.prompts), **self._extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.kind or state.get("n_prompts") != len(self.prompts):
            raise ValueError(f"sampler state is for a {state.get('kind')!r} sampler over {state.get('n_prompts')} "
                             f"prompts; this run has a {self.kind!r} sampler over {len(self.prompts)}")
        version, internal, gauss = state["rng"]
        self.seed = state["seed"]
        self.rng.setstate((version, tuple(internal), gauss))
        self._load_extra(state)

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra(self, state: dict[str, Any]) -> None:
        pass


class UniformSampler(_Sampler):
    """Uniform over prompts, without replacement within an epoch, reshuffled each epoch (verl's RandomSampler)."""

    kind = "uniform"

    def __init__(self, prompts: list[Prompt], batch_size: int, seed: int) -> None:
        super().__init__(prompts, batch_size, seed)
        self.epoch, self.position = 0, 0
        self._order = self._shuffled(0)

    def _shuffled(self, epoch: int) -> list[int]:
        order = list(range(len(self.prompts)))
        random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return order

    def _draw(self, step: int | None) -> list[int]:
        batch: list[int] = []
        while len(batch) < self.batch_size:
            if self.position == len(self._order):
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._shuffled(self.epoch)
            batch.append(self._order[self.position])
            self.position += 1
        return batch

    def _extra_state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def _load_extra(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = state["epoch"], state["position"]
        self._order = self._shuffled(self.epoch)


class _SourceWeighted(_Sampler):
    """Each slot: a data_source drawn by weight, then a prompt of it uniformly with replacement (as DUMP's code)."""

    def _source_weights(self) -> list[float]:
        raise NotImplementedError

    def weights(self) -> dict[str, float]:
        return dict(zip(self.sources, self._source_weights()))

    def _draw(self, step: int | None) -> list[int]:
        batch = []
        for j in _weighted_indices(self.rng, self._source_weights(), self.batch_size):
            members = self.by_source[self.sources[j]]
            batch.append(members[self.rng.randrange(len(members))])
        return batch


class MixtureSampler(_SourceWeighted):
    """Fixed sampling weights per data_source (renormalised; sources not named get 0)."""

    kind = "mixture"

    def __init__(self, prompts: list[Prompt], batch_size: int, seed: int, weights: dict[str, float]) -> None:
        super().__init__(prompts, batch_size, seed)
        unknown = sorted(set(weights) - set(self.sources))
        if unknown:
            raise ValueError(f"mixture weights name data_source(s) {unknown} that the training set does not have "
                             f"(it has {self.sources})")
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError(f"mixture weights must be non-negative with a positive sum, got {dict(weights)}")
        total = sum(weights.values())
        self._weights = [weights.get(s, 0.0) / total for s in self.sources]

    @classmethod
    def from_config(cls, cfg: SamplerConfig, prompts: list[Prompt], batch_size: int, seed: int) -> _Sampler:
        return cls(prompts, batch_size, seed, dict(cfg.mixture_weights))

    def _source_weights(self) -> list[float]:
        return self._weights


class DumpSampler(_SourceWeighted):
    """DUMP: sources weighted by softmax(UCB / tau) of their windowed mean |advantage|; uniform before any data."""

    kind = "dump"

    def __init__(self, prompts: list[Prompt], batch_size: int, seed: int, window: int = 300,
                 exploration: float = 1.0, temperature: float = 0.1) -> None:
        super().__init__(prompts, batch_size, seed)
        self.exploration, self.temperature = exploration, temperature
        self.windows = {s: LearnabilityWindow(window) for s in self.sources}

    @classmethod
    def from_config(cls, cfg: SamplerConfig, prompts: list[Prompt], batch_size: int, seed: int) -> _Sampler:
        return cls(prompts, batch_size, seed, cfg.dump_window, cfg.dump_exploration, cfg.dump_temperature)

    def _source_weights(self) -> list[float]:
        return dump_weights([self.windows[s].mean for s in self.sources],
                            [self.windows[s].count for s in self.sources], self.exploration, self.temperature)

    def update(self, groups: list[Group]) -> None:
        """Every response of the step (kept or dropped groups alike) enters its source's window with |A|."""
        for group in groups:
            if group.prompt.data_source in self.windows and group.advantages:
                self.windows[group.prompt.data_source].update(group.advantages)

    def metrics(self) -> dict[str, float]:
        out = super().metrics()
        out.update({f"sampler/learnability/{s}": self.windows[s].mean for s in self.sources})
        return out

    def _extra_state(self) -> dict[str, Any]:
        return {"windows": {s: w.state_dict() for s, w in self.windows.items()}}

    def _load_extra(self, state: dict[str, Any]) -> None:
        for source, window_state in state["windows"].items():
            self.windows[source].load_state_dict(window_state)


class PrioritisedSampler(_Sampler):
    """Kimi k1.5: prompt i drawn with probability proportional to 1 - s_i, s_i its success rate so far.

    s_i is the cumulative mean over every rollout of the prompt seen (success: the first reward function at least
    `threshold`); a prompt never seen has s_i = `initial`. Draws are with replacement.
    """

    kind = "prioritised"

    def __init__(self, prompts: list[Prompt], batch_size: int, seed: int, threshold: float = 1.0,
                 initial: float = 0.0) -> None:
        super().__init__(prompts, batch_size, seed)
        self.threshold, self.initial = threshold, initial
        self._index = {p.uid: i for i, p in enumerate(prompts)}
        self.successes = [0] * len(prompts)
        self.trials = [0] * len(prompts)

    @classmethod
    def from_config(cls, cfg: SamplerConfig, prompts: list[Prompt], batch_size: int, seed: int) -> _Sampler:
        return cls(prompts, batch_size, seed, cfg.success_threshold, cfg.prioritised_initial)

    def success_rates(self) -> list[float]:
        return [s / t if t else self.initial for s, t in zip(self.successes, self.trials)]

    def _draw(self, step: int | None) -> list[int]:
        return _weighted_indices(self.rng, prioritised_probabilities(self.success_rates()), self.batch_size)

    def weights(self) -> dict[str, float]:
        mass: dict[str, float] = defaultdict(float)
        for prompt, p in zip(self.prompts, prioritised_probabilities(self.success_rates())):
            mass[prompt.data_source] += p
        return {s: mass[s] for s in self.sources}

    def update(self, groups: list[Group]) -> None:
        for group in groups:
            i = self._index.get(group.prompt.uid)
            if i is None:
                continue
            for sample in group.samples:
                self.trials[i] += 1
                self.successes[i] += int(sample.accuracy >= self.threshold)

    def _extra_state(self) -> dict[str, Any]:
        return {"successes": list(self.successes), "trials": list(self.trials)}

    def _load_extra(self, state: dict[str, Any]) -> None:
        self.successes, self.trials = list(state["successes"]), list(state["trials"])


class StagedSampler(_Sampler):
    """Kimi's curriculum: uniform over all prompts, then, from step `switch_step` on, only over `sources`."""

    kind = "staged"

    def __init__(self, prompts: list[Prompt], batch_size: int, seed: int, sources: Sequence[str],
                 switch_step: int) -> None:
        super().__init__(prompts, batch_size, seed)
        unknown = sorted(set(sources) - set(self.sources))
        if not sources or unknown:
            raise ValueError(f"staged curriculum: sources {list(sources)} must be a non-empty subset of the training "
                             f"set's data_sources {self.sources}")
        self.switch_step, self.stage_sources = switch_step, sorted(sources)
        self.first = UniformSampler(prompts, batch_size, seed)
        self.second = UniformSampler([p for p in prompts if p.data_source in set(sources)], batch_size, seed + 1)
        self._in_second = False
        self._uid_index = {p.uid: i for i, p in enumerate(prompts)}

    @classmethod
    def from_config(cls, cfg: SamplerConfig, prompts: list[Prompt], batch_size: int, seed: int) -> _Sampler:
        return cls(prompts, batch_size, seed, list(cfg.staged_sources), cfg.staged_from_step)

    def _draw(self, step: int | None) -> list[int]:
        self._in_second = step is not None and step >= self.switch_step
        stage = self.second if self._in_second else self.first
        return [self._uid_index[p.uid] for p in stage.next_batch(step)]

    def weights(self) -> dict[str, float]:
        pool = self.second if self._in_second else self.first
        return {s: len(pool.by_source.get(s, [])) / len(pool.prompts) for s in self.sources}

    def _extra_state(self) -> dict[str, Any]:
        return {"first": self.first.state_dict(), "second": self.second.state_dict(), "in_second": self._in_second}

    def _load_extra(self, state: dict[str, Any]) -> None:
        self.first.load_state_dict(state["first"])
        self.second.load_state_dict(state["second"])
        self._in_second = state["in_second"]


def _weighted_indices(rng: random.Random, weights: Sequence[float], count: int) -> list[int]:
    """`count` indices drawn with replacement, P(i) proportional to weights[i], one rng.random() per draw."""
    cumulative = list(itertools.accumulate(weights))
    return [min(bisect.bisect_right(cumulative, rng.random() * cumulative[-1]), len(cumulative) - 1)
            for _ in range(count)]


# Every sampler by its `kind` (the values of rlpost.choices.SamplerKind; a unit test keeps the two equal). A new
# sampler is its class (with `kind` and, if it has settings, `from_config`) added to this tuple.
SAMPLERS: dict[str, type[_Sampler]] = {cls.kind: cls for cls in (
    UniformSampler, MixtureSampler, DumpSampler, PrioritisedSampler, StagedSampler)}


def make_sampler(cfg: SamplerConfig, prompts: list[Prompt], batch: int, seed: int) -> _Sampler:
    """The sampler a recipe's `sampler` section asks for, drawing `batch` prompts per call
    (algorithm.prompts_per_step)."""
    if cfg.kind not in SAMPLERS:
        raise ValueError(f"unknown sampler.kind {cfg.kind!r}")
    return SAMPLERS[cfg.kind].from_config(cfg, prompts, batch, seed)
