"""Reward plugins: the loader (built-in name, entry point, 'pkg.module:fn' or 'path/to/file.py:fn') and the checks
that run before the first step (signature, the `check` hook) and on every call's output. The calling contract and
the hooks are in rewards/protocol.py. Loading runs plugin code: the run loads plugins in a child process
(actors/plugin_process.py), never in the driver.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from math import isfinite  # not `import math`: the submodule rewards.math would shadow it here
from pathlib import Path
from types import ModuleType
from typing import Any

from rewards.protocol import HEALTH_COUNTS, RUN_COLUMNS, TRL_ARGS, RewardStyle, completion_text, reward, style_of
from rlpost.config import reward_name  # the recipe's naming rule, shared with the recipe checks

__all__ = ["BUILTINS", "ENTRY_POINT_GROUP", "REQUIRED_ARGS", "RUN_COLUMNS", "TRL_ARGS", "OutputError",
           "RewardPluginError", "RewardStyle", "call_kwargs", "check_output", "check_signature", "completion_text",
           "installed_plugins", "load_reward", "read_health", "read_output", "reward", "reward_name", "run_check",
           "short_traceback", "style_of"]

RewardFn = Callable[..., Sequence[Any]]

BUILTINS: dict[str, str] = {
    "exact_match": "rewards.synthetic:exact_match",
    "trace_answer": "rewards.synthetic:trace_answer",
    "tool_answer": "rewards.synthetic:tool_answer",
    "gsm8k_final_number": "rewards.math:gsm8k_final_number",
    "math_accuracy": "rewards.math:math_accuracy",
    "boxed_math": "rewards.math:boxed_math",
    "think_answer_format": "rewards.format:think_answer_format",
    "kimi_length_penalty": "rewards.length:kimi_length_penalty",
    "dapo_overlong": "rewards.length:dapo_overlong",
    "length_budget": "rewards.length:length_budget_reward",
    "code_tests": "rewards.code:code_tests",
}
ENTRY_POINT_GROUP = "rlpost.rewards"
REQUIRED_ARGS = ("prompts", "completions", "completion_ids")
_TRACEBACK_LINES = 25


class RewardPluginError(RuntimeError):
    """A reward plugin that cannot be loaded, has the wrong signature, or returned something unusable."""


class OutputError(RewardPluginError):
    """A call's output that breaks the contract as a whole (not a sequence, or the wrong length): its values
    cannot be matched to the completions."""


def load_reward(spec: str) -> RewardFn:
    """Resolve a built-in name, an installed entry point (group `rlpost.rewards`), a dotted path `pkg.module:fn`,
    or a file path `path/file.py:fn` to a callable; any failure is a RewardPluginError naming the plugin."""
    if spec in BUILTINS:
        return _load_target(spec, BUILTINS[spec])
    if ":" not in spec:
        entry = _entry_points().get(spec)
        if entry is None:
            installed = sorted(_entry_points())
            raise RewardPluginError(
                f"reward plugin {spec!r}: not a built-in ({', '.join(sorted(BUILTINS))}), not an installed "
                f"'{ENTRY_POINT_GROUP}' entry point ({', '.join(installed) or 'none installed'}), and not of the "
                "form 'pkg.module:function' or 'path/to/file.py:function'")
        try:
            fn = entry.load()
        except (Exception, SystemExit):
            raise RewardPluginError(f"reward plugin {spec!r}: loading entry point {entry.value!r} failed:\n"
                                    f"{short_traceback()}") from None
        return _callable(spec, fn, entry.value)
    return _load_target(spec, spec)


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def installed_plugins() -> dict[str, str]:
    """Reward functions installed by other packages under the `rlpost.rewards` entry-point group: name -> target."""
    return {name: ep.value for name, ep in sorted(_entry_points().items())}


def _load_target(spec: str, target: str) -> RewardFn:
    module_part, fn_name = target.rsplit(":", 1)
    try:
        if module_part.endswith(".py"):
            module = _load_file(spec, Path(module_part))
        else:
            module = importlib.import_module(module_part)
    except RewardPluginError:
        raise
    except (Exception, SystemExit):  # sys.exit() at import must not end the process that checks plugins
        raise RewardPluginError(f"reward plugin {spec!r}: importing {module_part!r} failed:\n"
                                f"{short_traceback()}") from None
    return _callable(spec, getattr(module, fn_name, None), f"{module_part}:{fn_name}")


def _callable(spec: str, fn: Any, where: str) -> RewardFn:
    if fn is None or not callable(fn):
        module_part, fn_name = where.rsplit(":", 1)
        raise RewardPluginError(f"reward plugin {spec!r}: {module_part!r} has no callable {fn_name!r}")
    return fn


def _load_file(spec: str, path: Path) -> ModuleType:
    if not path.is_file():
        raise RewardPluginError(f"reward plugin {spec!r}: file not found: {path.resolve()}")
    name = f"rlpost_reward_{path.stem}_{abs(hash(str(path.resolve())))}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def short_traceback() -> str:
    """The exception being handled's traceback, trimmed to its last lines so the error fits on one screen."""
    lines = traceback.format_exc().rstrip().splitlines()
    if len(lines) > _TRACEBACK_LINES:
        lines = ["  ..."] + lines[-_TRACEBACK_LINES:]
    return "\n".join(lines)


