"""Generate and score prompt groups: the one path every pass over the engines takes (a training round, GVM's
pre-pass, the RIF filter, evaluation).

A pass builds seeded generation requests, asks the vLLM engines for completions, wraps them into groups (one per
prompt) and scores them with the reward workers, counting the reward stage's health. Seeds come from (run seed,
step, round, position), so a rerun or a resumed run samples the same completions; the passes that are not training
steps use their own step or round numbers (below) so their seeds never collide with a step's.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rlpost.config import RootConfig
from rlpost.curriculum import length_budget
from rlpost.scoring import RewardHealth, apply_result, build_request
from rlpost.types import GenerationRequest, Group, Prompt, RewardPool, RewardResult, RolloutEngine

if TYPE_CHECKING:
    from rlpost.multiturn import EpisodeRunner

# Seed keys of the passes that are not a training step's rounds.
PREPASS_ROUND = 1000  # GVM pre-pass of round r uses round PREPASS_ROUND + r of its step
PARTIAL_ROUND = 2000  # continuations of parked partial rollouts (rlpost/partial.py) in a step's first round
RIF_STEP = -2         # the RIF filter before training (its chunks are rounds 1, 2, ...)
EVAL_STEP = -1        # greedy evaluation


class Rollouts:
    """Requests, completions and rewards for groups of prompts; holds the run's reward-health counter."""

    def __init__(self, config: RootConfig, rollout: RolloutEngine, reward: RewardPool,
                 episodes: EpisodeRunner | None = None, env_rewards: dict[str, str] | None = None) -> None:
        self.config, self.rollout, self.reward, self.episodes = config, rollout, reward, episodes
        self.health = RewardHealth(config.reward.max_error_rate, config.reward.on_error)
        self.env_rewards = env_rewards or {}  # environment name -> its get_reward component's name

    def requests(self, prompts: list[Prompt], step: int, n: int | list[int], greedy: bool = False,
                 round_: int = 0, budget: float | None = None) -> list[GenerationRequest]:
        """Generation requests with a per-request seed from (run seed, step, round, position): reruns repeat.
        `n` is one count for all prompts or one per prompt (allocators)."""
        counts = n if isinstance(n, list) else [n] * len(prompts)
        cfg = self.config.rollout
        cap = cfg.max_new_tokens
        if budget is not None and self.config.sampler.budget_caps_rollout:
            cap = max(1, min(cap, math.ceil(budget)))
        return [GenerationRequest(
            prompt_uid=p.uid, token_ids=p.token_ids, n=counts[i],
            max_new_tokens=self.config.run.eval_max_new_tokens if greedy else cap,
            temperature=0.0 if greedy else cfg.temperature, top_p=1.0 if greedy else cfg.top_p,
            seed=_seed(cfg.seed, step, i, round_)) for i, p in enumerate(prompts)]

    def seed(self, step: int, index: int, round_: int) -> int:
        """The sampling seed of request `index` of a pass (run seed, step, round): the same on every run."""
        return _seed(self.config.rollout.seed, step, index, round_)

    def generate(self, prompts: list[Prompt], requests: list[GenerationRequest]) -> list[Group]:
        """One group per prompt, holding the completions (or, with environments, the episodes) its request asked
        for."""
        samples = self.episodes.generate(prompts, requests) if self.episodes else self.rollout.generate(requests)
        return [Group(p, s) for p, s in zip(prompts, samples)]

    def score(self, groups: list[Group], run: dict[str, Any], where: str) -> list[Group]:
        """Rewards for every sample, stored on the samples (total and per-function components); samples left
        without a reward (skipped after an error, or scored by no function) are removed, and emptied groups too."""
        request = build_request(groups, run)
        result = (self.reward.score(request) if self.config.reward.functions else
                  RewardResult(rewards=[0.0] * len(request.completions), components={}))
        if self.episodes is not None:
            add_env_rewards(groups, result, self.env_rewards, self.config.reward.on_error)
            result.first_error = result.first_error or self.episodes.stats.take_error()
        kept, health = apply_result(groups, result)
        self.health.record(health, result.first_error, where)
        return kept


def add_env_rewards(groups: list[Group], result: RewardResult, names: dict[str, str], on_error: str) -> None:
    """Each episode's get_reward() as a component (weight 1) added to its reward, TRL's rule; NaN for episodes of
    other environments. An episode whose environment failed (reset, get_reward, lost) is a failed sample: left out,
    or given the number reward.on_error names when only get_reward failed."""
    samples = [(g.prompt, s) for g in groups for s in g.samples]
    try:
        fixed: float | None = float(on_error)
    except ValueError:
        fixed = None
    result.failed = result.failed or [False] * len(samples)
    for name in dict.fromkeys(names.values()):
        result.components[name] = [math.nan] * len(samples)
    for j, (prompt, sample) in enumerate(samples):
        env = str(prompt.columns.get("environment", "default"))
        if sample.episode.get("env_failed"):
            result.failed[j] = True
            reset_failed = sample.finish_reason == "env_error"
            result.rewards[j] = fixed if fixed is not None and not reset_failed else math.nan
        elif sample.env_reward is not None and env in names:
            result.components[names[env]][j] = sample.env_reward
            result.rewards[j] += sample.env_reward


def step_budget(config: RootConfig, step: int) -> float | None:
    """Train-Long-Think-Short B(t) for this step, or None when the recipe has no length budget."""
    cfg = config.sampler
    if not cfg.budget_initial:
        return None
    return length_budget(step, cfg.budget_initial, cfg.budget_decay, cfg.budget_interval, cfg.budget_min)


def run_columns(config: RootConfig, step: int) -> dict[str, Any]:
    """Scalar columns every reward function may read: the step, the generation cap and, with a length-budget
    curriculum, B(t)."""
    budget = step_budget(config, step)
    run: dict[str, Any] = {"step": step, "max_new_tokens": config.rollout.max_new_tokens}
    return run if budget is None else {**run, "length_budget": budget}


def mean(values: Sequence[float]) -> float:
    """Mean of the values that are not NaN (a reward function's None); NaN when none is left."""
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else float("nan")


def _seed(base: int, step: int, index: int, round_: int = 0) -> int:
    key = f"{base}:{step}:{index}" if round_ == 0 else f"{base}:{step}:{round_}:{index}"
    digest = hashlib.blake2b(key.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")
