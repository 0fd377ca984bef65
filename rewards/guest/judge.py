"""The judge: runs a dataset's tests against the solution process and reports a verdict per test.

The judge holds the tests and their expected values and never runs model code. Test code runs here, in a namespace
where the solution's top-level names stand for remote objects: calling one, reading an attribute or an item, taking
a length, a truth value or an iteration asks the solution process, which answers with plain data
(rewards/guest/plain.py). Comparisons therefore happen here, between values the solution computed and values the
test holds: an object whose `__eq__` always says True never leaves the solution process (a remote object equals only
itself), a patched `exec` or a walked frame there reaches nothing of the judge, and the expected values never travel.

Names the solution defines that shadow builtins are not bound (a solution's `abs = lambda v: 0` cannot change
`assert abs(f(2) - 4) < 1e-9`). Test items:
- `{"kind": "script", "source": ...}`: passes when the script runs without raising (assert-style tests, HumanEval's
  `check(candidate)`, LeetCode-style `Solution().method(...)` calls);
- `{"kind": "call", "fn": name, "args": [...], "expected": value}`: APPS/TACO call-based tests, compared here with
  their conventions (tuples as lists; an expected one-element list also matches its element).
Verdicts go to the parent as lines `pass N` / `fail N reason` as each test finishes.
"""

from __future__ import annotations

import builtins
import json
import marshal
import os

from rewards.guest import plain

TYPE_CHECKING = False
if TYPE_CHECKING:  # no typing import at run time (see plain.py)
    from collections.abc import Iterator
    from typing import Any

MAX_LINE = 16 * 1024 * 1024


class RemoteError(Exception):
    """The solution process raised an exception that is not a builtin one, ended, or answered out of protocol."""


class Session:
    """The judge's end of the pipe pair to the solution process."""

    def __init__(self, requests_fd: int, replies_fd: int) -> None:
        self.requests, self.replies = os.fdopen(requests_fd, "wb"), os.fdopen(replies_fd, "rb")
        self.dead = ""

    def ask(self, op: str, ref: int | None = None, **fields: Any) -> Any:
        if self.dead:
            raise RemoteError(self.dead)
        try:
            request = marshal.dumps({"op": op, "ref": ref, **fields})
            self.requests.write(len(request).to_bytes(4, "little") + request)
            self.requests.flush()
            line = self.replies.readline(MAX_LINE)
        except OSError:
            line = b""
        if not line.endswith(b"\n"):
            self._die("the solution process ended" if not line else "the solution's answer was too long")
        try:
            reply = json.loads(line)
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            self._die("the solution answered out of protocol")
        if "raise" in reply:
            raise _exception(reply["raise"])
        if "failed" in reply:
            self._die(f"the solution's code raised {_describe(reply['failed'])}")
        try:
            return plain.decode(reply["value"], self.remote)
        except (KeyError, ValueError, TypeError):
            self._die("the solution's answer is not a plain value")

    def _die(self, reason: str) -> None:
        self.dead = reason
        raise RemoteError(reason)

    def remote(self, ref: int) -> Remote:
        return Remote(self, ref)


def _describe(error: Any) -> str:
    if not isinstance(error, dict):
        return "?"
    return f"{str(error.get('type', '?'))[:80]}: {str(error.get('message', ''))[:300]}"


_BUILTIN_ERRORS = {name: value for name, value in vars(builtins).items()
                   if isinstance(value, type) and issubclass(value, Exception) and not name.startswith("_")
                   and value not in (StopIteration, StopAsyncIteration)}


def _exception(error: Any) -> Exception:
    """The exception the solution raised: a builtin type by name (so tests expecting ValueError work), else
    RemoteError; its message is the solution's text."""
    if not isinstance(error, dict) or not isinstance(error.get("type"), str):
        return RemoteError("malformed exception")
    cls = _BUILTIN_ERRORS.get(error["type"])
    message = str(error.get("message", ""))[:2000]
    if cls is None:
        return RemoteError(_describe(error))
    try:
        return cls(message)
    except Exception:
        return RemoteError(_describe(error))