def _parameters(fn: RewardFn) -> tuple[set[str], set[str], bool] | None:
    """(names it accepts by keyword, names it requires, has **kwargs), or None when Python cannot tell."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return None
    keyword = {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    required = {n for n in keyword if params[n].default is inspect.Parameter.empty}
    has_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return keyword, required, has_var_kw


def _positional_only(fn: RewardFn) -> list[str]:
    """Parameters that must be passed by position: a keyword-only caller can never fill them."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind is p.POSITIONAL_ONLY and p.default is inspect.Parameter.empty]


def check_signature(spec: str, fn: RewardFn, columns: Sequence[str] | None, args: Mapping[str, Any] | None = None,
                    run_columns: Sequence[str] = RUN_COLUMNS) -> None:
    """Fail before the first step if `fn` cannot be called with the keyword contract, these dataset columns (None:
    not known, e.g. `rlpost validate --offline`), the run columns this run provides and its `reward.args` entry: a
    positional-only parameter, a missing argument or one args sets that it lacks."""
    parsed = _parameters(fn)
    if parsed is None:
        return  # builtins without signatures: the first call will tell
    positional = _positional_only(fn)
    if positional:
        raise RewardPluginError(f"reward plugin {spec!r}: parameter(s) {positional} are positional-only, but reward "
                                "functions are called with keyword arguments only (TRL's contract); drop the '/'. "
                                f"Signature: {inspect.signature(fn)}")
    keyword, required, has_var_kw = parsed
    args = dict(args or {})
    known = columns is not None
    columns = list(columns or [])
    provided = set(REQUIRED_ARGS) | set(TRL_ARGS) | set(columns) | set(run_columns) | set(args)
    missing = sorted(n for n in required if n not in provided and (known or n in RUN_COLUMNS))
    if missing:
        raise RewardPluginError(f"reward plugin {spec!r}: needs argument(s) {missing} that are not provided; "
                                f"dataset columns: {sorted(columns)}; run columns: {list(run_columns)}; "
                                f"reward.args.{reward_name(spec)}: {sorted(args) or 'none'}. "
                                f"Signature: {inspect.signature(fn)}")
    absent = [n for n in REQUIRED_ARGS if n not in keyword]
    if absent and not has_var_kw:
        raise RewardPluginError(f"reward plugin {spec!r}: must accept {list(REQUIRED_ARGS)} as keyword arguments "
                                f"(or **kwargs); missing {absent}. Signature: {inspect.signature(fn)}")
    # A function that names its own options (beyond the contract's arguments and columns) takes only those, even
    # with **kwargs (built-ins swallow unknown columns that way): a misspelt option must not pass silently.
    options = keyword - set(REQUIRED_ARGS) - set(TRL_ARGS) - set(columns) - set(RUN_COLUMNS)
    unknown = sorted(a for a in args if a not in keyword)
    if unknown and (options or not has_var_kw):
        raise RewardPluginError(f"reward plugin {spec!r}: reward.args.{reward_name(spec)} sets {unknown}, which "
                                f"the function does not accept{_suggest(unknown[0], options)}. Signature: "
                                f"{inspect.signature(fn)}")
    clash = sorted(set(args) & (set(columns) | set(REQUIRED_ARGS) | set(TRL_ARGS)))
    if clash:
        raise RewardPluginError(f"reward plugin {spec!r}: reward.args.{reward_name(spec)} sets {clash}, which are "
                                "also dataset columns or contract arguments; rename the argument or the column")


