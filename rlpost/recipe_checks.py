"""Checks of a loaded recipe's values beyond their types: allowed choices, ranges, and keys that only make sense
together. Every failure is a RecipeError naming the key path and the recipe (or the command line)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlpost.config import RecipeError, RewardConfig, RootConfig

# DeepSpeed keys rlpost derives itself (the learner owns accumulation): learner.deepspeed may not set them.
DEEPSPEED_OWNED = ("train_micro_batch_size_per_gpu", "train_batch_size", "gradient_accumulation_steps",
                   "managed_gradient_accumulation")

CHOICES: dict[str, tuple[Any, ...]] = {
    "model.dtype": ("float32", "bfloat16"),
    "algorithm.preset": ("", "grpo", "dr_grpo", "dapo", "gspo"),
    "algorithm.baseline": ("mean", "rloo"),
    "algorithm.advantage_std": ("group", "batch", "none"),
    "algorithm.singleton_rule": ("raw", "zero", "drop"),
    "algorithm.loss_aggregation": ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "constant"),
    "algorithm.ratio_level": ("token", "sequence"),
    "algorithm.kl_estimator": ("k1", "k2", "k3"),
    "algorithm.tis_level": ("none", "token", "sequence"),
    "algorithm.dynamic_sampling_metric": ("reward", "accuracy"),
    "algorithm.on_gen_rounds_exhausted": ("train", "error"),
    "sampler.kind": ("uniform", "mixture", "dump", "prioritised", "staged"),
    "allocator.kind": ("fixed", "gvm", "gvm_online"),
    "allocator.grad_norm": ("embedding", "lm_head"),
    "learner.zero_stage": (0, 1, 2, 3),
    "learner.backend": ("auto", "gloo", "nccl"),
    "sync.transport": ("auto", "cpu", "nccl", "ipc"),
    "data.source": ("embedded", "jsonl", "parquet", "hf"),
    "data.chat_template": ("auto", "none"),
    "resources.strategy": ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"),
}


def check_values(config: RootConfig, origin: str) -> None:
    """Values the types allow but the recipe may not use: choices, ranges, and combinations of keys."""
    for key, allowed in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if value not in allowed:
            raise RecipeError(f"{origin}: key '{key}' is {value!r}; allowed: {', '.join(map(repr, allowed))}")
    _check_reward(config.reward, origin)
    if config.checkpoint.every < 0 or config.checkpoint.keep_last < 1 or config.checkpoint.stop_grace_s < 0:
        raise RecipeError(f"{origin}: keys 'checkpoint.every' (>= 0), 'checkpoint.keep_last' (>= 1) and "
                          "'checkpoint.stop_grace_s' (>= 0) must be in range")
    owned = sorted(set(DEEPSPEED_OWNED) & set(config.learner.deepspeed))
    if owned:
        raise RecipeError(f"{origin}: key 'learner.deepspeed' sets {owned}, which rlpost derives (use "
                          "learner.micro_batch_size and algorithm.updates_per_batch)")
    if config.data.source != "embedded" and not config.data.path:
        raise RecipeError(f"{origin}: key 'data.path' is required when data.source is {config.data.source!r} "
                          "(a jsonl/parquet file, may contain '{split}', or a Hugging Face dataset id)")
    for key in ("algorithm.prompts_per_step", "rollout.samples_per_prompt", "learner.world_size",
                "rollout.num_engines", "reward.num_workers", "reward.chunk_size", "learner.micro_batch_size",
                "algorithm.updates_per_batch", "algorithm.epochs", "algorithm.max_gen_rounds",
                "allocator.prepass_samples"):
        section, name = key.split(".")
        if getattr(getattr(config, section), name) < 1:
            raise RecipeError(f"{origin}: key '{key}' must be at least 1")
    alg = config.algorithm
    if alg.dual_clip_c and alg.dual_clip_c <= 1.0:
        raise RecipeError(f"{origin}: key 'algorithm.dual_clip_c' must be 0 (off) or greater than 1, "
                          f"got {alg.dual_clip_c}")
    if alg.tis_cap <= 0:
        raise RecipeError(f"{origin}: key 'algorithm.tis_cap' must be positive, got {alg.tis_cap}")
    if alg.kl_coef < 0 or alg.entropy_coef < 0:
        raise RecipeError(f"{origin}: keys 'algorithm.kl_coef' and 'algorithm.entropy_coef' must not be negative")
    smp = config.sampler
    if smp.kind == "mixture" and not smp.mixture_weights:
        raise RecipeError(f"{origin}: sampler.kind is 'mixture' but key 'sampler.mixture_weights' is empty "
                          "(give a weight per data_source, e.g. sampler.mixture_weights.sum5=2.0)")
    if smp.kind == "staged" and not smp.staged_sources:
        raise RecipeError(f"{origin}: sampler.kind is 'staged' but key 'sampler.staged_sources' is empty")
    if smp.dump_window < 1 or smp.dump_temperature <= 0 or smp.dump_exploration < 0:
        raise RecipeError(f"{origin}: keys 'sampler.dump_window' (>= 1), 'sampler.dump_temperature' (> 0) and "
                          "'sampler.dump_exploration' (>= 0) are out of range")
    if smp.rif_k < 0 or smp.budget_initial < 0 or smp.budget_interval < 1 or not 0 < smp.budget_decay <= 1:
        raise RecipeError(f"{origin}: keys 'sampler.rif_k' (>= 0), 'sampler.budget_initial' (>= 0), "
                          "'sampler.budget_interval' (>= 1) and 'sampler.budget_decay' (in (0, 1]) are out of range")
    if alg.overlong_shaping and not 0 <= alg.overlong_buffer < config.rollout.max_new_tokens:
        raise RecipeError(f"{origin}: key 'algorithm.overlong_buffer' must be in [0, rollout.max_new_tokens="
                          f"{config.rollout.max_new_tokens}), got {alg.overlong_buffer}")


def _check_reward(reward: RewardConfig, origin: str) -> None:
    from rewards import reward_name

    if reward.weights and len(reward.weights) != len(reward.functions):
        raise RecipeError(f"{origin}: key 'reward.weights' has {len(reward.weights)} entries for "
                          f"{len(reward.functions)} reward.functions")
    if not reward.functions:
        raise RecipeError(f"{origin}: key 'reward.functions' is empty; name at least one reward function")
    names = [reward_name(spec) for spec in reward.functions]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise RecipeError(f"{origin}: key 'reward.functions' has two functions named {twice}; reward names "
                          "(metrics, reward.args keys) must differ")
    unknown = sorted(set(reward.args) - set(names))
    if unknown:
        raise RecipeError(f"{origin}: key 'reward.args' names {unknown}, which are not in reward.functions "
                          f"(names: {names})")
    for name, value in reward.args.items():
        if not isinstance(value, Mapping):
            raise RecipeError(f"{origin}: key 'reward.args.{name}' must be a mapping of argument: value, "
                              f"got {value!r}")
    if reward.on_error not in ("raise", "skip"):
        try:
            float(reward.on_error)
        except ValueError:
            raise RecipeError(f"{origin}: key 'reward.on_error' is {reward.on_error!r}; allowed: 'raise', 'skip' "
                              "or a number") from None
    if not 0.0 <= reward.max_error_rate <= 1.0 or reward.timeout_s <= 0 or reward.memory_mb < 0:
        raise RecipeError(f"{origin}: keys 'reward.max_error_rate' (in [0, 1]), 'reward.timeout_s' (> 0) and "
                          "'reward.memory_mb' (>= 0) are out of range")