class Remote:
    """Stands for an object in the solution process; only operations whose answer is the solution's own output are
    forwarded. Equality and hashing are by identity of this handle."""

    __slots__ = ("_session", "_ref")

    def __init__(self, session: Session, ref: int) -> None:
        object.__setattr__(self, "_session", session)
        object.__setattr__(self, "_ref", ref)

    def _ask(self, op: str, **fields: Any) -> Any:
        return self._session.ask(op, self._ref, **fields)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._ask("call", args=_outgoing(list(args)), kwargs=_outgoing(dict(kwargs)))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._ask("getattr", name=name)

    def __setattr__(self, name: str, value: Any) -> None:
        self._ask("setattr", name=name, value=_outgoing(value))

    def __getitem__(self, key: Any) -> Any:
        return self._ask("getitem", key=_outgoing(key))

    def __len__(self) -> int:
        return _typed(self._ask("len"), int, "len()")

    def __bool__(self) -> bool:
        return _typed(self._ask("bool"), bool, "bool()")

    def __iter__(self) -> Iterator[Any]:
        return iter(_typed(self._ask("iter"), list, "iteration"))

    def __str__(self) -> str:
        return _typed(self._ask("str"), str, "str()")

    def __repr__(self) -> str:
        return _typed(self._ask("repr"), str, "repr()")


def _typed(value: Any, kind: type, what: str) -> Any:
    if type(value) is not kind:
        raise RemoteError(f"{what} of a solution object gave {type(value).__name__}, not {kind.__name__}")
    return value


def _outgoing(value: Any) -> Any:
    """Arguments for the solution: plain values, and handles of its own objects; nothing of the judge's."""
    def ref(obj: Any) -> int:
        if type(obj) is Remote:
            return object.__getattribute__(obj, "_ref")
        raise RemoteError(f"cannot pass a {type(obj).__name__} to the solution (only plain values)")

    return plain.encode(value, ref)


def run_script(source: str, index: int, namespace: dict[str, Any]) -> None:
    exec(compile(source, f"<test {index}>", "exec"), namespace)


def run_call(test: dict[str, Any], namespace: dict[str, Any]) -> None:
    fn = namespace.get(test["fn"])
    if fn is None:
        raise NameError(f"the solution defines no {test['fn']!r}")
    result = fn(*test["args"])
    expected = test["expected"]
    if not (_lists(result) == _lists(expected)
            or isinstance(expected, list) and len(expected) == 1 and _lists(result) == _lists(expected[0])):
        raise AssertionError("wrong result")


def _lists(value: Any) -> Any:
    """Tuples as lists, recursively (APPS call-based outputs come from JSON)."""
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


def main(args: dict[str, Any]) -> None:
    verdicts = os.fdopen(args["verdicts_fd"], "w")
    session = Session(args["requests_fd"], args["replies_fd"])
    namespace: dict[str, Any] = {"__name__": "__main__"}
    try:
        names = session.ask("names")
        if not isinstance(names, dict):
            raise RemoteError("the solution's names are not a mapping")
        # never dunders (a forged '__builtins__' would route every builtin the tests use to the solution) nor
        # builtins' names: the tests' `abs`, `len` and `sorted` are the judge's own
        namespace.update({k: v for k, v in names.items()
                          if isinstance(k, str) and k.isidentifier() and not k.startswith("__")
                          and not hasattr(builtins, k)})
    except Exception as err:
        reason = f"{type(err).__name__}: {err}".replace("\n", " ")[:300]
        for index in range(len(args["tests"])):
            verdicts.write(f"fail {index} {reason}\n")
        verdicts.flush()
        os._exit(0)
    for index, test in enumerate(args["tests"]):
        try:
            if test["kind"] == "script":
                run_script(test["source"], index, namespace)
            else:
                run_call(test, namespace)
            line = f"pass {index}"
        except BaseException as err:
            line = f"fail {index} {type(err).__name__}: {err}".replace("\n", " ")[:300]
        verdicts.write(line + "\n")
        verdicts.flush()
    os._exit(0)
