"""Plain values as JSON: what crosses between the solution process and the judge (and nothing else does).

A plain value is None, bool, int, float, str, bytes, complex, or a list, tuple, set, frozenset or dict of plain
values. JSON carries None, booleans, numbers, strings and lists as themselves; every other value is a JSON object with
exactly one tag key (`{"$tuple": [...]}`, `{"$dict": [[k, v], ...]}`, ...), so decoding is unambiguous and strict.
Anything that is not plain (a class instance, a function, a module) travels as `{"$ref": n}`, a handle the side that
owns the object resolves; the other side never gets the object itself, so it never runs code it does not own.

`encode` runs next to model code and is only about fidelity (subclasses and numpy scalars become their plain
values); `decode` runs in the judge and is the strict half: unknown tags, malformed shapes or unhashable set members
are errors, never guesses. `to_json` writes encoded data as JSON without the json module, whose import would cost
every solution process about a third of its start-up.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # the guest modules import nothing they do not need: every sandboxed process pays for imports
    from collections.abc import Callable
    from typing import Any

MAX_DEPTH = 200
MAX_ITEMS = 1_000_000
_TAGS = ("$tuple", "$set", "$frozenset", "$dict", "$bytes", "$bytearray", "$complex", "$ref")


class PlainError(ValueError):
    """A value that cannot be encoded, or JSON that is not a well-formed plain value."""


def encode(value: Any, ref: Callable[[Any], int] | None = None) -> Any:
    """`value` as JSON-ready data; objects that are not plain become `{"$ref": ref(obj)}` (an error without `ref`)."""
    budget = [MAX_ITEMS]
    return _encode(value, ref, 0, budget)


def _encode(value: Any, ref: Callable[[Any], int] | None, depth: int, budget: list[int]) -> Any:
    if depth > MAX_DEPTH:
        raise PlainError(f"nested deeper than {MAX_DEPTH} levels")
    budget[0] -= 1
    if budget[0] < 0:
        raise PlainError(f"more than {MAX_ITEMS} items")
    kind = type(value)
    if value is None or kind in (bool, int, float, str):
        return value
    items = _items(value)
    if items is not None:
        tag, members = items
        encoded = [_encode(m, ref, depth + 1, budget) for m in members]
        return encoded if tag is None else {tag: encoded}
    if isinstance(value, dict):
        try:
            keys = [_encode(k, None, depth + 1, budget) for k in dict.keys(value)]
        except PlainError:
            if ref is None:
                raise
            return {"$ref": ref(value)}  # keys that are objects: the dict stays on its side
        return {"$dict": [[k, _encode(v, ref, depth + 1, budget)] for k, v in zip(keys, dict.values(value))]}
    scalar = _scalar(value)
    if scalar is not None:
        return scalar
    if ref is None:
        raise PlainError(f"{kind.__name__} is not a plain value")
    return {"$ref": ref(value)}


def _items(value: Any) -> tuple[str | None, list[Any]] | None:
    """(tag, members) of a list, tuple, set or frozenset (subclasses included, read through the base type)."""
    bases: tuple[tuple[type[Any], str | None], ...] = (
        (list, None), (tuple, "$tuple"), (frozenset, "$frozenset"), (set, "$set"))
    for base, tag in bases:
        if isinstance(value, base):
            return tag, list(base.__iter__(value))
    return None


def _scalar(value: Any) -> Any:
    """Subclasses of bool/int/float/str, bytes, complex and numpy values as plain data; None if none of these."""
    bases: tuple[type[Any], ...] = (int, float, str)
    for base in bases:
        if isinstance(value, base):
            return base.__new__(base, value)
    if isinstance(value, (bytes, bytearray)):
        import base64

        tag = "$bytes" if isinstance(value, bytes) else "$bytearray"
        return {tag: base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, complex):
        return {"$complex": [value.real, value.imag]}
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return encode(value.tolist())
    return None


def decode(data: Any, resolve: Callable[[int], Any]) -> Any:
    """The value JSON `data` encodes; `resolve` turns a `$ref` handle into whatever stands for that object here."""
    return _decode(data, resolve, 0)


def _decode(data: Any, resolve: Callable[[int], Any], depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise PlainError(f"nested deeper than {MAX_DEPTH} levels")
    kind = type(data)
    if data is None or kind in (bool, int, float, str):
        return data
    if kind is list:
        return [_decode(item, resolve, depth + 1) for item in data]
    if kind is not dict or len(data) != 1:
        raise PlainError(f"not a plain value: {str(data)[:80]}")
    (tag, body), = data.items()
    if tag == "$ref":
        if type(body) is not int:
            raise PlainError("a $ref must be an int")
        return resolve(body)
    if tag not in _TAGS:
        raise PlainError(f"unknown tag {tag[:40]!r}")
    return _decode_tagged(tag, body, resolve, depth)


def _decode_tagged(tag: str, body: Any, resolve: Callable[[int], Any], depth: int) -> Any:
    if tag in ("$bytes", "$bytearray"):
        if type(body) is not str:
            raise PlainError(f"{tag} must hold base64 text")
        import base64

        raw = base64.b64decode(body.encode("ascii"), validate=True)
        return raw if tag == "$bytes" else bytearray(raw)
    if type(body) is not list:
        raise PlainError(f"{tag} must hold a list")
    if tag == "$complex":
        if len(body) != 2 or any(type(x) not in (int, float) for x in body):
            raise PlainError("$complex must hold [real, imag]")
        return complex(body[0], body[1])
    if tag == "$dict":
        if any(type(pair) is not list or len(pair) != 2 for pair in body):
            raise PlainError("$dict must hold [key, value] pairs")
        try:
            return {_decode(k, resolve, depth + 1): _decode(v, resolve, depth + 1) for k, v in body}
        except TypeError as err:
            raise PlainError(f"$dict key: {err}") from None
    members = [_decode(item, resolve, depth + 1) for item in body]
    try:
        return {"$tuple": tuple, "$set": set, "$frozenset": frozenset}[tag](members)
    except TypeError as err:
        raise PlainError(f"{tag} member: {err}") from None


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def to_json(data: Any) -> str:
    """JSON text of encoded data (None, bool, int, float, str, list and str-keyed dicts), NaN and infinities as
    Python's json module writes them; the judge reads it with `json.loads`."""
    kind = type(data)
    if data is None:
        return "null"
    if kind is bool:
        return "true" if data else "false"
    if kind is int:
        return int.__repr__(data)
    if kind is float:
        if data != data:
            return "NaN"
        if data in (float("inf"), float("-inf")):
            return "Infinity" if data > 0 else "-Infinity"
        return float.__repr__(data)
    if kind is str:
        return _json_string(data)
    if kind is list:
        return "[" + ",".join([to_json(item) for item in data]) + "]"
    if kind is dict:
        return "{" + ",".join([_json_string(k) + ":" + to_json(v) for k, v in data.items()]) + "}"
    raise PlainError(f"{kind.__name__} is not JSON data")


def _json_string(text: str) -> str:
    if type(text) is not str:
        raise PlainError("JSON object keys must be strings")
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return '"' + text + '"'
    out = []
    for ch in text:
        code = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif code < 0x20 or 0xD800 <= code <= 0xDFFF:  # controls, and lone surrogates UTF-8 cannot carry
            out.append("\\u%04x" % code)
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'
