"""Test suites for code rewards: the dataset formats `code_tests` reads, checked strictly, and output comparison.

A row's tests are one of (JSON text of any of these is decoded first, as datasets often store them as strings):
- a list of test statements or scripts (`["assert f(2) == 4", ...]`, MBPP/HumanEval style), one test each;
- one test script (a string), one test;
- `{"inputs": [...], "outputs": [...]}` (APPS/TACO; also `input`/`output`): programs fed each input on stdin, their
  stdout compared with the output; with `"fn_name"`, call-based tests instead: `fn_name(*inputs[i])` compared with
  `outputs[i]`;
- a list of `{"input": ..., "output": ...}` records (LiveCodeBench/CodeContests stdin tests).
Anything else is an error naming what is wrong: an empty string or list, a list literal left inside a string that
does not decode, a script that asserts, raises and calls nothing (it could never fail), a non-string test.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Suite:
    """A row's tests, ready to run: `judged` items for the judge process, or `stdio` (input, output) pairs."""

    kind: str  # 'judged' or 'stdio'
    items: tuple[Any, ...]

    def __len__(self) -> int:
        return len(self.items)

    @property
    def label(self) -> str:
        if self.kind == "stdio":
            return "stdin/stdout"
        return "call" if self.items and self.items[0]["kind"] == "call" else "assert/script"


def parse_tests(value: Any) -> Suite | None:
    """The suite a dataset cell holds; None when it holds none (None); ValueError when it is malformed."""
    return _parse(value, depth=0)


def _parse(value: Any, depth: int) -> Suite | None:
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("the tests are an empty string")
        decoded = _decode_text(text) if depth < 2 else None
        if decoded is not None:
            return _parse(decoded, depth + 1)
        return Suite("judged", (_script(text, 0),))
    if isinstance(value, dict):
        return _io_dict(value)
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError("the tests are an empty list")
        if all(isinstance(item, dict) for item in value):
            return _io_records(value)
        bad = [i for i, item in enumerate(value) if not isinstance(item, str)]
        if bad:
            raise ValueError(f"test {bad[0]} is a {type(value[bad[0]]).__name__}, not a string (a list of tests "
                             "holds test statements or scripts)")
        return Suite("judged", tuple(_script(item, i) for i, item in enumerate(value)))
    raise ValueError(f"the tests are a {type(value).__name__}; expected a list of test strings, a test script, or "
                     "an inputs/outputs mapping")


def _decode_text(text: str) -> Any:
    """The JSON or Python literal a string holds, when it starts like a list, a mapping or (text encoded twice) a
    quoted string and parses as one."""
    if text[0] not in "[{\"'":
        return None
    for parse in (json.loads, ast.literal_eval):
        try:
            decoded = parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(decoded, (list, dict)) or isinstance(decoded, str) and text[0] in "\"'":
            return decoded
    if text[0] == "[" and text.rstrip().endswith("]"):
        raise ValueError(f"the tests are a string that looks like a list but does not parse: {text[:60]!r}")
    return None


def _script(source: str, index: int) -> dict[str, Any]:
    if not source.strip():
        raise ValueError(f"test {index} is empty")
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise ValueError(f"test {index} is not valid Python ({err.msg}, line {err.lineno}): {source[:60]!r}") from None
    if not any(isinstance(node, (ast.Assert, ast.Raise, ast.Call)) for node in ast.walk(tree)):
        raise ValueError(f"test {index} asserts, raises and calls nothing, so it cannot fail: {source[:60]!r}")
    return {"kind": "script", "source": source}


def _io_dict(value: dict[str, Any]) -> Suite:
    inputs = value.get("inputs", value.get("input"))
    outputs = value.get("outputs", value.get("output"))
    if not isinstance(inputs, list) or not isinstance(outputs, list):
        raise ValueError(f"a tests mapping needs lists 'inputs' and 'outputs'; it has keys {sorted(value)[:8]}")
    if not inputs or len(inputs) != len(outputs):
        raise ValueError(f"a tests mapping needs as many outputs as inputs, at least one (got {len(inputs)} inputs, "
                         f"{len(outputs)} outputs)")
    fn = value.get("fn_name")
    if fn is None:
        return Suite("stdio", tuple((_text(i, "input"), _text(o, "output")) for i, o in zip(inputs, outputs)))
    if not isinstance(fn, str) or not fn.isidentifier():
        raise ValueError(f"fn_name must be a function name, got {fn!r}")
    return Suite("judged", tuple({"kind": "call", "fn": fn, "args": args if isinstance(args, list) else [args],
                                  "expected": expected} for args, expected in zip(inputs, outputs)))


def _io_records(records: Sequence[dict[str, Any]]) -> Suite:
    pairs = []
    for i, record in enumerate(records):
        if "input" not in record or "output" not in record:
            raise ValueError(f"test {i} needs 'input' and 'output'; it has keys {sorted(record)[:8]}")
        if record.get("testtype", "stdin") != "stdin":
            raise ValueError(f"test {i} has testtype {record['testtype']!r}; only stdin tests are records (give "
                             "call-based tests as {'fn_name': ..., 'inputs': [...], 'outputs': [...]})")
        pairs.append((_text(record["input"], f"test {i} input"), _text(record["output"], f"test {i} output")))
    return Suite("stdio", tuple(pairs))


def _text(value: Any, what: str) -> str:
    """Program input or output text: a string, or a list of lines joined with newlines."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(line, str) for line in value):
        return "\n".join(value) + "\n"
    raise ValueError(f"{what} must be text or a list of lines, got {type(value).__name__}")


def same_output(got: str, expected: str, mode: str = "lines", float_tol: float = 0.0) -> bool:
    """Whether a program's stdout matches: 'lines' ignores trailing whitespace on each line and trailing blank
    lines; 'tokens' compares whitespace-separated tokens. With float_tol > 0, tokens that are both numbers match
    within that absolute or relative tolerance."""
    if mode == "tokens":
        return _tokens_match(got.split(), expected.split(), float_tol)
    a, b = _lines(got), _lines(expected)
    if not float_tol:
        return a == b
    return len(a) == len(b) and all(_tokens_match(x.split(), y.split(), float_tol) for x, y in zip(a, b))


def _tokens_match(a: list[str], b: list[str], tol: float) -> bool:
    return len(a) == len(b) and all(x == y or _close(x, y, tol) for x, y in zip(a, b))


def _lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _close(x: str, y: str, tol: float) -> bool:
    if tol <= 0:
        return False
    try:
        a, b = float(x), float(y)
    except ValueError:
        return False
    return math.isfinite(a) and math.isfinite(b) and math.isclose(a, b, rel_tol=tol, abs_tol=tol)
