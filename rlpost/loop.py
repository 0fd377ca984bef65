"""The training step, read top to bottom: sample → allocate → generate → score → advantages → train → sync → log.

The trainer only talks to the Protocols of rlpost/types.py, so it imports neither Ray, vLLM nor DeepSpeed.
Leaves out: dynamic sampling / group filtering, allocators other than fixed n, checkpoint/resume (later issues).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Any

from rlpost.advantages import batch_advantages
from rlpost.batching import build_shards
from rlpost.config import RootConfig
from rlpost.metrics import PhaseTimer
from rlpost.types import (
    GenerationRequest,
    Group,
    LearnerGroup,
    LossSpec,
    Prompt,
    RewardPool,
    RewardRequest,
    RolloutEngine,
    WeightSync,
)


class Trainer:
    """Holds the components of a run and advances it one step at a time."""

    def __init__(self, config: RootConfig, rollout: RolloutEngine, learner: LearnerGroup, reward: RewardPool,
                 weight_sync: WeightSync, sampler: Any, probe_sequences: list[list[int]],
                 rollout_probe: Any) -> None:
        self.config, self.rollout, self.learner, self.reward = config, rollout, learner, reward
        self.weight_sync, self.sampler = weight_sync, sampler
        self.probe_sequences, self.rollout_probe = probe_sequences, rollout_probe
        alg = config.algorithm
        self.loss = LossSpec(alg.clip_eps_low, alg.clip_eps_high, alg.updates_per_batch)

    def step(self, step: int) -> dict[str, float]:
        """One GRPO step; returns its metrics (each phase timed)."""
        timer = PhaseTimer()
        with timer.phase("sample"):                                   # 1. which prompts
            prompts = self.sampler.next_batch()
        with timer.phase("allocate"):                                 # 2. how many samples each
            requests = self.requests(prompts, step, self.config.rollout.samples_per_prompt)
        with timer.phase("generate"):                                 # 3. vLLM completions
            groups = [Group(p, s) for p, s in zip(prompts, self.rollout.generate(requests))]
        with timer.phase("reward"):                                   # 4. reward workers
            reward_metrics = self.score(groups)
        with timer.phase("advantage"):                                # 5. group-normalised advantages
            advantage_metrics = self.advantages(groups)
            self.sampler.update(groups)
        with timer.phase("train"):                                    # 6. clipped GRPO update
            train_metrics = self.train(groups)
        with timer.phase("sync"):                                     # 7. weights into vLLM, then probe
            sync_metrics = self.weight_sync.sync()
            sync_metrics["sync/probe_max_abs_diff"] = self.probe()
        metrics = {**reward_metrics, **advantage_metrics, **train_metrics, **sync_metrics, **timer.seconds}
        metrics["time/step"] = sum(timer.seconds.values())
        return metrics

    def requests(self, prompts: list[Prompt], step: int, n: int, greedy: bool = False) -> list[GenerationRequest]:
        """Generation requests with a per-request seed derived from (run seed, step, position): reruns repeat."""
        cfg = self.config.rollout
        return [GenerationRequest(
            prompt_uid=p.uid, token_ids=p.token_ids, n=n,
            max_new_tokens=self.config.run.eval_max_new_tokens if greedy else cfg.max_new_tokens,
            temperature=0.0 if greedy else cfg.temperature, top_p=1.0 if greedy else cfg.top_p,
            seed=_seed(self.config.rollout.seed, step, i)) for i, p in enumerate(prompts)]

    def score(self, groups: list[Group]) -> dict[str, float]:
        """Rewards for every sample (stored on the samples), plus reward, accuracy and length metrics."""
        samples = [(g.prompt, s) for g in groups for s in g.samples]
        columns: dict[str, list[Any]] = defaultdict(list)
        for prompt, _ in samples:
            for key, value in prompt.columns.items():
                columns[key].append(value)
        result = self.reward.score(RewardRequest(
            prompts=[p.text for p, _ in samples], completions=[s.text for _, s in samples],
            completion_ids=[s.token_ids for _, s in samples], columns=dict(columns)))
        first = next(iter(result.components.values()))
        for i, (_, sample) in enumerate(samples):
            sample.reward = result.rewards[i]
            sample.reward_components = {name: values[i] for name, values in result.components.items()}
        metrics = {"reward/mean": _mean(result.rewards)}
        by_source: dict[str, list[float]] = defaultdict(list)
        for (prompt, _), value in zip(samples, first):
            by_source[prompt.data_source].append(value)
        metrics.update({f"acc/{source}": _mean(v) for source, v in sorted(by_source.items())})
        metrics["acc/mean"] = _mean(first)
        lengths = [len(s.token_ids) for _, s in samples]
        metrics["tokens/generated"] = float(sum(lengths))
        metrics["tokens/completion_len_mean"] = _mean(lengths)
        metrics["tokens/truncated_frac"] = _mean([float(s.finish_reason == "length") for _, s in samples])
        return metrics

    def advantages(self, groups: list[Group]) -> dict[str, float]:
        alg = self.config.algorithm
        values, metrics = batch_advantages(
            [[s.reward for s in g.samples] for g in groups], std_normalize=alg.advantage_std_normalize,
            ddof=alg.advantage_std_ddof, eps=alg.advantage_eps, singleton_rule=alg.singleton_rule)
        for group, adv in zip(groups, values):
            group.advantages = adv
        return metrics

    def train(self, groups: list[Group]) -> dict[str, float]:
        cfg = self.config.learner
        shards = build_shards(groups, cfg.world_size)
        k = self.loss.updates_per_batch
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

    def evaluate(self, prompts: list[Prompt]) -> dict[str, float]:
        """Greedy held-out accuracy (first reward function) per data_source, and their unweighted mean."""
        groups = [Group(p, s) for p, s in zip(prompts, self.rollout.generate(self.requests(prompts, -1, 1, True)))]
        self.score(groups)
        by_source: dict[str, list[float]] = defaultdict(list)
        for group in groups:
            by_source[group.prompt.data_source].append(next(iter(group.samples[0].reward_components.values())))
        result = {source: _mean(v) for source, v in sorted(by_source.items())}
        result["mean"] = _mean(list(result.values()))
        return result


def _seed(base: int, step: int, index: int) -> int:
    digest = hashlib.blake2b(f"{base}:{step}:{index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")
