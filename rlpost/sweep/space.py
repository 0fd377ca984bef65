"""A sweep's search space: recipe keys mapped to how their values are chosen, read from SPACE.yaml.

    learner.lr: {loguniform: [1.0e-5, 1.0e-3]}
    algorithm.clip_eps: {choice: [0.1, 0.2, 0.3]}
    run.seed: {grid: [0, 1]}
    rollout.temperature: {uniform: [0.7, 1.0]}
    rollout.samples_per_prompt: {randint: [4, 9]}   # 4..8
    rollout.max_new_tokens: 8                       # a constant

`grid` values are all tried (every combination of grid keys); `choice`, `uniform`, `loguniform` and `randint` are
drawn anew for each of `sweep.num_samples` repeats of the grid. Every key must be a recipe key, and every value a
valid one: the recipe is loaded with each grid and choice value and both ends of each range, so a bad value is
refused before any trial starts, naming the key and the file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlpost.config import RecipeError, all_fields

KINDS = ("grid", "choice", "uniform", "loguniform", "randint")
RESERVED = ("run.name", "run.output_dir", "checkpoint.resume", "sweep.")  # set per trial by the sweep itself


@dataclass(frozen=True)
class Dimension:
    """One key of the space: how its value is chosen ('const' for a fixed value)."""

    key: str
    kind: str
    values: tuple[Any, ...]

    def tune(self) -> Any:
        """The Ray Tune search-space object."""
        from ray import tune

        if self.kind == "const":
            return self.values[0]
        if self.kind == "grid":
            return tune.grid_search(list(self.values))
        if self.kind == "choice":
            return tune.choice(list(self.values))
        lo, hi = self.values
        return {"uniform": tune.uniform, "loguniform": tune.loguniform, "randint": tune.randint}[self.kind](lo, hi)

    def probes(self) -> list[Any]:
        """The values checked against the recipe schema before the sweep starts."""
        if self.kind == "randint":
            return [self.values[0], self.values[1] - 1]
        return list(self.values)


@dataclass(frozen=True)
class SearchSpace:
    path: str
    dims: tuple[Dimension, ...]

    def tune_space(self) -> dict[str, Any]:
        return {d.key: d.tune() for d in self.dims}

    def grid_size(self) -> int:
        return math.prod(len(d.values) for d in self.dims if d.kind == "grid")

    def keys(self) -> list[str]:
        return [d.key for d in self.dims]


def overrides_for(values: dict[str, Any]) -> list[str]:
    """A trial's values as `key=value` recipe overrides (floats written so YAML reads them back as floats)."""
    out = []
    for key, value in sorted(values.items()):
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, float):
            text = repr(value)
            mantissa, e, exp = text.partition("e")
            if e and "." not in mantissa:  # YAML reads 3e-05 as a string, 3.0e-05 as a float
                text = f"{mantissa}.0e{exp}"
        elif isinstance(value, (list, dict)):
            import json

            text = json.dumps(value)
        else:
            text = str(value)
        out.append(f"{key}={text}")
    return out


def _dimension(path: str, key: str, spec: Any) -> Dimension:
    where = f"{path}: key '{key}'"
    if not isinstance(spec, dict):
        return Dimension(key, "const", (spec,))
    if len(spec) != 1 or next(iter(spec)) not in KINDS:
        raise RecipeError(f"{where}: expected a value or one of {{{', '.join(f'{k}: ...' for k in KINDS)}}}, got "
                          f"{spec!r}")
    kind, values = next(iter(spec.items()))
    if not isinstance(values, list) or not values:
        raise RecipeError(f"{where}: '{kind}' needs a non-empty list, got {values!r}")
    if kind in ("uniform", "loguniform", "randint"):
        if len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise RecipeError(f"{where}: '{kind}' needs [low, high] numbers, got {values!r}")
        lo, hi = values
        if not lo < hi:
            raise RecipeError(f"{where}: '{kind}' needs low < high, got {values!r}")
        if kind == "loguniform" and lo <= 0:
            raise RecipeError(f"{where}: 'loguniform' needs low > 0, got {values!r}")
        if kind == "randint" and not (isinstance(lo, int) and isinstance(hi, int)):
            raise RecipeError(f"{where}: 'randint' needs integers [low, high) , got {values!r}")
    elif len(set(map(repr, values))) != len(values):
        raise RecipeError(f"{where}: '{kind}' lists a value twice: {values!r}")
    return Dimension(key, kind, tuple(values))


def load_space(path: str | Path, recipe: str, overrides: list[str] | tuple[str, ...] = ()) -> SearchSpace:
    """Read and check SPACE.yaml against the recipe: known keys, well-formed specs, and values the recipe accepts."""
    import yaml

    from rlpost.recipes import load_config

    text = Path(path).read_text() if Path(path).exists() else None
    if text is None:
        raise RecipeError(f"{path}: search space file not found")
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict) or not raw:
        raise RecipeError(f"{path}: expected a mapping of recipe keys to values or {{grid|choice|uniform|"
                          "loguniform|randint: [...]}}")
    known = {key for key, *_ in all_fields()}
    dims = []
    for key, spec in raw.items():
        key = str(key)
        if key not in known:
            import difflib

            near = sorted(k for k in known if k.split(".")[-1] == key.split(".")[-1])
            near = near or difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise RecipeError(f"{path}: '{key}' is not a recipe key{hint}; `rlpost keys` lists them")
        if any(key == r or (r.endswith(".") and key.startswith(r)) for r in RESERVED):
            raise RecipeError(f"{path}: key '{key}' is set by the sweep itself and cannot be searched")
        dims.append(_dimension(str(path), key, spec))
    for dim in dims:
        for value in dim.probes():
            try:
                load_config(recipe, [*overrides, *overrides_for({dim.key: value})])
            except RecipeError as err:
                raise RecipeError(f"{path}: key '{dim.key}' value {value!r} is not valid for the recipe: {err}") \
                    from None
    return SearchSpace(str(path), tuple(dims))
