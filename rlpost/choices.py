"""The closed choices of the recipe schema, one `Literal` type each: the single list of a string (or int) key's
allowed values.

The schema (rlpost/config.py) types its fields with these, the recipe checks derive their table of choices from
those fields, and the pure math modules (rlpost/losses.py, rlpost/advantages.py) take the modes they accept from
here, so a new mode is added in one place. Standard library only: the math modules import it and must stay free of
the config package. Leaves out keys whose values are open (names, paths) or mixed (reward.on_error also takes a
number).
"""

from __future__ import annotations

import typing
from typing import Any, Literal

Dtype = Literal["float32", "bfloat16"]
AttnImplementation = Literal["auto", "sdpa", "eager", "flash_attention_2"]  # auto: transformers' default
DataSource = Literal["embedded", "jsonl", "parquet", "hf"]
ChatTemplate = Literal["auto", "none"]
# '' = no preset; the switches are in rlpost/presets.py
Preset = Literal["", "grpo", "dr_grpo", "dapo", "gspo", "raft", "raft_pp"]
Baseline = Literal["mean", "rloo", "raft"]  # raft: max(reward, 0), no baseline (RAFT / RAFT++)
AdvantageStd = Literal["group", "batch", "none"]
StdDdof = Literal[0, 1]
SingletonRule = Literal["raw", "zero", "drop"]
LossAggregation = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "constant"]
RatioLevel = Literal["token", "sequence"]
PolicyLoss = Literal["ppo", "vanilla"]  # vanilla: -A log pi (RAFT, REINFORCE); ppo: the clipped ratio
KlEstimator = Literal["k1", "k2", "k3"]
TisLevel = Literal["none", "token", "sequence"]
RolloutMode = Literal["sync", "one_step_off", "async"]
PartialLoss = Literal["all", "latest"]
Logger = Literal["tensorboard", "wandb", "mlflow"]  # entries of run.loggers (rlpost/trackers.py)
DynamicSamplingMetric = Literal["reward", "accuracy"]
OnGenRoundsExhausted = Literal["train", "error"]
SamplerKind = Literal["uniform", "mixture", "dump", "prioritised", "staged"]
AllocatorKind = Literal["fixed", "gvm", "gvm_online"]
GradNorm = Literal["embedding", "lm_head"]
AllocatorSchedule = Literal["step", "iteration"]  # when GVM's pre-pass runs (rlpost/collect.py)
ToolFormatKind = Literal["auto", "tag", "chat"]  # how tool calls are written (rlpost/tool_formats.py make_format)
MemoryExtract = Literal["trace", "tag", "all"]  # the reasoning Memory-R+ stores (rlpost/episodic.py extract)
ZeroStage = Literal[0, 1, 2, 3]
Backend = Literal["auto", "gloo", "nccl"]
LoraSync = Literal["adapter", "merged"]  # what a LoRA run's weight sync sends (actors/weight_sync.py)
Transport = Literal["auto", "cpu", "nccl", "ipc"]
PlacementStrategy = Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"]
SweepScheduler = Literal["lcpfn", "asha", "none"]  # early stopping of sweep trials (rlpost/sweep/scheduler.py)
# The named policies of reward.on_error; the key also takes a number (the score failed samples get), so it is
# typed str in the schema and checked in rlpost/recipe_checks.py.
OnErrorPolicy = Literal["raise", "skip"]


def values_of(choice: Any) -> tuple[Any, ...]:
    """The allowed values of a choice type, in the order written (e.g. values_of(KlEstimator) == ('k1', 'k2', 'k3'))."""
    if not is_choice(choice):
        raise TypeError(f"{choice!r} is not a Literal choice type")
    return typing.get_args(choice)


def is_choice(annotation: Any) -> bool:
    """Whether a (resolved) type annotation is a closed choice, i.e. a Literal."""
    return typing.get_origin(annotation) is Literal
