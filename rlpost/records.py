"""Samples and groups as JSON-ready records, for what a checkpoint keeps of the driver's in-flight work (batches
collected ahead of their step, partial rollouts parked between steps). Exact: ids come back as int32 arrays,
logprobs as the same float32 values, a NaN reward as NaN."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rlpost.types import Group, Prompt, Sample


def encode_sample(s: Sample) -> dict[str, Any]:
    return {"prompt_uid": s.prompt_uid, "token_ids": [int(t) for t in s.token_ids],
            "logprobs": [float(x) for x in s.logprobs], "text": s.text, "finish_reason": s.finish_reason,
            "reward": _plain(s.reward), "reward_components": {k: _plain(v) for k, v in s.reward_components.items()},
            "version": s.version, "segments": [list(seg) for seg in s.segments],
            **({} if s.env_mask is None else {"env_mask": [bool(m) for m in s.env_mask], "episode": dict(s.episode),
                                               "env_reward": s.env_reward, "messages": s.messages})}


def decode_sample(record: dict[str, Any]) -> Sample:
    return Sample(prompt_uid=record["prompt_uid"], token_ids=np.asarray(record["token_ids"], dtype=np.int32),
                  logprobs=np.asarray(record["logprobs"], dtype=np.float32), text=record["text"],
                  finish_reason=record["finish_reason"], reward=float(record["reward"]),
                  reward_components={k: float(v) for k, v in record["reward_components"].items()},
                  version=record["version"], segments=[(int(a), int(b)) for a, b in record.get("segments", [])],
                  env_mask=None if "env_mask" not in record else np.asarray(record["env_mask"], dtype=bool),
                  episode=dict(record.get("episode", {})), env_reward=record.get("env_reward"),
                  messages=record.get("messages"))


def encode_group(group: Group) -> dict[str, Any]:
    """A group by its prompt's uid, its samples in full and its advantages (empty before the step's)."""
    return {"prompt": group.prompt.uid, "samples": [encode_sample(s) for s in group.samples],
            "advantages": list(group.advantages)}


def decode_group(record: dict[str, Any], prompts: dict[int, Prompt]) -> Group:
    """What `encode_group` wrote; the prompt is found by uid among the run's training prompts."""
    return Group(prompts[record["prompt"]], [decode_sample(s) for s in record["samples"]],
                 list(record.get("advantages", [])))


def _plain(value: float) -> float | str:
    """JSON has no NaN or infinity: they are kept as strings (a skipped reward is NaN)."""
    return value if math.isfinite(value) else repr(float(value))
