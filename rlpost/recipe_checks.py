"""Checks of a loaded recipe's values beyond their types: allowed choices, ranges, and keys that only make sense
together. Every failure is a RecipeError naming the key path and the recipe (or the command line).

The choices come from the schema's `Literal` field types (rlpost/choices.py) and the ranges from each field's
`doc(..., range=...)` in rlpost/config.py, never from a list kept here. Imports the schema only: the loader
(rlpost/recipes.py) calls these checks, and nothing here imports the loader or the reward plugins."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rlpost.choices import Logger, OnErrorPolicy, values_of
from rlpost.config import (
    MAX_SAMPLES_PER_STEP,
    RecipeError,
    RewardConfig,
    RootConfig,
    choice_fields,
    range_fields,
    reward_name,
)

if TYPE_CHECKING:
    from rlpost.types import Prompt

# DeepSpeed keys rlpost derives itself (the learner owns accumulation): learner.deepspeed may not set them.
DEEPSPEED_OWNED = ("train_micro_batch_size_per_gpu", "train_batch_size", "gradient_accumulation_steps",
                   "managed_gradient_accumulation")

# Every choice key (typed by a Literal in the schema) and its allowed values, in schema order.
CHOICES: dict[str, tuple[Any, ...]] = choice_fields()

# Every int and float key of the schema with its allowed interval ("(" and ")" leave the bound out), declared beside
# its field in rlpost/config.py (`doc(..., range=...)`). Floats must be finite too: nan and inf are refused everywhere.
RANGES: dict[str, str] = range_fields("range")
# Keys holding lists or mappings of numbers: the interval holds for every entry (`doc(..., entries=...)`).
ENTRY_RANGES: dict[str, str] = range_fields("entries")


def in_interval(value: float, interval: str) -> bool:
    """Whether `value` lies in an interval written "[lo, hi]", "(lo, hi]", ...; nan and inf never do."""
    low, high = (float(bound) for bound in interval[1:-1].split(","))
    if not math.isfinite(value):
        return False
    above = value > low if interval[0] == "(" else value >= low
    below = value < high if interval[-1] == ")" else value <= high
    return above and below


def _value(config: RootConfig, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(config, section), name)


def check_values(config: RootConfig, origin: str) -> None:
    """Values the types allow but the recipe may not use: choices, ranges, and combinations of keys."""
    for key, allowed in CHOICES.items():
        value = _value(config, key)
        if value not in allowed:
            raise RecipeError(f"{origin}: key '{key}' is {value!r}; allowed: {', '.join(map(repr, allowed))}")
    _check_ranges(config, origin)
    _check_reward(config.reward, origin, config.environment.enabled)
    _check_environment(config, origin)
    _check_lora(config, origin)
    unknown = [name for name in config.run.loggers if name not in values_of(Logger)]
    if unknown:
        raise RecipeError(f"{origin}: key 'run.loggers' has {unknown}; allowed: {', '.join(values_of(Logger))}")
    owned = sorted(set(DEEPSPEED_OWNED) & set(config.learner.deepspeed))
    if owned:
        raise RecipeError(f"{origin}: key 'learner.deepspeed' sets {owned}, which rlpost derives (use "
                          "learner.micro_batch_size and algorithm.updates_per_batch)")
    _check_embedded_sources(config, origin)
    if config.data.source != "embedded" and not config.data.path:
        raise RecipeError(f"{origin}: key 'data.path' is required when data.source is {config.data.source!r} "
                          "(a jsonl/parquet file, may contain '{split}', or a Hugging Face dataset id)")
    alg = config.algorithm
    if alg.dual_clip_c and alg.dual_clip_c <= 1.0:
        raise RecipeError(f"{origin}: key 'algorithm.dual_clip_c' must be 0 (off) or greater than 1, "
                          f"got {alg.dual_clip_c}")
    if config.allocator.train_prepass and config.rollout.partial_max_tokens:
        raise RecipeError(f"{origin}: key 'allocator.train_prepass' cannot be used with rollout.partial_max_tokens "
                          "(a parked group's pre-pass samples would train at another step)")
    if alg.baseline == "raft" and alg.advantage_std != "none":
        raise RecipeError(f"{origin}: key 'algorithm.baseline' is 'raft' (advantage max(reward, 0)), which takes no "
                          f"std normalisation, but algorithm.advantage_std is {alg.advantage_std!r}: set it to "
                          "'none' (the raft and raft_pp presets do)")
    if alg.advantage_std != "none" and alg.advantage_eps <= 0:  # a group of equal rewards would give 0 / 0
        raise RecipeError(f"{origin}: key 'algorithm.advantage_eps' must be positive when algorithm.advantage_std "
                          f"is {alg.advantage_std!r}, got {alg.advantage_eps}")
    smp = config.sampler
    if smp.kind == "mixture" and not smp.mixture_weights:
        raise RecipeError(f"{origin}: sampler.kind is 'mixture' but key 'sampler.mixture_weights' is empty "
                          "(give a weight per data_source, e.g. sampler.mixture_weights.sum5=2.0)")
    if smp.kind == "staged" and not smp.staged_sources:
        raise RecipeError(f"{origin}: sampler.kind is 'staged' but key 'sampler.staged_sources' is empty")
    if alg.overlong_shaping and not 0 <= alg.overlong_buffer < config.rollout.max_new_tokens:
        raise RecipeError(f"{origin}: key 'algorithm.overlong_buffer' must be in [0, rollout.max_new_tokens="
                          f"{config.rollout.max_new_tokens}), got {alg.overlong_buffer}")


def _check_ranges(config: RootConfig, origin: str) -> None:
    """Every numeric key, and every entry of numeric lists and mappings, finite and inside its interval; generation
    caps below the context length; a step's completions within memory."""
    for key, interval in RANGES.items():
        value = _value(config, key)
        if not in_interval(value, interval):
            kind = "an integer" if isinstance(value, int) else "a finite number"
            raise RecipeError(f"{origin}: key '{key}' is {value!r}; allowed: {kind} in {interval}")
    for key, interval in ENTRY_RANGES.items():
        entries = _value(config, key)
        for name, value in entries.items() if isinstance(entries, Mapping) else enumerate(entries):
            if not in_interval(value, interval):
                raise RecipeError(f"{origin}: key '{key}' has {value!r} at {name!r}; allowed: finite numbers in "
                                  f"{interval}")
    if len(config.learner.betas) != 2:
        raise RecipeError(f"{origin}: key 'learner.betas' must hold two numbers (AdamW's beta1 and beta2), got "
                          f"{list(config.learner.betas)}")
    limit = config.rollout.max_model_len
    for key in ("rollout.max_new_tokens", "run.eval_max_new_tokens", "data.max_prompt_tokens"):
        if _value(config, key) >= limit:  # vLLM's context holds the prompt and the completion
            raise RecipeError(f"{origin}: key '{key}' is {_value(config, key)}; it must be below "
                              f"rollout.max_model_len={limit}, which holds prompt and completion together")
    per_step = config.algorithm.prompts_per_step * config.rollout.samples_per_prompt
    if per_step > MAX_SAMPLES_PER_STEP:
        raise RecipeError(f"{origin}: keys 'algorithm.prompts_per_step' x 'rollout.samples_per_prompt' ask for "
                          f"{per_step} completions per step; at most {MAX_SAMPLES_PER_STEP}")


