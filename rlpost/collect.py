"""The first half of a step, **collect**: sample → allocate → generate → score, as one or more rounds.

A round draws the step's prompts from the sampler, asks the allocator how many completions each gets (GVM's
pre-pass runs here when the allocator needs one), generates them, scores them and adds the driver-side reward terms
(DAPO overlong shaping, KL-in-reward). Without dynamic sampling one round is the step. With it (DAPO), rounds repeat
until `prompts_per_step` groups whose rewards vary are kept, or `max_gen_rounds` is reached. What comes out is a
`StepBatch`: the kept groups (for the learner) and every scored group (for advantages, the sampler and metrics).
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rlpost.allocators import allocation_metrics
from rlpost.config import MemoryConfig, RootConfig
from rlpost.episodic import extract
from rlpost.metrics import PhaseTimer
from rlpost.multiturn import episode_metrics
from rlpost.partial import PartialBuffer, generate_partial
from rlpost.records import decode_group, encode_group
from rlpost.rollouts import PREPASS_ROUND, Rollouts, run_columns, step_budget
from rlpost.shaping import informative_group, overlong_penalty
from rlpost.types import (
    Allocator,
    EpisodicMemory,
    GenerationRequest,
    Group,
    LearnerGroup,
    Prompt,
    PromptSampler,
    PromptStats,
)


class DynamicSamplingExhausted(RuntimeError):
    """Dynamic sampling hit max_gen_rounds and the recipe asked for an error instead of a smaller batch."""


@dataclass
class StepBatch:
    """What a step collected: `kept` groups train; `generated` holds every scored group of every round (kept or
    dropped by dynamic sampling); `completions`/`tokens` count every completion generated, scored or not."""

    step: int
    budget: float | None          # the length-budget curriculum's B(t), None without one
    run: dict[str, Any]           # the run columns reward functions saw
    kept: list[Group] = field(default_factory=list)
    generated: list[Group] = field(default_factory=list)
    rounds: int = 0
    completions: int = 0
    tokens: int = 0
    metrics: dict[str, float] = field(default_factory=dict)  # allocation and pre-pass numbers
    health: dict[str, float] = field(default_factory=dict)  # the reward stage's counts while it was collected
    drawn: Counter[str] = field(default_factory=Counter)  # prompts drawn for it per data_source
    timing: dict[str, float] = field(default_factory=dict)  # its phases' seconds when collected ahead of its step


class Collector:
    """Runs a step's rounds against the rollout engines, reward workers and (for GVM's gradient norms and the KL
    penalty) the learner group."""

    def __init__(self, config: RootConfig, rollouts: Rollouts, learner: LearnerGroup, sampler: PromptSampler,
                 allocator: Allocator, memory: EpisodicMemory | None = None) -> None:
        self.config, self.rollouts, self.learner = config, rollouts, learner
        self.sampler, self.allocator, self.memory = sampler, allocator, memory
        cfg = config.rollout
        self.partial = PartialBuffer(cfg.partial_max_tokens, cfg.stop_on_repeat) if cfg.partial_max_tokens else None
        # GVM's iteration schedule: each planned step's prompts and n_i, from one pre-pass over the iteration
        self.plan: dict[int, tuple[list[Prompt], list[int], list[Group]]] = {}
        self.last_prepass: list[Group] = []  # the last pre-pass's groups, aligned with its prompts (train_prepass)
        self.by_iteration = allocator.needs_prepass and config.allocator.schedule == "iteration"

    def collect(self, step: int, timer: PhaseTimer) -> StepBatch:
        """Rounds until the step has its groups (one round without dynamic sampling)."""
        batch = StepBatch(step, step_budget(self.config, step), run_columns(self.config, step))
        self.round(batch, timer)
        while not self.enough(batch):
            self.round(batch, timer)
        batch.health = self.rollouts.health.metrics()  # this collection's passes (and any eval since the last)
        batch.metrics.update(episode_metrics(batch.generated))
        # the draw counts are this batch's (off sync, or planned by iteration, the sampler has drawn later batches)
        batch.metrics.update({k: float(batch.drawn.get(k.rsplit("/", 1)[1], 0)) for k in self.sampler.metrics()
                              if k.startswith("sampler/count/")})
        return batch

    def round(self, batch: StepBatch, timer: PhaseTimer) -> None:
        """One round of phases 1-4, its groups added to the batch."""
        with timer.phase("sample"):                               # 1. which prompts
            planned = self.by_iteration and batch.rounds == 0
            prompts = [] if planned else self.sampler.next_batch(batch.step)
        with timer.phase("allocate"):                             # 2. how many samples each
            if planned:
                prompts, counts, prepass = self.planned(batch)
            else:
                counts, prepass = self.allocate(prompts, batch), self.last_prepass
            batch.drawn.update(p.data_source for p in prompts)
            keep = [i for i, n in enumerate(counts) if n > 0]
            prompts = [prompts[i] for i in keep]
            requests = self.rollouts.requests(prompts, batch.step, [counts[i] for i in keep],
                                              round_=batch.rounds, budget=batch.budget)
        with timer.phase("generate"):                             # 3. vLLM completions
            groups = self.generate(prompts, requests, batch)
            # allocator.train_prepass: each group also trains on its prompt's pre-pass samples (scored already)
            joined = ({id(g): prepass[i] for g, i in zip(groups, keep)}
                      if self.config.allocator.train_prepass and prepass else {})
        with timer.phase("reward"):                               # 4. reward workers (+ shaping, KL)
            groups = self.rollouts.score(groups, batch.run, f"step {batch.step}")
            for group in groups:
                if id(group) in joined:
                    group.samples = [*joined[id(group)].samples, *group.samples]
            self.shape_rewards(groups)
            if self.memory is not None:
                batch.metrics.update(memory_rewards(self.memory, self.config.memory, groups))
        if self.allocator.learns_from_rollouts:
            with timer.phase("allocate"):
                stats = self.acceptance_stats(groups)
                self.allocator.update([g.prompt for g in groups], stats, [len(g.samples) for g in groups])
        batch.rounds += 1
        batch.generated += groups
        if self.config.algorithm.dynamic_sampling:
            batch.kept += [g for g in groups if informative_group(self._filter_values(g))]
        else:
            batch.kept = groups

    def generate(self, prompts: list[Prompt], requests: list[GenerationRequest], batch: StepBatch) -> list[Group]:
        """The round's groups, counted into the batch. With partial rollouts, the first round also continues the
        parked completions, and only groups whose completions are all done come back (rlpost/partial.py)."""
        if self.partial is None:
            groups = self.rollouts.generate(prompts, requests)
            completions, tokens = sum(len(g.samples) for g in groups), sum(
                len(s.token_ids) for g in groups for s in g.samples)
        else:
            cfg = self.config.rollout
            groups, completions, tokens, metrics = generate_partial(
                self.partial, self.rollouts, prompts, requests, batch.step, batch.rounds == 0, cfg.temperature,
                cfg.top_p)
            batch.metrics.update(metrics)
        batch.completions += completions
        batch.tokens += tokens
        return groups

    def enough(self, batch: StepBatch) -> bool:
        """Whether the step stops generating: always after one round without dynamic sampling; with it, once
        `prompts_per_step` groups are kept (the surplus cut) or after `max_gen_rounds` (a warning or an error)."""
        alg = self.config.algorithm
        if not alg.dynamic_sampling:
            return True
        if len(batch.kept) >= alg.prompts_per_step:
            batch.kept = batch.kept[: alg.prompts_per_step]
            return True
        if batch.rounds < alg.max_gen_rounds:
            return False
        message = (f"dynamic sampling: step {batch.step} kept {len(batch.kept)} of {alg.prompts_per_step} groups "
                   f"after {batch.rounds} generation rounds ({len(batch.generated)} prompts, "
                   f"algorithm.max_gen_rounds={alg.max_gen_rounds}); rewards of the rest were all equal")
        if alg.on_gen_rounds_exhausted == "error":
            raise DynamicSamplingExhausted(message + ". Raise max_gen_rounds, or set "
                                           "algorithm.on_gen_rounds_exhausted=train")
        if alg.on_gen_rounds_exhausted != "train":
            raise ValueError(f"algorithm.on_gen_rounds_exhausted={alg.on_gen_rounds_exhausted!r} has no handler")
        print(f"[rlpost] warning: {message}; training on the smaller batch", file=sys.stderr, flush=True)
        return True

    def _filter_values(self, group: Group) -> list[float]:
        """What must vary for DAPO to keep the group; an accuracy of None (NaN) is left out."""
        metric = self.config.algorithm.dynamic_sampling_metric
        if metric == "accuracy":
            return [s.accuracy for s in group.samples if not math.isnan(s.accuracy)]
        if metric == "reward":
            return [s.reward for s in group.samples]
        raise ValueError(f"algorithm.dynamic_sampling_metric={metric!r} has no handler in rlpost/collect.py")

    def planned(self, batch: StepBatch) -> tuple[list[Prompt], list[int], list[Group]]:
        """GVM's iteration schedule: the step's prompts and n_i from its iteration's plan. The first step of an
        iteration draws the prompts of its `iteration_steps` steps (never past the run's last), runs one pre-pass
        over all of them and allocates their joint budget (its pre-pass counts in this step's `prepass/*`)."""
        if batch.step not in self.plan:
            last = min(batch.step + self.config.allocator.iteration_steps, self.config.run.steps + 1)
            drawn = [(step, self.sampler.next_batch(step)) for step in range(batch.step, max(last, batch.step + 1))]
            allocated = iter(self.allocate([p for _, prompts in drawn for p in prompts], batch))
            prepass = iter(self.last_prepass)  # kept only when they will be trained on
            self.plan.update({step: (prompts, [next(allocated) for _ in prompts],
                                     [next(prepass) for _ in prompts] if self.last_prepass else [])
                              for step, prompts in drawn})
        prompts, counts, groups = self.plan.pop(batch.step)
        batch.metrics.update(allocation_metrics(counts, None, self.config.allocator.alpha, self.config.allocator.beta))
        return prompts, counts, groups

    def plan_state(self) -> list[dict[str, Any]]:
        """The planned steps (a checkpoint's `plan`): prompts by uid and their n_i."""
        return [{"step": step, "prompts": [p.uid for p in prompts], "counts": counts,
                 "prepass": [encode_group(g) for g in groups]}
                for step, (prompts, counts, groups) in sorted(self.plan.items())]

    def load_plan(self, records: list[dict[str, Any]], prompts: dict[int, Prompt]) -> None:
        self.plan = {r["step"]: ([prompts[u] for u in r["prompts"]], list(r["counts"]),
                                 [decode_group(g, prompts) for g in r.get("prepass", [])]) for r in records}

    def allocate(self, prompts: list[Prompt], batch: StepBatch) -> list[int]:
        """Samples per prompt from the allocator; GVM's pre-pass (its rollouts counted apart) runs first."""
        cfg = self.config.allocator
        if self.allocator.needs_prepass:
            requests = self.rollouts.requests(prompts, batch.step, cfg.prepass_samples,
                                              round_=PREPASS_ROUND + batch.rounds)
            groups = self.rollouts.generate(prompts, requests)
            # every group stays, aligned with prompts
            self.rollouts.score(groups, batch.run, f"step {batch.step} GVM pre-pass")
            stats: list[PromptStats] | None = self.acceptance_stats(groups)
            spent = {"prepass/prompts": len(groups), "prepass/completions": len(groups) * cfg.prepass_samples,
                     "prepass/tokens": sum(len(s.token_ids) for g in groups for s in g.samples)}
            for key, value in spent.items():
                batch.metrics[key] = batch.metrics.get(key, 0.0) + float(value)
            self.last_prepass = groups if cfg.train_prepass else []
        else:
            stats, self.last_prepass = self.allocator.estimates(prompts), []
        counts = self.allocator.allocate(prompts, stats)
        batch.metrics.update(allocation_metrics(counts, stats, cfg.alpha, cfg.beta))
        return counts

    def acceptance_stats(self, groups: list[Group]) -> list[PromptStats]:
        """Per group: the accepted fraction (first reward function > allocator.accept_threshold) and the mean
        gradient norm of its accepted samples, from the learner (0 when none is accepted)."""
        cfg = self.config.allocator
        accepted = [[s for s in g.samples if s.accuracy > cfg.accept_threshold] for g in groups]
        pairs = [(g.prompt, s) for g, acc in zip(groups, accepted) for s in acc]
        norms = iter(self.learner.grad_norms([[*p.token_ids, *map(int, s.token_ids)] for p, s in pairs],
                                             [len(p.token_ids) for p, _ in pairs], cfg.grad_norm) if pairs else [])
        stats = []
        for group, acc in zip(groups, accepted):
            values = [next(norms) for _ in acc]
            stats.append(PromptStats(len(acc) / max(1, len(group.samples)),
                                     sum(values) / len(values) if values else 0.0))
        return stats

    def shape_rewards(self, groups: list[Group]) -> None:
        """Driver-side reward terms: DAPO overlong shaping and the KL penalty (kl_in_reward), kept as components."""
        alg, cap = self.config.algorithm, self.config.rollout.max_new_tokens
        samples = [s for g in groups for s in g.samples]
        if alg.overlong_shaping:
            buffer = alg.overlong_buffer or max(1, cap // 5)
            for s in samples:
                penalty = overlong_penalty(len(s.token_ids), cap, buffer, alg.overlong_penalty)
                s.reward += penalty
                s.reward_components["overlong"] = penalty
        if alg.kl_in_reward and alg.kl_coef:
            pairs = [(g.prompt, s) for g in groups for s in g.samples]
            kls = self.learner.reference_kl([[*p.token_ids, *map(int, s.token_ids)] for p, s in pairs],
                                            [len(p.token_ids) for p, _ in pairs], alg.kl_estimator)
            for (_, s), kl in zip(pairs, kls):
                s.reward -= alg.kl_coef * kl
                s.reward_components["kl_penalty"] = -alg.kl_coef * kl


def memory_rewards(memory: EpisodicMemory, cfg: MemoryConfig, groups: list[Group]) -> dict[str, float]:
    """Memory-R+'s exploit and explore terms (weighted, kept as components), from the memory actor called once with
    every sample in order; returns the memories' sizes."""
    pairs = [(g.prompt, s) for g in groups for s in g.samples]
    scores = memory.score([p.text for p, _ in pairs], [extract(s.text, cfg.extract) for _, s in pairs],
                          [bool(s.accuracy >= cfg.threshold) for _, s in pairs]) if pairs else []
    for (_, s), (exploit, explore) in zip(pairs, scores, strict=True):
        s.reward_components["memory_exploit"] = cfg.exploit_weight * exploit
        s.reward_components["memory_explore"] = cfg.explore_weight * explore
        s.reward += cfg.exploit_weight * exploit + cfg.explore_weight * explore
    exploit_keys, explore_keys = memory.sizes()
    return {"memory/exploit_keys": float(exploit_keys), "memory/explore_keys": float(explore_keys)}
