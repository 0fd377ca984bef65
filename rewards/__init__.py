"""Reward plugins: the loader (built-in name, entry point, 'pkg.module:fn' or 'path/to/file.py:fn') and the checks
that run before the first step and on every call's output. The calling contract is in rewards/protocol.py.
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
from typing import Any

from rewards.protocol import RUN_COLUMNS, RewardStyle, reward, style_of

__all__ = ["BUILTINS", "ENTRY_POINT_GROUP", "REQUIRED_ARGS", "RUN_COLUMNS", "RewardPluginError", "RewardStyle",
           "call_kwargs", "check_output", "check_signature", "installed_plugins", "load_reward", "reward",
           "reward_name", "short_traceback", "style_of"]

RewardFn = Callable[..., Sequence[Any]]

BUILTINS: dict[str, str] = {
    "exact_match": "rewards.synthetic:exact_match",
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


def reward_name(spec: str) -> str:
    """The short name of a reward spec, used for metrics (`reward/<name>`), `reward.args.<name>` and components:
    the built-in or entry-point name as given, else the function name after ':'."""
    return spec.rsplit(":", 1)[-1] if ":" in spec else spec


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
        except Exception:
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
    except Exception:
        raise RewardPluginError(f"reward plugin {spec!r}: importing {module_part!r} failed:\n"
                                f"{short_traceback()}") from None
    return _callable(spec, getattr(module, fn_name, None), f"{module_part}:{fn_name}")


def _callable(spec: str, fn: Any, where: str) -> RewardFn:
    if fn is None or not callable(fn):
        module_part, fn_name = where.rsplit(":", 1)
        raise RewardPluginError(f"reward plugin {spec!r}: {module_part!r} has no callable {fn_name!r}")
    return fn


def _load_file(spec: str, path: Path):
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


def check_signature(spec: str, fn: RewardFn, columns: Sequence[str] | None, args: Mapping[str, Any] | None = None,
                    run_columns: Sequence[str] = RUN_COLUMNS) -> None:
    """Fail before the first step if `fn` cannot be called with the keyword contract, these dataset columns (None:
    not known, e.g. `rlpost validate --offline`), the run columns this run provides and its `reward.args` entry: a
    missing argument or one args sets that it lacks."""
    parsed = _parameters(fn)
    if parsed is None:
        return  # builtins without signatures: the first call will tell
    keyword, required, has_var_kw = parsed
    args = dict(args or {})
    known = columns is not None
    columns = list(columns or [])
    provided = set(REQUIRED_ARGS) | set(columns) | set(run_columns) | set(args)
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
    options = keyword - set(REQUIRED_ARGS) - set(columns) - set(RUN_COLUMNS)
    unknown = sorted(a for a in args if a not in keyword)
    if unknown and (options or not has_var_kw):
        raise RewardPluginError(f"reward plugin {spec!r}: reward.args.{reward_name(spec)} sets {unknown}, which "
                                f"the function does not accept{_suggest(unknown[0], options)}. Signature: "
                                f"{inspect.signature(fn)}")
    clash = sorted(set(args) & (set(columns) | set(REQUIRED_ARGS)))
    if clash:
        raise RewardPluginError(f"reward plugin {spec!r}: reward.args.{reward_name(spec)} sets {clash}, which are "
                                "also dataset columns; rename the argument or the column")


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


def check_output(spec: str, values: Any, expected: int) -> list[float]:
    """Validate one call's output: a sequence of `expected` finite numbers (None becomes NaN, meaning 'no score')."""
    kind = type(values).__name__
    if hasattr(values, "tolist"):  # numpy arrays and torch tensors
        values = values.tolist()
    if not isinstance(values, (list, tuple)):
        raise RewardPluginError(f"reward plugin {spec!r} returned {kind}, expected a list of floats (one per "
                                "completion)")
    if len(values) != expected:
        raise RewardPluginError(f"reward plugin {spec!r} returned {len(values)} values for {expected} completions")
    out = []
    for i, v in enumerate(values):
        if v is None:
            out.append(float("nan"))
            continue
        if isinstance(v, bool):
            v = float(v)
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise RewardPluginError(f"reward plugin {spec!r} returned non-numeric value {v!r} at index {i}") from None
        if not isfinite(f):
            raise RewardPluginError(f"reward plugin {spec!r} returned non-finite value {f} at index {i} "
                                    "(return None for 'no score')")
        out.append(f)
    return out
