"""The training step, read top to bottom: **collect** (sample → allocate → generate → score; rlpost/collect.py),
then **learn** (advantages → train → sync → probe). The run loop around it (rlpost/app/run.py) logs each step's
metrics and writes checkpoints. Off sync (`rollout.mode`), the step's batch was collected earlier and the collection
of a later step runs while this one trains (rlpost/pipeline.py); in sync mode the same calls run in turn.

The trainer talks only to the Protocols of rlpost/types.py (`Workers`, `PromptSampler`, `Allocator`), so it imports
neither Ray, vLLM nor DeepSpeed. The sampler is updated right after the advantages, so step t's feedback shapes
the prompts of step t+1 (of step t+k with a lag of k).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from rlpost.advantages import batch_advantages
from rlpost.allocators import make_allocator
from rlpost.batching import compact_shards, micro_count
from rlpost.collect import Collector, StepBatch
from rlpost.config import RootConfig
from rlpost.flops import mfu
from rlpost.losses import LossSpec
from rlpost.metrics import PhaseTimer
from rlpost.partial import trained_version
from rlpost.pipeline import Pipeline, rollout_lag
from rlpost.prepass import evaluate
from rlpost.rollouts import Rollouts, mean, run_columns
from rlpost.types import Allocator, Group, LearnerGroup, Prompt, PromptSampler, RolloutEngine, Workers


def loss_spec(config: RootConfig) -> LossSpec:
    """The learner's view of the algorithm section, field by field (KL goes into the reward instead when
    kl_in_reward); off sync, the proximal-policy correction for stale samples (rlpost/pipeline.py)."""
    alg = config.algorithm
    spec = LossSpec(**{f.name: getattr(alg, f.name) for f in dataclasses.fields(LossSpec)
                       if f.name not in LossSpec.DERIVED})
    spec = dataclasses.replace(spec, proximal=rollout_lag(config) > 0)
    return dataclasses.replace(spec, kl_coef=0.0) if alg.kl_in_reward else spec


class Trainer:
    """Advances a run one step at a time over the workers; owns the step's sampler and allocator state."""

    def __init__(self, config: RootConfig, workers: Workers, sampler: PromptSampler, *,
                 allocator: Allocator | None = None, rollouts: Rollouts | None = None,
                 probe_sequences: list[list[int]] | None = None) -> None:
        self.config, self.workers, self.sampler = config, workers, sampler
        self.allocator: Allocator = allocator if allocator is not None else make_allocator(
            config.allocator, config.rollout.samples_per_prompt)
        self.rollouts = rollouts or Rollouts(config, workers.rollout, workers.reward)
        self.collector = Collector(config, self.rollouts, workers.learner, sampler, self.allocator, workers.memory)
        self.pipeline = Pipeline(self.collector, rollout_lag(config), config.run.steps)
        self.loss = loss_spec(config)
        self.probe_sequences = probe_sequences or []
        self.version = 0  # policy version: learner updates so far (a checkpoint keeps it)
        self.samples: list[dict[str, Any]] = []  # the last step's logged completions (run.log_samples_every)
        self._last_step = 0

    def step(self, step: int) -> dict[str, float]:
        """One GRPO-family step; returns its metrics, each phase timed."""
        timer, started = PhaseTimer(), time.perf_counter()
        self._last_step = step
        batch = self.pipeline.take(step, timer)          # 1-4. sample, allocate, generate, score (or collected ahead)
        metrics = self.learn(batch, timer)               # 5-7. advantages, train (+ collect ahead), sync (+ probe)
        wall = time.perf_counter() - started
        timing = step_timing(timer, wall, metrics["tokens/generated"])
        timing["rollout/idle_frac"] = max(0.0, 1.0 - self.pipeline.generate_s / wall) if wall > 0 else float("nan")
        return {**metrics, **batch.timing, **timing}

    def learn(self, batch: StepBatch, timer: PhaseTimer) -> dict[str, float]:
        """Advantages of the kept groups (and the sampler's feedback), the policy update (while a later batch is
        collected, off sync) and the weight sync; a step whose groups all carry no signal trains nothing."""
        with timer.phase("advantage"):                                # 5. group-relative advantages
            advantage_metrics = self.advantages(batch.kept, batch.generated)
            self.sampler.update(batch.generated)
        every = self.config.run.log_samples_every
        self.samples = (sample_records(batch.generated, self.config.run.log_samples_per_source)
                        if every and batch.step % every == 0 else [])
        metrics = {**reward_metrics(batch.generated), **batch.health, **advantage_metrics, **self.sampler.metrics(),
                   **batch_metrics(batch),
                   **staleness_metrics(batch, self.version, self.config.rollout.partial_loss == "latest")}
        trained = [g for g in batch.kept if g.advantages]
        with timer.phase("train"):                                    # 6. policy update
            wait = self.submit_train(trained) if trained else None
            self.pipeline.launch(batch.step)  # after the train calls are queued: see rlpost/pipeline.py
            result = wait() if wait is not None else {}
        if self.pipeline.lag:
            with timer.phase("wait"):
                self.pipeline.join()
        if not trained:
            print(f"[rlpost] warning: step {batch.step} has no group to train on; the policy is unchanged",
                  file=sys.stderr, flush=True)
            return metrics
        self.version += 1
        metrics.update(result)
        metrics["perf/mfu"] = mfu(metrics["perf/model_flops"], timer.seconds["time/train"], metrics["perf/peak_flops"])
        with timer.phase("sync"):                                     # 7. weights into vLLM, then probe
            metrics.update(self.workers.weight_sync.sync())
            metrics["sync/probe_max_abs_diff"] = self.probe()
            if self.config.model.lora_rank and self.config.sync.lora == "adapter":  # the base never takes a merge
                metrics["sync/base_probe_max_abs_diff"] = probe_diff(self.workers.rollout, self.workers.learner,
                                                                     self.probe_sequences, base=True)
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
        """The policy update over the learner ranks, waited for."""
        return self.submit_train(groups)()

    def submit_train(self, groups: list[Group]) -> Callable[[], dict[str, float]]:
        """The policy update queued on every learner rank (the groups cut into one compact shard per rank); the
        result waits for it and gives the `train/*` and `perf/*` metrics."""
        cfg = self.config.learner
        alg = self.config.algorithm
        k = self.loss.updates_per_batch
        shards = compact_shards(groups, cfg.world_size, updates_per_batch=k, aggregation=alg.loss_aggregation,
                                constant=alg.loss_constant or self.config.rollout.max_new_tokens,
                                mask_truncated=alg.mask_truncated,
                                latest_segment_only=self.config.rollout.partial_loss == "latest")
        micro = micro_count(shards, k, cfg.micro_batch_size, cfg.max_tokens_per_micro, cfg.packing)
        wait = self.workers.learner.submit_train(shards, self.loss, micro, cfg.max_tokens_per_micro)

        def metrics() -> dict[str, float]:
            sums = wait()
            positions, trained = sums.pop("positions", 0.0), sums.pop("trained_positions", 0.0)
            perf = {"perf/padding_frac": 1.0 - trained / positions} if positions else {}
            perf.update({f"perf/{key}": sums.pop(key, float("nan")) for key in ("model_flops", "peak_flops")})
            perf.update({f"memory/{name}": sums.pop(key) for key, name in MEMORY_KEYS.items() if key in sums})
            return {**{f"train/{key}": value for key, value in sums.items()}, **perf}

        return metrics

    def probe(self) -> float:
        """Largest |vLLM logprob - learner logprob| over the fixed probe sequences and every engine."""
        return probe_diff(self.workers.rollout, self.workers.learner, self.probe_sequences)

    def evaluate(self, prompts: list[Prompt], sampled: bool = False) -> dict[str, float]:
        """Greedy (or sampled, mean of run.eval_samples) held-out accuracy per data_source, their mean and its
        standard error (se/mean), with the run columns of the latest step."""
        return evaluate(self.rollouts, prompts, run_columns(self.config, self._last_step), sampled,
                        self.config.run.eval_samples)

    def held_out(self, prompts: list[Prompt]) -> dict[str, float]:
        """Both evals as metrics: eval/<source>, eval/mean, eval/se/mean (greedy) and eval/sampled/*."""
        metrics = {f"eval/{k}": v for k, v in self.evaluate(prompts).items()}
        metrics.update({f"eval/sampled/{k}": v for k, v in self.evaluate(prompts, sampled=True).items()})
        return metrics


