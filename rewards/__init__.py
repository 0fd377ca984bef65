"""Reward plugins: the protocol, the loader (built-in name, 'pkg.module:fn' or 'path/to/file.py:fn') and checks.

A reward function follows TRL's GRPOTrainer keyword contract:
`fn(prompts, completions, completion_ids, **columns) -> list[float | None]`, one value per completion, where
`columns` holds every dataset column (e.g. `answer`, `data_source`). Leaves out: async, batched and group-level
functions, entry-point discovery and per-sample error policies (reward-plugin issue).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RewardFn = Callable[..., Sequence[Any]]

BUILTINS: dict[str, str] = {
    "exact_match": "rewards.synthetic:exact_match",
    "gsm8k_final_number": "rewards.math:gsm8k_final_number",
}
REQUIRED_ARGS = ("prompts", "completions", "completion_ids")


class RewardPluginError(RuntimeError):
    """A reward plugin that cannot be loaded, has the wrong signature, or returned something unusable."""


def load_reward(spec: str) -> RewardFn:
    """Resolve a built-in name, a dotted path `pkg.module:fn`, or a file path `path/file.py:fn` to a callable."""
    target = BUILTINS.get(spec, spec)
    if ":" not in target:
        raise RewardPluginError(
            f"reward plugin {spec!r}: not a built-in ({', '.join(sorted(BUILTINS))}) and not of the form "
            "'pkg.module:function' or 'path/to/file.py:function'")
    module_part, fn_name = target.rsplit(":", 1)
    try:
        if module_part.endswith(".py"):
            module = _load_file(Path(module_part))
        else:
            module = importlib.import_module(module_part)
    except RewardPluginError:
        raise
    except Exception:
        raise RewardPluginError(f"reward plugin {spec!r}: importing {module_part!r} failed:\n"
                                f"{traceback.format_exc()}") from None
    fn = getattr(module, fn_name, None)
    if fn is None or not callable(fn):
        raise RewardPluginError(f"reward plugin {spec!r}: {module_part!r} has no callable {fn_name!r}")
    return fn


def _load_file(path: Path):
    if not path.is_file():
        raise RewardPluginError(f"reward plugin file not found: {path}")
    name = f"rlpost_reward_{path.stem}_{abs(hash(str(path.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
    return module


def check_signature(spec: str, fn: RewardFn, columns: Sequence[str]) -> None:
    """Fail before the first step if `fn` cannot be called with the keyword contract and these columns."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return  # builtins without signatures: the first call will tell
    has_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    names = {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    provided = set(REQUIRED_ARGS) | set(columns)
    missing = [n for n, p in params.items()
               if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is p.empty and n not in provided]
    if missing:
        raise RewardPluginError(f"reward plugin {spec!r}: needs argument(s) {missing} that are not provided; "
                                f"available: {sorted(provided)}")
    if not has_var_kw:
        absent = [n for n in REQUIRED_ARGS if n not in names]
        if absent:
            raise RewardPluginError(f"reward plugin {spec!r}: must accept {list(REQUIRED_ARGS)} (or **kwargs); "
                                    f"missing {absent}. Signature: {inspect.signature(fn)}")


def check_output(spec: str, values: Any, expected: int) -> list[float]:
    """Validate one call's output: a sequence of `expected` finite numbers (None becomes NaN, meaning 'no score')."""
    if not isinstance(values, (list, tuple)) and not hasattr(values, "tolist"):
        raise RewardPluginError(f"reward plugin {spec!r} returned {type(values).__name__}, expected a list of floats")
    values = list(values.tolist() if hasattr(values, "tolist") else values)
    if len(values) != expected:
        raise RewardPluginError(f"reward plugin {spec!r} returned {len(values)} values for {expected} completions")
    out = []
    for i, v in enumerate(values):
        if v is None:
            out.append(float("nan"))
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise RewardPluginError(f"reward plugin {spec!r} returned non-numeric value {v!r} at index {i}") from None
        if not math.isfinite(f):
            raise RewardPluginError(f"reward plugin {spec!r} returned non-finite value {f} at index {i}")
        out.append(f)
    return out