def _suggest(name: str, options: set[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, sorted(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def call_kwargs(fn: RewardFn, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments `fn` accepts: all of them with **kwargs (TRL functions), else only those it names."""
    parsed = _parameters(fn)
    if parsed is None or parsed[2]:
        return kwargs
    return {k: v for k, v in kwargs.items() if k in parsed[0]}


def read_output(spec: str, values: Any, expected: int) -> tuple[list[float], dict[int, str]]:
    """One call's output as `expected` floats (None becomes NaN, meaning 'no score') and the problems of single
    values by index (non-numeric, non-finite; NaN in their place). Raises OutputError when the output as a whole
    is unusable: not a sequence, or not one value per completion."""
    kind = type(values).__name__
    if hasattr(values, "tolist"):  # numpy arrays and torch tensors
        values = values.tolist()
    if not isinstance(values, (list, tuple)):
        raise OutputError(f"reward plugin {spec!r} returned {kind}, expected a list of floats (one per completion)")
    if len(values) != expected:
        raise OutputError(f"reward plugin {spec!r} returned {len(values)} values for {expected} completions")
    out, bad = [], {}
    for i, v in enumerate(values):
        f = float("nan")
        if v is not None:
            try:
                f = float(v)
            except (TypeError, ValueError):
                bad[i] = f"reward plugin {spec!r} returned non-numeric value {v!r} at index {i}"
            else:
                if not isfinite(f):
                    bad[i] = (f"reward plugin {spec!r} returned non-finite value {f} at index {i} (return None for "
                              "'no score')")
                    f = float("nan")
        out.append(f)
    return out, bad


def check_output(spec: str, values: Any, expected: int) -> list[float]:
    """Validate one call's output: a sequence of `expected` finite numbers (None becomes NaN, meaning 'no score');
    the first problem is a RewardPluginError."""
    out, bad = read_output(spec, values, expected)
    if bad:
        raise RewardPluginError(bad[min(bad)])
    return out


def run_check(spec: str, fn: RewardFn, splits: Mapping[str, Mapping[str, Sequence[Any]]],
              args: Mapping[str, Any] | None = None) -> list[str]:
    """Run the function's `check` hook (rewards/protocol.py) on each split's columns; returns its notes, each once.
    A ValueError, or any other exception, becomes a RewardPluginError naming the plugin and the split."""
    hook = style_of(fn).check
    notes: list[str] = []
    if hook is None:
        return notes
    for split, columns in splits.items():
        try:
            note = hook(columns, **dict(args or {}))
        except ValueError as err:
            raise RewardPluginError(f"reward plugin {spec!r} refuses split {split!r}: {err}") from None
        except (Exception, SystemExit):
            raise RewardPluginError(f"reward plugin {spec!r}: its check hook failed on split {split!r}:\n"
                                    f"{short_traceback()}") from None
        if note is not None and not isinstance(note, str):
            raise RewardPluginError(f"reward plugin {spec!r}: its check hook returned {type(note).__name__}, "
                                    "expected a one-line note (str) or None")
        if note and note.strip() and note.strip() not in notes:
            notes.append(" ".join(note.split()))
    return notes


def read_health(spec: str, fn: RewardFn, args: Mapping[str, Any] | None = None) -> dict[str, float]:
    """The function's `health` gauges (rewards/protocol.py), checked: a mapping of names to finite numbers."""
    hook = style_of(fn).health
    if hook is None:
        return {}
    try:
        gauges = hook(**dict(args or {}))
    except (Exception, SystemExit):
        raise RewardPluginError(f"reward plugin {spec!r}: its health hook failed:\n{short_traceback()}") from None
    if not isinstance(gauges, Mapping):
        raise RewardPluginError(f"reward plugin {spec!r}: its health hook returned {type(gauges).__name__}, "
                                "expected a dict of gauge name -> number")
    out = {}
    for key, value in gauges.items():
        try:
            out[str(key)] = float(value)
        except (TypeError, ValueError):
            raise RewardPluginError(f"reward plugin {spec!r}: health gauge {key!r} is {value!r}, not a number") \
                from None
        if not isfinite(out[str(key)]) or not str(key) or "/" in str(key) or key in HEALTH_COUNTS:
            raise RewardPluginError(f"reward plugin {spec!r}: health gauge {key!r}={value!r} needs a finite value "
                                    f"and a plain name (no '/', none of {', '.join(HEALTH_COUNTS)})")
    return out
