"""Multi-turn episodes as pure logic (issue 22, groundwork): the turns of one rollout, the tools an environment
offers under TRL's contract, and the plain-text tag format for models without a tool-calling chat template.

An episode is the prompt, then model turns and environment turns alternating. Its completion is their tokens end to
end, exactly as generated and appended (never re-tokenized); the loss mask is 1 on model tokens and 0 on environment
tokens, and only model tokens carry sampling logprobs (0.0 elsewhere, as TRL's tool mask does).

TRL's environment contract (trl GRPOTrainer `environment_factory`, v1.8+): a zero-argument factory (usually the
class) makes one instance per rollout; `reset(**row) -> str | None` starts it (a string is appended to the prompt);
every public method but `reset` and `get_reward` is a tool, described by its type hints and Google-style docstring;
an optional `get_reward() -> float` scores the finished episode.

Tag format (the embedded model's alphabet): the model writes `[name:argument]`; the environment answers `[=result]`,
or `[!error]` when the call failed (TRL feeds errors back to the model too). The argument is converted by the type
hint of the tool's first parameter (int, float or str).
The driver runs episodes in rlpost/multiturn.py; environments live in the reward workers (actors/env_host.py).
"""

from __future__ import annotations

import inspect
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, get_type_hints

RESERVED = ("reset", "get_reward")
TAG_CALL = re.compile(r"\[([A-Za-z_][A-Za-z0-9_]*):([^\[\]]*)\]\s*$")


@dataclass
class Turn:
    """One turn's tokens: the model's (with their sampling logprobs) or the environment's (no logprobs)."""

    role: str  # 'model' or 'env'
    token_ids: list[int]
    logprobs: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.role not in ("model", "env"):
            raise ValueError(f"turn role must be 'model' or 'env', got {self.role!r}")
        if self.role == "model" and len(self.logprobs) != len(self.token_ids):
            raise ValueError(f"a model turn needs one logprob per token ({len(self.token_ids)} tokens, "
                             f"{len(self.logprobs)} logprobs)")
        if self.role == "env" and self.logprobs:
            raise ValueError("an environment turn has no sampling logprobs")


@dataclass
class Episode:
    """The turns after the prompt, in order."""

    turns: list[Turn] = field(default_factory=list)

    def completion_ids(self) -> list[int]:
        return [t for turn in self.turns for t in turn.token_ids]

    def loss_mask(self) -> list[int]:
        """1 where the model generated the token, 0 where the environment appended it."""
        return [int(turn.role == "model") for turn in self.turns for _ in turn.token_ids]

    def logprobs(self) -> list[float]:
        """Sampling logprobs of model tokens; 0.0 at environment tokens."""
        return [lp for turn in self.turns for lp in (turn.logprobs if turn.role == "model"
                                                      else [0.0] * len(turn.token_ids))]

    def counts(self) -> dict[str, int]:
        model = [t for t in self.turns if t.role == "model"]
        env = [t for t in self.turns if t.role == "env"]
        return {"turns": len(model), "env_turns": len(env), "model_tokens": sum(len(t.token_ids) for t in model),
                "env_tokens": sum(len(t.token_ids) for t in env)}


def environment_tools(instance: Any) -> dict[str, Callable[..., Any]]:
    """An environment's tools under TRL's contract: its public bound methods except `reset` and `get_reward`."""
    return {name: method for name, method in inspect.getmembers(instance, inspect.ismethod)
            if not name.startswith("_") and name not in RESERVED}


def tool_schema(name: str, fn: Callable[..., Any]) -> dict[str, Any]:
    """The JSON schema a chat template shows for a tool (transformers' get_json_schema, as TRL uses it); a tool
    without type hints or an `Args:` docstring entry per argument is refused naming the tool."""
    from transformers.utils import get_json_schema

    try:
        return get_json_schema(fn)
    except Exception as err:  # transformers raises its own parsing exceptions; name the tool and the fix
        raise ValueError(f"tool {name!r}: {err} (every argument needs a type hint and an 'Args:' docstring "
                         "entry, TRL's contract)") from None


@dataclass(frozen=True)
class ToolCall:
    name: str
    argument: str


def parse_tag_call(text: str) -> ToolCall | None:
    """The tool call a model turn ends with in the tag format (`...[add:35271]`), or None."""
    found = TAG_CALL.search(text)
    return ToolCall(found.group(1), found.group(2)) if found else None


def call_tag_tool(tools: dict[str, Callable[..., Any]], call: ToolCall) -> tuple[str, str | None]:
    """Run one tag-format call: (the environment's reply, the error or None). The reply is `[=result]` or
    `[!error]`; the error (with its traceback for an exception) is what the run counts and logs."""
    fn = tools.get(call.name)
    if fn is None:
        error = f"unknown tool {call.name!r}; tools: {', '.join(sorted(tools)) or 'none'}"
        return f"[!unknown tool {call.name}]", error
    try:
        value = convert_argument(fn, call.argument)
    except ValueError as err:
        return f"[!bad argument for {call.name}]", f"tool {call.name!r}: {err}"
    try:
        result = fn(value)
    except Exception as err:
        return f"[!{type(err).__name__.lower()}]", f"tool {call.name!r} raised:\n{traceback.format_exc()}"
    if not isinstance(result, (str, int, float)) or isinstance(result, bool):
        return f"[!bad result from {call.name}]", (f"tool {call.name!r} returned {type(result).__name__}; a "
                                                   "tag-format tool returns str, int or float")
    return f"[={result}]", None


def convert_argument(fn: Callable[..., Any], argument: str) -> Any:
    """The argument converted to the type hint of the tool's first parameter."""
    params = [p for p in inspect.signature(fn).parameters.values() if p.name not in ("self", "cls")]
    if len(params) != 1:
        raise ValueError(f"a tag-format tool takes exactly one argument, this one takes {len(params)}")
    hint = get_type_hints(fn).get(params[0].name, str)
    if hint in (int, float):
        try:
            return hint(argument)
        except ValueError:
            raise ValueError(f"argument {argument!r} is not {hint.__name__}") from None
    if hint is str:
        return argument
    raise ValueError(f"a tag-format tool's argument must be int, float or str, not {hint}")
