"""Structure rules of the packages (rlpost/, actors/, rewards/), read from the source with `ast`; nothing is imported.

- Size: no function or method over 60 lines, no class over 200, the driver's `Trainer.step` under 30. A size counts
  the lines from the `def` (or `class`) line to the last line of its body, both included: decorators are left out,
  blank lines and comments inside are counted, and a nested function counts in its own size and in its parent's.
- Imports (every `import` statement anywhere in a module: top level, inside functions, under `if TYPE_CHECKING`):
  the pure math modules reach neither Ray, vLLM, DeepSpeed, the config/recipe modules nor `actors`, directly or
  through other first-party modules; the core (`rlpost/` outside the entry-point package `rlpost/app/`) reaches no
  `actors` module; and the first-party modules import one another without cycles.

Import resolution: relative imports are made absolute; `from pkg import name` counts as importing `pkg.name` when
that is a module, else `pkg` itself (its `__init__`); `import a.b` counts as importing `a.b` only (not the parents
that Python runs first, which every submodule would otherwise share).
Leaves out: imports made through `importlib` or `__import__` (plugin loading), which no rule here is about.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterator
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("rlpost", "actors", "rewards")
MAX_FUNCTION_LINES = 60
MAX_CLASS_LINES = 200
MAX_STEP_LINES = 29  # "under 30"
PURE_MATH = ("rlpost.advantages", "rlpost.losses", "rlpost.curriculum", "rlpost.allocation", "rlpost.shaping",
             "rlpost.flops", "rlpost.choices")  # rlpost.choices is skipped while it does not exist
PURE_MATH_FORBIDDEN = ("ray", "vllm", "deepspeed", "rlpost.config", "rlpost.recipes", "actors")
CORE_FORBIDDEN = ("actors",)
ENTRY_POINTS = "rlpost.app"


@cache
def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the packages (a package is its `__init__.py`)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


@cache
def tree(name: str) -> ast.Module:
    path = modules()[name]
    return ast.parse(path.read_text(), filename=str(path))


def _within(name: str, prefixes: tuple[str, ...]) -> str | None:
    """The prefix that `name` is, or is a submodule of; None if none."""
    return next((p for p in prefixes if name == p or name.startswith(p + ".")), None)


def _where(name: str, line: int) -> str:
    return f"{modules()[name].relative_to(REPO)}:{line}"


# ---------------------------------------------------------------- sizes


Def = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def _size(node: Def) -> int:
    return (node.end_lineno or node.lineno) - node.lineno + 1


def _defs(name: str) -> Iterator[tuple[str, Def]]:
    """(qualified name, node) of every function, method and class in the module, nested ones included."""

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, Def]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                qualified = f"{prefix}{child.name}"
                yield qualified, child
                yield from walk(child, qualified + ".")
            else:
                yield from walk(child, prefix)

    yield from walk(tree(name), "")


def _oversized(kinds: tuple[type, ...], limit: int) -> list[str]:
    return [f"{_where(name, node.lineno)} {qualified}: {_size(node)} lines"
            for name in modules() for qualified, node in _defs(name)
            if isinstance(node, kinds) and _size(node) > limit]


def test_no_function_over_60_lines() -> None:
    offenders = _oversized((ast.FunctionDef, ast.AsyncFunctionDef), MAX_FUNCTION_LINES)
    assert not offenders, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(offenders)


def test_no_class_over_200_lines() -> None:
    offenders = _oversized((ast.ClassDef,), MAX_CLASS_LINES)
    assert not offenders, f"classes over {MAX_CLASS_LINES} lines:\n" + "\n".join(offenders)


def test_trainer_step_is_under_30_lines() -> None:
    """`Trainer.step` in rlpost/loop.py (or in whichever rlpost module defines `class Trainer`)."""
    names = sorted((n for n in modules() if _within(n, ("rlpost",))), key=lambda n: n != "rlpost.loop")
    steps = [(name, node) for name in names for qualified, node in _defs(name) if qualified == "Trainer.step"]
    assert steps, "no method `step` of a class `Trainer` found in rlpost/"
    name, node = steps[0]
    assert _size(node) <= MAX_STEP_LINES, (f"{_where(name, node.lineno)} Trainer.step is {_size(node)} lines; the step "
                                           f"should read as a few named phases, under {MAX_STEP_LINES + 1} lines")


# ---------------------------------------------------------------- imports


def _resolve(name: str, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom names (`from ..x import y` in `a.b.c` -> `a.x`)."""
    if not node.level:
        return node.module or ""
    package = name.split(".") if modules()[name].name == "__init__.py" else name.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _first_party(target: str) -> str:
    """A first-party import target as the module it loads: the longest known module prefix of `target`."""
    parts = target.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules():
            return ".".join(parts[:end])
    return target