# the learner's memory sums (actors/learner.py `_memory`) -> memory/* metric names
MEMORY_KEYS = {"trainable_params_max": "trainable_params", "optimizer_state_mb": "optimizer_state_mb",
               "peak_rss_mb_max": "learner_peak_rss_mb"}


def probe_diff(rollout: RolloutEngine, learner: LearnerGroup, sequences: list[list[int]], base: bool = False
               ) -> float:
    """Largest |vLLM logprob - learner logprob| over `sequences` and every engine (NaN without sequences); `base`:
    of a LoRA run's base alone (vLLM without the adapter, the learner with it off), which must never move."""
    if not sequences:
        return float("nan")
    reference = learner.sequence_logprobs(sequences, base)
    return max(abs(a - b) for engine in rollout.sequence_logprobs(sequences, base) for seq_e, seq_l in
               zip(engine, reference) for a, b in zip(seq_e, seq_l))


def step_timing(timer: PhaseTimer, wall_s: float, tokens: float) -> dict[str, float]:
    """Each phase's seconds, their sum (`time/step`), the step's wall clock and what no phase holds
    (`time/overhead`: the driver's own Python between phases), and generated tokens per second of wall clock."""
    phases = sum(timer.seconds.values())
    return {**timer.seconds, "time/step": phases, "time/wall": wall_s, "time/overhead": max(0.0, wall_s - phases),
            "perf/tokens_per_s": tokens / wall_s if wall_s > 0 else float("nan")}


