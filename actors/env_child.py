"""The environment side of a plugin child process (actors/plugin_process.py): TRL-contract environments and plain
tools, loaded once, one instance per open episode, each call answered with its outcome.

Messages (parent to child), answered ("ok", payload) or ("error", message):
- ("env_load", factories {name: spec}, tool specs, tag_format): import them, make one probe instance of each
  factory; payload {name: {"tools": {tool: schema | None}, "reward": bool}} ("" is the plain tools' entry).
  tag_format: every tool must take one int, float or str argument.
- ("env_open", key, name, row): a new instance of environment `name` for episode `key`, reset(**row); payload the
  observation (str or None).
- ("env_call", key, name, arguments, argument): one tool call; payload (value, error, detail): value str(result)
  or None; error a short message for the model ('' on success); detail the traceback or reason for the logs.
- ("env_reward", key): get_reward() of the episode's instance; payload a float or None (no get_reward).
- ("env_close", keys): drop those instances; payload None.
Instances live only here; the parent (actors/env_host.py) keeps each episode's reset row and calls so a child that
was killed (a hung call) can be rebuilt by replaying them.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from typing import Any

from rlpost.episodes import RESERVED, environment_tools

_FACTORIES: dict[str, Any] = {}
_TOOLS: dict[str, Any] = {}  # plain tools, offered in every episode
_OPEN: dict[int, tuple[Any, dict[str, Any]]] = {}  # episode key -> (instance, its tools)


def handlers() -> dict[str, Any]:
    """The message handlers, in plugin_process.child_main's calling form (the reward plugins come first, unused)."""
    return {"env_load": _env_load, "env_open": _env_open, "env_call": _env_call, "env_reward": _env_reward,
            "env_close": _env_close}


def _load_spec(kind: str, spec: str) -> Any:
    from rewards import RewardPluginError, load_reward

    try:
        return load_reward(spec)
    except RewardPluginError as err:
        raise RewardPluginError(str(err).replace("reward plugin", kind, 1)) from None


def _env_load(_: Any, factories: dict[str, str], tool_specs: list[str], tag_format: bool) -> tuple[str, Any]:
    from rewards import RewardPluginError, short_traceback

    info: dict[str, Any] = {}
    try:
        for spec in tool_specs:
            fn = _load_spec("tool", spec)
            _TOOLS[getattr(fn, "__name__", spec.rsplit(":", 1)[-1])] = fn
        info[""] = {"tools": _describe(_TOOLS, "tools", tag_format), "reward": False}
        for name, spec in factories.items():
            factory = _load_spec(f"environment {name!r}", spec)
            try:
                probe = factory()
            except BaseException:
                return ("error", f"environment {spec!r}: calling it with no arguments (TRL's environment_factory "
                                 f"contract) raised:\n{short_traceback()}")
            if not callable(getattr(probe, "reset", None)):
                return ("error", f"environment {spec!r}: its instances have no reset(**row) method (TRL's contract)")
            _FACTORIES[name] = factory
            info[name] = {"tools": _describe(environment_tools(probe), f"environment {spec!r}", tag_format),
                          "reward": callable(getattr(probe, "get_reward", None))}
    except RewardPluginError as err:
        return ("error", str(err))
    return ("ok", info)


def _describe(tools: dict[str, Any], who: str, tag_format: bool) -> dict[str, Any]:
    """Each tool's JSON schema (None in the tag format, which checks its one typed argument instead)."""
    from rewards import RewardPluginError
    from rlpost.episodes import convert_argument, tool_schema

    out: dict[str, Any] = {}
    for name, fn in tools.items():
        if name in RESERVED:
            continue
        try:
            if tag_format:
                convert_argument(fn, "0")  # the argument's type is int, float or str (raises ValueError otherwise)
                out[name] = None
            else:
                out[name] = tool_schema(name, fn)
        except ValueError as err:
            raise RewardPluginError(f"{who}: tool {name!r}: {err}") from None
    return out


def _env_open(_: Any, key: int, name: str, row: dict[str, Any]) -> tuple[str, Any]:
    from rewards import short_traceback

    if _FACTORIES and name not in _FACTORIES:
        return ("error", f"unknown environment {name!r} (the row's 'environment' column); environments: "
                         f"{', '.join(sorted(_FACTORIES))}")
    try:
        instance = _FACTORIES[name]() if name in _FACTORIES else None  # none: plain tools only
        tools = {**_TOOLS, **(environment_tools(instance) if instance is not None else {})}
        observation = _settle(instance.reset(**row)) if instance is not None else None
    except BaseException:
        return ("error", f"environment {name!r}: reset raised:\n{short_traceback()}")
    if observation is not None and not isinstance(observation, str):
        return ("error", f"environment {name!r}: reset returned {type(observation).__name__}; it returns a str "
                         "(appended to the prompt) or None")
    _OPEN[key] = (instance, tools)
    return ("ok", observation or None)


def _env_call(_: Any, key: int, name: str, arguments: dict[str, Any], argument: str | None) -> tuple[str, Any]:
    """One tool call; its failure is the model's (fed back, counted), never the run's."""
    from rewards import short_traceback
    from rlpost.episodes import convert_argument

    if key not in _OPEN:  # never sent by the host (it tracks open episodes); answered, not a crash of the child
        return ("ok", (None, "environment lost", f"episode {key} has no open environment"))
    _, tools = _OPEN[key]
    fn = tools.get(name)
    if fn is None:
        return ("ok", (None, f"unknown tool {name}", f"unknown tool {name!r}; tools: {', '.join(sorted(tools))}"))
    try:
        kwargs = arguments if argument is None else None
        value = convert_argument(fn, argument) if argument is not None else None
    except ValueError as err:
        return ("ok", (None, f"bad argument for {name}", f"tool {name!r}: {err}"))
    try:
        result = _settle(fn(**kwargs) if kwargs is not None else fn(value))
    except BaseException as err:
        return ("ok", (None, f"{type(err).__name__}: {err}"[:200], f"tool {name!r} raised:\n{short_traceback()}"))
    if isinstance(result, bool) or not isinstance(result, (str, int, float)) or (
            isinstance(result, float) and not math.isfinite(result)):
        return ("ok", (None, f"bad result from {name}", f"tool {name!r} returned {type(result).__name__} "
                       f"{str(result)[:80]!r}; a tool returns a str, an int or a finite float"))
    return ("ok", (str(result), "", ""))


def _env_reward(_: Any, key: int) -> tuple[str, Any]:
    from rewards import short_traceback

    if key not in _OPEN:
        return ("error", f"episode {key} has no open environment")
    instance, _tools = _OPEN[key]
    method = getattr(instance, "get_reward", None)
    if method is None:
        return ("ok", None)
    try:
        value = _settle(method())
    except BaseException:
        return ("error", f"get_reward raised:\n{short_traceback()}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return ("error", f"get_reward returned {type(value).__name__} {str(value)[:80]!r}; it returns a finite "
                         "number")
    return ("ok", float(value))


def _env_close(_: Any, keys: list[int]) -> tuple[str, Any]:
    for key in keys:
        _OPEN.pop(key, None)
    return ("ok", None)


def _settle(value: Any) -> Any:
    """An async method's result awaited (TRL accepts async tools, reset and get_reward)."""
    return asyncio.run(_wait(value)) if inspect.isawaitable(value) else value


async def _wait(awaitable: Any) -> Any:
    return await awaitable