@cache
def imports(name: str) -> tuple[tuple[str, int], ...]:
    """(imported module, line) for every import statement in the module; first-party targets as known modules."""
    found = []
    for node in ast.walk(tree(name)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(name, node)
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                found.append((sub if sub in modules() else source, node.lineno))
    return tuple(dict.fromkeys((_first_party(t) if _within(t, PACKAGES) else t, line) for t, line in found))


def _edges(name: str) -> list[str]:
    """The first-party modules that `name` imports, each once, in source order."""
    return list(dict.fromkeys(t for t, _ in imports(name) if t in modules() and t != name))


def _violations(checked: list[str], forbidden: tuple[str, ...]) -> list[str]:
    """Each forbidden import that a checked module makes, directly or through first-party modules outside the checked
    set (a checked module on the way reports its own), as the chain of modules that makes it."""
    found = []
    for start in checked:
        seen, queue = {start}, deque([[start]])
        while queue:
            chain = queue.popleft()
            for target, line in imports(chain[-1]):
                if _within(target, forbidden):
                    found.append(" -> ".join(chain) + f" -> {target}  ({_where(chain[-1], line)})")
            for target in _edges(chain[-1]):
                if target not in seen and target not in checked and not _within(target, forbidden):
                    seen.add(target)
                    queue.append(chain + [target])
    return found


def test_pure_math_modules_import_no_runtime_config_or_actors() -> None:
    offenders = _violations([name for name in PURE_MATH if name in modules()], PURE_MATH_FORBIDDEN)
    assert not offenders, ("the pure math modules must import none of " + ", ".join(PURE_MATH_FORBIDDEN) + ":\n"
                           + "\n".join(offenders))


def test_core_imports_no_actors() -> None:
    core = [n for n in modules() if _within(n, ("rlpost",)) and not _within(n, (ENTRY_POINTS,))]
    offenders = _violations(core, CORE_FORBIDDEN)
    assert not offenders, ("rlpost/ outside rlpost/app/ must not import actors (only the entry points may):\n"
                           + "\n".join(offenders))


def _cycles() -> list[list[str]]:
    """One cycle through each strongly connected group of modules (Tarjan), as a chain that ends where it starts."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def connect(node: str) -> None:  # recursion depth is bounded by the module count (about 70)
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in _edges(node):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
            if len(group) > 1:
                groups.append(sorted(group))

    for name in modules():
        if name not in index:
            connect(name)
    return [_shortest_cycle(min(group), set(group)) for group in groups]


def _shortest_cycle(start: str, group: set[str]) -> list[str]:
    parents: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for target in _edges(node):
            if target == start:
                chain = [node]
                while chain[-1] != start:
                    chain.append(parents[chain[-1]])
                return [*reversed(chain), start]
            if target in group and target not in parents:
                parents[target] = node
                queue.append(target)
    raise AssertionError(f"no cycle through {start}")  # cannot happen: the group is strongly connected


def test_no_import_cycles() -> None:
    cycles = _cycles()
    assert not cycles, "first-party import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)