def sample_records(groups: list[Group], per_source: int) -> list[dict[str, Any]]:
    """A few scored completions per data_source for people to read: one from each of the first `per_source` groups
    of the source, with every reward function's value, the total, the advantage and the length."""
    by_source: dict[str, list[Group]] = defaultdict(list)
    for group in groups:
        if len(by_source[group.prompt.data_source]) < per_source:
            by_source[group.prompt.data_source].append(group)
    out = []
    for source in sorted(by_source):
        for group in by_source[source]:
            sample = group.samples[0]
            out.append({"data_source": source, "prompt": group.prompt.text, "answer": group.prompt.answer,
                        "completion": sample.text, "rewards": dict(sample.reward_components),
                        "reward": sample.reward, "advantage": group.advantages[0] if group.advantages else None,
                        "length": len(sample.token_ids), "finish_reason": sample.finish_reason,
                        "version": sample.version})
    return out


def staleness_metrics(batch: StepBatch, version: int, latest_only: bool = False) -> dict[str, float]:
    """How many policy versions the batch's samples lag the weights about to train on them (0 in sync mode): by
    the oldest segment in the loss, for a continued partial rollout."""
    lags = [version - trained_version(s, latest_only) for g in batch.generated for s in g.samples]
    if not lags:
        return {}
    return {"rollout/policy_version": float(version), "rollout/staleness_mean": sum(lags) / len(lags),
            "rollout/staleness_max": float(max(lags))}


def batch_metrics(batch: StepBatch) -> dict[str, float]:
    """What the step generated and kept: allocation and pre-pass numbers, B(t), completions, tokens, groups."""
    metrics = dict(batch.metrics)
    if batch.budget is not None:
        metrics["curriculum/length_budget"] = batch.budget
    metrics["rollout/completions"] = float(batch.completions)
    metrics["tokens/generated"] = float(batch.tokens)
    metrics.update({"groups/generated": float(len(batch.generated)), "groups/kept": float(len(batch.kept)),
                    "groups/dropped": float(len(batch.generated) - len(batch.kept)),
                    "groups/gen_rounds": float(batch.rounds)})
    return metrics


def reward_metrics(groups: list[Group]) -> dict[str, float]:
    """Reward, accuracy (first reward function) per data_source, lengths and truncation of the step's samples."""
    samples = [(g.prompt, s) for g in groups for s in g.samples]
    first = [s.accuracy for _, s in samples]
    metrics = {"reward/mean": mean([s.reward for _, s in samples])}
    names = {name for _, s in samples for name in s.reward_components}
    for name in sorted(names):
        metrics[f"reward/{name}"] = mean([s.reward_components.get(name, 0.0) for _, s in samples])
    by_source: dict[str, list[float]] = defaultdict(list)
    for (prompt, _), value in zip(samples, first):
        by_source[prompt.data_source].append(value)
    metrics.update({f"acc/{source}": mean(v) for source, v in sorted(by_source.items())})
    metrics["acc/mean"] = mean(first)
    lengths = [len(s.token_ids) for _, s in samples]
    metrics["tokens/completion_len_mean"] = mean(lengths)
    metrics["tokens/truncated_frac"] = mean([float(s.finish_reason == "length") for _, s in samples])
    return metrics