def check_against_data(config: RootConfig, train: Sequence[Prompt], evaluation: Sequence[Prompt] = ()) -> list[str]:
    """Checks that need the tokenized prompts, run after loading the data and before any actor starts: raises
    RecipeError on an error, returns warnings to print.

    A prompt whose tokens plus its generation cap exceed rollout.max_model_len is an error: vLLM would end its
    completions at the context limit, shorter than the cap, and nothing would say so.
    prompts_per_step above the prompts a step draws from is a warning, not an error: the run is well defined (the
    uniform sampler goes through the data epoch after epoch, so each step holds every prompt about B/N times and
    every prompt is trained equally), tiny files under a default recipe are how people smoke-test a dataset (our
    own test fixtures do), and the cost is compute rather than a wrong gradient. It still says what happens and how
    to get it properly (rollout.samples_per_prompt), since the probe that found it got no word at all.
    """
    limit = config.rollout.max_model_len
    for split, prompts, cap_key in ((config.data.train_split, train, "rollout.max_new_tokens"),
                                    (config.data.eval_split, evaluation, "run.eval_max_new_tokens")):
        cap = _value(config, cap_key)
        longest = max(prompts, key=lambda p: len(p.token_ids), default=None)
        if longest is not None and len(longest.token_ids) + cap > limit:
            raise RecipeError(f"key 'rollout.max_model_len' is {limit} but row {longest.uid} of split {split!r} "
                              f"has {len(longest.token_ids)} prompt tokens and {cap_key} is {cap}: vLLM would cut "
                              "its completions at the context limit; raise max_model_len, lower the cap or filter "
                              "the data")
    steps, smp = config.algorithm.prompts_per_step, config.sampler
    pools = [("the training split", len(train))]
    if smp.kind == "staged":
        staged = sum(p.data_source in set(smp.staged_sources) for p in train)
        pools.append((f"sampler.staged_sources (from step {smp.staged_from_step})", staged))
    return [f"key 'algorithm.prompts_per_step' is {steps} but {name} has {size} prompts, so each step repeats "
            f"prompts about {steps / max(size, 1):.0f} times; set it to at most {size} and raise "
            "rollout.samples_per_prompt for more completions per prompt" for name, size in pools if steps > size]


