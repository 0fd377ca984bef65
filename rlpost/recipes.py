"""Recipe loading: a recipe file and its `defaults:` parents, an algorithm preset under them, `key=value` overrides
from the command line, then validation, giving the frozen schema object (rlpost/config.py).

Every mistake is a RecipeError of one line naming the key path and the file (or the override): unknown keys get a
suggestion, YAML errors their line and column, values of the wrong type the type expected; the value checks beyond
types are in rlpost/recipe_checks.py. OmegaConf does the merging and type conversion; it sees each choice
(`Literal`) field as a plain field of its values' type, so choices are checked once, on the merged config, and a
later layer may still replace an earlier layer's value.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import typing
from pathlib import Path
from typing import Any

from rlpost.choices import is_choice, values_of
from rlpost.config import SECTIONS, RecipeError, RootConfig, all_fields
from rlpost.presets import PRESETS
from rlpost.recipe_checks import check_values

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"


def resolve_recipe_path(recipe: str) -> Path:
    """A recipe argument is a file path, or the name of a shipped recipe ('quickstart')."""
    path = Path(recipe)
    if path.is_file():
        return path
    shipped = RECIPES_DIR / (recipe if recipe.endswith(".yaml") else f"{recipe}.yaml")
    if shipped.is_file():
        return shipped
    raise RecipeError(f"recipe not found: {recipe!r} (neither a file nor one of {sorted(shipped_recipes())})")


def shipped_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def load_config(recipe: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RootConfig:
    """Load a recipe (following `defaults:`), apply `key=value` overrides, validate, and freeze."""
    from omegaconf import OmegaConf

    layers = _recipe_layers(resolve_recipe_path(str(recipe)), seen=())
    layers += [_override_layer(item) for item in overrides]
    merged = OmegaConf.structured(_loader_schema(RootConfig))
    for layer, origin in layers:
        merged = _merge(merged, layer, origin)
    preset = merged.algorithm.preset
    if preset:  # the preset sits under every layer, so keys set in the recipe or on the command line win
        if preset not in PRESETS:
            raise RecipeError(f"{recipe}: key 'algorithm.preset' is {preset!r}; allowed: {', '.join(PRESETS)}")
        merged = _merge(OmegaConf.structured(_loader_schema(RootConfig)), {"algorithm": PRESETS[preset]},
                        f"preset {preset!r}")
        for layer, origin in layers:
            merged = _merge(merged, layer, origin)
    _check_required(layers)
    try:
        OmegaConf.resolve(merged)
        config = _from_loader(OmegaConf.to_object(merged), RootConfig)
    except Exception as err:  # interpolation or missing-value errors carry full_key
        key = getattr(err, "full_key", None) or "?"
        raise RecipeError(f"{recipe}: key '{key}': {_first_line(err)}") from None
    check_values(config, f"{recipe}" + (" with command-line overrides" if overrides else ""))
    return config


@functools.cache
def _loader_schema(cls: type) -> type:
    """A twin of a schema dataclass for OmegaConf: the same fields, defaults and docs, but each choice (`Literal`)
    typed by its values' type. OmegaConf 2.4 would check a Literal itself at every merge, with its own message and
    before a later layer could replace the value; the recipe checks test choices once, on the merged config."""
    specs: list[tuple[str, Any, Any]] = []
    types = typing.get_type_hints(cls)
    for leaf in dataclasses.fields(cls):
        kind = types[leaf.name]
        if dataclasses.is_dataclass(kind):
            kind = _loader_schema(kind)  # type: ignore[arg-type]
            specs.append((leaf.name, kind, dataclasses.field(default_factory=kind)))
            continue
        if is_choice(kind):
            kind = type(values_of(kind)[0])
        specs.append((leaf.name, kind, dataclasses.field(default=leaf.default, default_factory=leaf.default_factory,
                                                         metadata=leaf.metadata)))
    return dataclasses.make_dataclass(cls.__name__, specs, frozen=True)


def _from_loader(loaded: Any, cls: type[RootConfig]) -> RootConfig:
    """The schema object holding the values of a loaded `_loader_schema(RootConfig)` instance."""
    types = typing.get_type_hints(cls)
    return cls(**{name: types[name](**dataclasses.asdict(getattr(loaded, name))) for name in SECTIONS})


def _override_layer(item: str) -> tuple[Any, str]:
    """One `key=value` override as a config layer and its origin. `key=` is the empty string for str keys (the
    README's `data.eval_split=` disables eval); for typed keys of other kinds it is an error, not a silent null."""
    from omegaconf import OmegaConf

    key, equals, value = item.partition("=")
    if not equals:
        raise RecipeError(f"command line: override {item!r} is not of the form key=value")
    if not key.strip():
        raise RecipeError(f"command line: override {item!r} has no key before '='")
    if key == "resume":  # the short form users type
        key, item = "checkpoint.resume", "checkpoint." + item
    origin = f"command line ({item})"
    kind = _field_type(key)
    if value == "" and kind == "str":
        value = "''"
    elif value == "" and kind:
        raise RecipeError(f"{origin}: key '{key}' has no value after '=' (expected {kind}; only str keys take an "
                          "empty value)")
    try:
        return OmegaConf.from_dotlist([f"{key}={value}"]), origin
    except Exception as err:  # YAML or grammar errors in the value: name the override, never a traceback
        raise RecipeError(f"{origin}: cannot parse the value {value!r}: {_yaml_problem(err)}") from None


def _check_required(layers: list[tuple[Any, str]]) -> None:
    """A key a recipe sets to `???` (e.g. a base recipe's model.path) must be given by a later recipe or the command
    line; OmegaConf's merge would otherwise keep the schema default silently."""
    required: dict[str, str] = {}
    for layer, origin in layers:
        given, missing = _leaf_keys(layer)
        for key in given:
            required.pop(key, None)
        required.update(dict.fromkeys(missing, origin))
    if required:
        key, origin = next(iter(required.items()))
        raise RecipeError(f"{origin}: key '{key}' is required ('???') but no later recipe or key=value override "
                          f"sets it" + (f" (also missing: {sorted(required)[1:]})" if len(required) > 1 else ""))


def _leaf_keys(layer: Any, prefix: str = "") -> tuple[list[str], list[str]]:
    """Dotted keys of the values a layer sets, and of those it marks '???' (nodes only: nothing is resolved)."""
    from omegaconf import DictConfig

    given: list[str] = []
    missing: list[str] = []
    for key in layer.keys() if isinstance(layer, DictConfig) else []:
        node, name = layer._get_node(key), prefix + str(key)
        if isinstance(node, DictConfig) and not node._is_missing():
            sub_given, sub_missing = _leaf_keys(node, f"{name}.")
            given += sub_given
            missing += sub_missing
        else:
            (missing if node._is_missing() else given).append(name)
    return given, missing


def _recipe_layers(path: Path, seen: tuple[Path, ...]) -> list[tuple[Any, str]]:
    """The recipe's `defaults:` files first (depth-first), then the recipe itself."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    path = path.resolve()
    if path in seen:
        raise RecipeError(f"{path}: 'defaults' forms a cycle: {' -> '.join(map(str, seen + (path,)))}")
    try:
        raw = OmegaConf.load(path)
    except Exception as err:
        raise RecipeError(f"{path}: not valid YAML{_yaml_where(path, err)}: {_yaml_problem(err)}") from None
    if not isinstance(raw, DictConfig):
        raise RecipeError(f"{path}: a recipe must be a mapping of sections, got {type(raw).__name__}")
    if not raw:  # an empty file (or only comments, or null) would silently run every schema default
        raise RecipeError(f"{path}: the recipe is empty; set at least one key (or `defaults: [a recipe]`)")
    layers: list[tuple[Any, str]] = []
    parents = raw.pop("defaults", [])
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, (list, ListConfig)):
        raise RecipeError(f"{path}: 'defaults' must be a list of recipe files")
    for parent in parents:
        parent_path = (path.parent / str(parent))
        if not parent_path.suffix:
            parent_path = parent_path.with_suffix(".yaml")
        if not parent_path.is_file():
            raise RecipeError(f"{path}: 'defaults' entry {parent!r} not found at {parent_path}")
        layers += _recipe_layers(parent_path, seen + (path,))
    layers.append((raw, str(path)))
    return layers


def _merge(base: Any, layer: Any, origin: str) -> Any:
    """Merge one layer into the schema-typed config, translating OmegaConf errors into RecipeError."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

    try:
        return OmegaConf.merge(base, layer)
    except ConfigKeyError as err:
        key = err.full_key or "?"
        raise RecipeError(f"{origin}: unknown key '{key}'{_suggest(key)}") from None
    except OmegaConfBaseException as err:
        plain: Any = OmegaConf.to_container(layer, resolve=False) if isinstance(layer, DictConfig) else layer
        scalar = [(k, v) for k, v in plain.items() if k in SECTIONS and not isinstance(v, dict)]
        if not err.full_key and scalar:  # OmegaConf names no key when a whole section is given a scalar
            raise RecipeError(f"{origin}: key '{scalar[0][0]}' is a section (a mapping of keys), got "
                              f"{scalar[0][1]!r}") from None
        key = err.full_key or "?"
        expected = _field_type(key)
        raise RecipeError(f"{origin}: key '{key}': {_first_line(err)}"
                          + (f" (expected {expected})" if expected else "")) from None


def _field_type(key: str) -> str:
    return next((t for k, t, _, _ in all_fields() if k == key), "")


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, [k for k, *_ in all_fields()], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _yaml_problem(err: Exception) -> str:
    """What PyYAML says went wrong, context first ("while parsing a flow sequence: did not find expected ','"),
    without the marks, which `_yaml_where` gives; other errors' first line."""
    import yaml

    if isinstance(err, yaml.MarkedYAMLError) and err.problem:
        return f"{err.context}: {err.problem}" if err.context else err.problem
    return _first_line(err)


def _yaml_where(path: Path, err: Exception) -> str:
    """' at line L, column C' of a YAML error in `path`, plus the hints its line calls for (tab, unquoted ???)."""
    import yaml

    mark = getattr(err, "problem_mark", None) if isinstance(err, yaml.MarkedYAMLError) else None
    if mark is None:
        return ""
    lines = path.read_text(errors="replace").splitlines()
    text = lines[mark.line] if mark.line < len(lines) else ""
    hint = ""
    if text[mark.column:mark.column + 1] == "\t" or (not text.strip() and "\t" in text):
        hint = " (a tab: YAML indents with spaces)"
    elif "???" in text:
        hint = " (in {...} flow style write '???' in quotes)"
    context = getattr(err, "context_mark", None)
    context_line = f", in the block from line {context.line + 1}" if context and context.line != mark.line else ""
    return f" at line {mark.line + 1}, column {mark.column + 1}{context_line}{hint}"


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def to_yaml(config: RootConfig) -> str:
    """The resolved config as YAML, saved in every run directory."""
    from omegaconf import OmegaConf

    schema = OmegaConf.structured(_loader_schema(RootConfig))
    return OmegaConf.to_yaml(OmegaConf.merge(schema, dataclasses.asdict(config)))
