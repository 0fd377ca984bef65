"""The training step, read top to bottom: sample → allocate → generate → score → advantages → train → sync → log.

With DAPO dynamic sampling, sample → score repeats (at most `max_gen_rounds` rounds) until enough groups whose
rewards vary are kept. The trainer only talks to the Protocols of rlpost/types.py, so it imports neither Ray,
vLLM nor DeepSpeed. The sampler is asked for prompts when a step needs them (never ahead) and updated right after
the advantages, so step t's feedback shapes step t+1. Leaves out: allocators other than fixed n, checkpoint/resume
(later issues).
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from rlpost.advantages import batch_advantages
from rlpost.allocators import PromptStats, allocation_metrics, make_allocator
from rlpost.batching import build_shards
from rlpost.config import RootConfig
from rlpost.curriculum import length_budget
from rlpost.losses import LossSpec
from rlpost.metrics import PhaseTimer
from rlpost.scoring import RewardHealth, apply_result, build_request
from rlpost.shaping import informative_group, overlong_penalty
from rlpost.types import (
    GenerationRequest,
    Group,
    LearnerGroup,
    Prompt,
    RewardPool,
    RolloutEngine,
    Sample,
    WeightSync,
)


class DynamicSamplingExhausted(RuntimeError):
    """Dynamic sampling hit max_gen_rounds and the recipe asked for an error instead of a smaller batch."""


def loss_spec(config: RootConfig) -> LossSpec:
    """The learner's view of the algorithm section (KL goes into the reward instead when kl_in_reward)."""
    alg = config.algorithm
    return LossSpec(
        clip_eps_low=alg.clip_eps_low, clip_eps_high=alg.clip_eps_high, dual_clip_c=alg.dual_clip_c,
        ratio_level=alg.ratio_level, kl_coef=0.0 if alg.kl_in_reward else alg.kl_coef,
        kl_estimator=alg.kl_estimator, entropy_coef=alg.entropy_coef, tis_level=alg.tis_level,
        tis_cap=alg.tis_cap, updates_per_batch=alg.updates_per_batch, epochs=alg.epochs)