def _check_embedded_sources(config: RootConfig, origin: str) -> None:
    """Known 'sumK' / 'traceK' names, at least one, none twice, one family, and the embedded model that knows it."""
    from rlpost.embedded.tasks import digits

    sources = config.data.embedded_sources
    if not sources:
        raise RecipeError(f"{origin}: key 'data.embedded_sources' is empty; list at least one source, e.g. [sum3]")
    for name in sources:
        try:
            digits(str(name))
        except ValueError as err:
            raise RecipeError(f"{origin}: key 'data.embedded_sources': {err}") from None
    twice = sorted({s for s in sources if sources.count(s) > 1})
    if twice:
        raise RecipeError(f"{origin}: key 'data.embedded_sources' lists {twice} more than once")
    traces = [s for s in sources if s.startswith("trace")]
    if traces and len(traces) < len(sources):
        raise RecipeError(f"{origin}: key 'data.embedded_sources' mixes 'sumK' and 'traceK' sources; a run uses "
                          "one family (their base models differ)")
    if config.data.source != "embedded":
        return
    wanted = "embedded_trace" if traces else "embedded"
    if config.model.path == "embedded_tool" and not traces:
        return  # the tool task's model answers digit sums too
    if config.model.path in ("embedded", "embedded_trace", "embedded_tool") and config.model.path != wanted:
        raise RecipeError(f"{origin}: key 'model.path' is {config.model.path!r} but data.embedded_sources are "
                          f"{'trace' if traces else 'digit-sum'} sources; use model.path={wanted}")


def _check_lora(config: RootConfig, origin: str) -> None:
    """LoRA keys that cannot work together."""
    model = config.model
    if model.load_in_4bit and not model.lora_rank:
        raise RecipeError(f"{origin}: key 'model.load_in_4bit' needs model.lora_rank > 0 (QLoRA trains adapters on a "
                          "frozen 4-bit base)")
    if not model.lora_rank:
        return
    if not model.lora_target_modules:
        raise RecipeError(f"{origin}: key 'model.lora_target_modules' is empty; name the linear layers that get "
                          "adapters (e.g. [q_proj, v_proj])")
    if config.allocator.kind in ("gvm", "gvm_online"):
        raise RecipeError(f"{origin}: key 'allocator.kind' is {config.allocator.kind!r}, whose gradient norms are "
                          "taken on the embedding or lm_head, which LoRA leaves frozen; use allocator.kind=fixed")
    if model.load_in_4bit and config.learner.zero_stage == 3:
        raise RecipeError(f"{origin}: key 'learner.zero_stage' is 3, which cannot shard a 4-bit base "
                          "(model.load_in_4bit); use stage 0-2")


def _check_environment(config: RootConfig, origin: str) -> None:
    """Multi-turn recipes: one way to name the environments, and no feature that would train or score environment
    tokens as the model's."""
    env = config.environment
    if not env.enabled:
        return
    if env.factory and env.factories:
        raise RecipeError(f"{origin}: keys 'environment.factory' and 'environment.factories' are both set; give one "
                          "(factories picks one per row by its 'environment' column)")
    if config.rollout.partial_max_tokens:
        raise RecipeError(f"{origin}: key 'rollout.partial_max_tokens' cannot be used with environments (an episode "
                          "is not parked between steps)")
    if config.algorithm.kl_in_reward and config.algorithm.kl_coef:
        raise RecipeError(f"{origin}: key 'algorithm.kl_in_reward' cannot be used with environments (its KL would "
                          "count the environment's tokens); use the KL loss term (kl_in_reward false)")


def _check_reward(reward: RewardConfig, origin: str, environments: bool = False) -> None:
    if reward.weights and len(reward.weights) != len(reward.functions):
        raise RecipeError(f"{origin}: key 'reward.weights' has {len(reward.weights)} entries for "
                          f"{len(reward.functions)} reward.functions")
    if not reward.functions and not environments:  # an environment's get_reward may score alone (checked later)
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
    policies = values_of(OnErrorPolicy)
    if reward.on_error not in policies:
        try:
            finite = math.isfinite(float(reward.on_error))  # a nan score would poison its group's advantages
        except ValueError:
            finite = False
        if not finite:
            raise RecipeError(f"{origin}: key 'reward.on_error' is {reward.on_error!r}; allowed: "
                              f"{', '.join(map(repr, policies))} or a finite number")