class Trainer:
    """Holds the components of a run and advances it one step at a time."""

    def __init__(self, config: RootConfig, rollout: RolloutEngine, learner: LearnerGroup, reward: RewardPool,
                 weight_sync: WeightSync, sampler: Any, probe_sequences: list[list[int]],
                 rollout_probe: Any, allocator: Any = None) -> None:
        self.config, self.rollout, self.learner, self.reward = config, rollout, learner, reward
        self.weight_sync, self.sampler = weight_sync, sampler
        self.probe_sequences, self.rollout_probe = probe_sequences, rollout_probe
        self.loss = loss_spec(config)
        self.allocator = allocator if allocator is not None else make_allocator(config)
        self.health = RewardHealth(config.reward.max_error_rate, config.reward.on_error)
        self._last_step = 0

    def step(self, step: int) -> dict[str, float]:
        """One GRPO-family step; returns its metrics (each phase timed)."""
        timer = PhaseTimer()
        alg = self.config.algorithm
        kept: list[Group] = []
        generated: list[Group] = []
        rounds = 0
        budget = self.length_budget(step)
        extra = self.run_columns(step)
        self._last_step = step
        alloc_metrics: dict[str, float] = {}
        produced: list[Sample] = []  # every completion generated, those left without a reward included
        while True:
            with timer.phase("sample"):                               # 1. which prompts
                prompts = self.sampler.next_batch(step)
            with timer.phase("allocate"):                             # 2. how many samples each
                counts = self.allocate(prompts, step, rounds, extra, alloc_metrics)
                prompts = [p for p, n in zip(prompts, counts) if n > 0]
                requests = self.requests(prompts, step, [n for n in counts if n > 0], round_=rounds,
                                         budget=budget)
            with timer.phase("generate"):                             # 3. vLLM completions
                groups = [Group(p, s) for p, s in zip(prompts, self.rollout.generate(requests))]
                produced += [s for g in groups for s in g.samples]
            with timer.phase("reward"):                               # 4. reward workers (+ shaping, KL)
                groups = self.score(groups, extra, f"step {step}")
                self.shape_rewards(groups)
            if self.allocator.learns_from_rollouts:
                with timer.phase("allocate"):
                    stats = self.acceptance_stats(groups)
                    self.allocator.update([g.prompt for g in groups], stats, [len(g.samples) for g in groups])
            rounds += 1
            generated += groups
            if not alg.dynamic_sampling:
                kept = groups
                break
            kept += [g for g in groups if informative_group(self._filter_values(g))]
            if len(kept) >= alg.prompts_per_step:
                kept = kept[: alg.prompts_per_step]
                break
            if rounds >= alg.max_gen_rounds:
                message = (f"dynamic sampling: step {step} kept {len(kept)} of {alg.prompts_per_step} groups after "
                           f"{rounds} generation rounds ({len(generated)} prompts, algorithm.max_gen_rounds="
                           f"{alg.max_gen_rounds}); rewards of the rest were all equal")
                if alg.on_gen_rounds_exhausted == "error":
                    raise DynamicSamplingExhausted(message + ". Raise max_gen_rounds, or set "
                                                   "algorithm.on_gen_rounds_exhausted=train")
                print(f"[rlpost] warning: {message}; training on the smaller batch", file=sys.stderr, flush=True)
                break
        with timer.phase("advantage"):                                # 5. group-relative advantages
            advantage_metrics = self.advantages(kept, generated)
            self.sampler.update(generated)
        metrics = {**self.reward_metrics(generated), **self.health.metrics(), **advantage_metrics,
                   **self.sampler.metrics(), **alloc_metrics}
        if budget is not None:
            metrics["curriculum/length_budget"] = budget
        metrics["rollout/completions"] = float(len(produced))
        metrics["tokens/generated"] = float(sum(len(s.token_ids) for s in produced))
        metrics.update({"groups/generated": float(len(generated)), "groups/kept": float(len(kept)),
                        "groups/dropped": float(len(generated) - len(kept)), "groups/gen_rounds": float(rounds)})
        trained = [g for g in kept if g.advantages]
        if trained:
            with timer.phase("train"):                                # 6. policy update
                metrics.update(self.train(trained))
            with timer.phase("sync"):                                 # 7. weights into vLLM, then probe
                metrics.update(self.weight_sync.sync())
                metrics["sync/probe_max_abs_diff"] = self.probe()
        else:
            print(f"[rlpost] warning: step {step} has no group to train on; the policy is unchanged",
                  file=sys.stderr, flush=True)
        metrics.update(timer.seconds)
        metrics["time/step"] = sum(timer.seconds.values())
        return metrics

    def _filter_values(self, group: Group) -> list[float]:
        """What must vary for DAPO to keep the group; an accuracy of None (NaN) is left out."""
        if self.config.algorithm.dynamic_sampling_metric == "accuracy":
            return [s.accuracy for s in group.samples if not math.isnan(s.accuracy)]
        return [s.reward for s in group.samples]

    def run_columns(self, step: int) -> dict[str, Any]:
        """Scalar columns every reward function may read: the step, the generation cap and, with a length-budget
        curriculum, B(t)."""
        budget = self.length_budget(step)
        run: dict[str, Any] = {"step": step, "max_new_tokens": self.config.rollout.max_new_tokens}
        return run if budget is None else {**run, "length_budget": budget}

    def length_budget(self, step: int) -> float | None:
        """Train-Long-Think-Short B(t) for this step, or None when the recipe has no length budget."""
        cfg = self.config.sampler
        if not cfg.budget_initial:
            return None
        return length_budget(step, cfg.budget_initial, cfg.budget_decay, cfg.budget_interval, cfg.budget_min)

    def allocate(self, prompts: list[Prompt], step: int, round_: int, extra: dict[str, Any],
                 metrics: dict[str, float]) -> list[int]:
        """Samples per prompt from the allocator; GVM's pre-pass (its rollouts counted apart) runs first."""
        stats = None
        if self.allocator.needs_prepass:
            cfg = self.config.allocator
            requests = self.requests(prompts, step, cfg.prepass_samples, round_=1000 + round_)
            groups = [Group(p, s) for p, s in zip(prompts, self.rollout.generate(requests))]
            self.score(groups, extra, f"step {step} GVM pre-pass")  # every group stays, aligned with prompts
            stats = self.acceptance_stats(groups)
            spent = {"prepass/prompts": len(groups), "prepass/completions": len(groups) * cfg.prepass_samples,
                     "prepass/tokens": sum(len(s.token_ids) for g in groups for s in g.samples)}
            for key, value in spent.items():
                metrics[key] = metrics.get(key, 0.0) + float(value)
        else:
            stats = self.allocator.estimates(prompts)
        counts = self.allocator.allocate(prompts, stats)
        metrics.update(allocation_metrics(counts, stats, self.config.allocator.alpha, self.config.allocator.beta))
        return counts

    def acceptance_stats(self, groups: list[Group]) -> list[PromptStats]:
        """Per group: the accepted fraction (first reward function > allocator.accept_threshold) and the mean
        gradient norm of its accepted samples, from the learner (0 when none is accepted)."""
        cfg = self.config.allocator
        accepted = [[s for s in g.samples if s.accuracy > cfg.accept_threshold] for g in groups]
        pairs = [(g.prompt, s) for g, acc in zip(groups, accepted) for s in acc]
        norms = iter(self.learner.grad_norms([p.token_ids + s.token_ids for p, s in pairs],
                                             [len(p.token_ids) for p, _ in pairs], cfg.grad_norm) if pairs else [])
        stats = []
        for group, acc in zip(groups, accepted):
            values = [next(norms) for _ in acc]
            stats.append(PromptStats(len(acc) / max(1, len(group.samples)),
                                     sum(values) / len(values) if values else 0.0))
        return stats

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
            seed=_seed(self.config.rollout.seed, step, i, round_)) for i, p in enumerate(prompts)]

    def score(self, groups: list[Group], run: dict[str, Any], where: str) -> list[Group]:
        """Rewards for every sample, stored on the samples (total and per-function components); samples left
        without a reward (skipped after an error, or scored by no function) are removed, and emptied groups too."""
        result = self.reward.score(build_request(groups, run))
        kept, health = apply_result(groups, result)
        self.health.record(health, result.first_error, where)
        return kept

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
            kls = self.learner.reference_kl([p.token_ids + s.token_ids for p, s in pairs],
                                            [len(p.token_ids) for p, _ in pairs], alg.kl_estimator)
            for (_, s), kl in zip(pairs, kls):
                s.reward -= alg.kl_coef * kl
                s.reward_components["kl_penalty"] = -alg.kl_coef * kl

    def reward_metrics(self, groups: list[Group]) -> dict[str, float]:
        """Reward, accuracy (first reward function) per data_source, lengths and truncation of the step's samples."""
        samples = [(g.prompt, s) for g in groups for s in g.samples]
        first = [s.accuracy for _, s in samples]
        metrics = {"reward/mean": _mean([s.reward for _, s in samples])}
        names = {name for _, s in samples for name in s.reward_components}
        for name in sorted(names):
            metrics[f"reward/{name}"] = _mean([s.reward_components.get(name, 0.0) for _, s in samples])
        by_source: dict[str, list[float]] = defaultdict(list)
        for (prompt, _), value in zip(samples, first):
            by_source[prompt.data_source].append(value)
        metrics.update({f"acc/{source}": _mean(v) for source, v in sorted(by_source.items())})
        metrics["acc/mean"] = _mean(first)
        lengths = [len(s.token_ids) for _, s in samples]
        metrics["tokens/completion_len_mean"] = _mean(lengths)
        metrics["tokens/truncated_frac"] = _mean([float(s.finish_reason == "length") for _, s in samples])
        return metrics

    def advantages(self, kept: list[Group], generated: list[Group]) -> dict[str, float]:
        """Advantages of the kept groups; groups dropped by dynamic sampling get zeros (their rewards are equal)."""
        alg = self.config.algorithm
        values, metrics = batch_advantages(
            [[s.reward for s in g.samples] for g in kept], std_normalize=alg.advantage_std,
            baseline=alg.baseline, ddof=alg.advantage_std_ddof, eps=alg.advantage_eps,
            singleton_rule=alg.singleton_rule)
        kept_ids = {id(g) for g in kept}
        for group in generated:
            if id(group) not in kept_ids:
                group.advantages = [0.0] * len(group.samples)
        for group, adv in zip(kept, values):
            group.advantages = adv if adv is not None else []
        return metrics

    def train(self, groups: list[Group]) -> dict[str, float]:
        cfg = self.config.learner
        alg = self.config.algorithm
        k = self.loss.updates_per_batch
        shards = build_shards(groups, cfg.world_size, updates_per_batch=k, aggregation=alg.loss_aggregation,
                              constant=alg.loss_constant or self.config.rollout.max_new_tokens,
                              mask_truncated=alg.mask_truncated)
        micro = max(_ceil_div(_ceil_div(s.input_ids_BT.shape[0], k), cfg.micro_batch_size) for s in shards)
        return {f"train/{key}": value for key, value in self.learner.train(shards, self.loss, micro).items()}

    def probe(self) -> float:
        """Largest |vLLM logprob - learner logprob| over the fixed probe sequences and every engine."""
        if not self.probe_sequences:
            return float("nan")
        reference = self.learner.sequence_logprobs(self.probe_sequences)
        per_engine = self.rollout_probe(self.probe_sequences)
        return max(abs(a - b) for engine in per_engine for seq_e, seq_l in zip(engine, reference)
                   for a, b in zip(seq_e, seq_l))

    def rif_filter(self, prompts: list[Prompt], k: int, threshold: float, drop_all_correct: bool = False,
                   chunk: int = 256, progress: Callable[[int], None] | None = None,
                   ) -> tuple[list[Prompt], dict[str, float]]:
        """RIF-RFT's pass before training: `k` rollouts per prompt; prompts with no successful rollout (and, when
        asked, those with only successes) are dropped. Returns the kept prompts and the kept fraction per source."""
        kept: list[Prompt] = []
        seen: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for start in range(0, len(prompts), chunk):
            part = prompts[start: start + chunk]
            requests = self.requests(part, -2, k, round_=1 + start // chunk)
            groups = [Group(p, s) for p, s in zip(part, self.rollout.generate(requests))]
            for group in self.score(groups, self.run_columns(0), "RIF pre-pass"):
                wins = sum(s.accuracy >= threshold for s in group.samples)
                keep = wins > 0 and not (drop_all_correct and wins == len(group.samples))
                seen[group.prompt.data_source][0] += 1
                seen[group.prompt.data_source][1] += int(keep)
                if keep:
                    kept.append(group.prompt)
            if progress is not None:
                progress(len(part))
        return kept, {f"rif/kept_frac/{src}": n_kept / n for src, (n, n_kept) in sorted(seen.items())}

    def evaluate(self, prompts: list[Prompt]) -> dict[str, float]:
        """Greedy held-out accuracy (first reward function) per data_source, and their unweighted mean."""
        groups = [Group(p, s) for p, s in zip(prompts, self.rollout.generate(self.requests(prompts, -1, 1, True)))]
        # reward functions only (no shaping or KL terms), with the run columns of the latest step; a completion
        # left without a reward is left out of the mean
        by_source: dict[str, list[float]] = defaultdict(list)
        for group in self.score(groups, self.run_columns(self._last_step), "evaluation"):
            by_source[group.prompt.data_source].append(group.samples[0].accuracy)
        result = {source: _mean(v) for source, v in sorted(by_source.items())}
        result["mean"] = _mean(list(result.values()))
        return result


def _seed(base: int, step: int, index: int, round_: int = 0) -> int:
    key = f"{base}:{step}:{index}" if round_ == 0 else f"{base}:{step}:{round_}:{index}"
    digest = hashlib.blake2b(key.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _mean(values: list[float]) -> float:
    """Mean of the values that are not NaN (a reward function's None); NaN when none is left."""
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else float("nan")
