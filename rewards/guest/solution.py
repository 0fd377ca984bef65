"""The solution process: runs model-written code and reports what it computes, never whether a test passed.

Two modes (`main(args)`, args from the sandbox payload):
- `program`: the code is a whole program; stdin is one test's input and stdout goes to the parent, which compares it
  with the expected output. Exit status 0 when the program finished (or called `sys.exit(0)`), else 1.
- `serve`: the code is run once as a module, then requests from the judge are answered one at a time: the
  module's names, calls, attribute reads, items, lengths, truth values, iteration, str/repr. Answers are plain values
  (rewards/guest/plain.py) or handles to objects that stay here; exceptions go back as their type name and message.

Nothing here ever holds an expected value, so code that takes over this process (patches builtins, walks frames,
rewrites the reply stream) can only change the values it reports, which is what correct code is judged on anyway.
"""

from __future__ import annotations

import builtins
import itertools
import os
import sys

from rewards.guest import plain
from rewards.guest.confine import install_audit_hook

TYPE_CHECKING = False
if TYPE_CHECKING:  # no typing import at run time (see plain.py)
    from typing import Any

def main(args: dict[str, Any]) -> None:
    streams = None
    if args["mode"] == "serve":  # opened before the hook, which refuses opening fds for writing
        streams = os.fdopen(args["requests_fd"], "rb"), os.fdopen(args["replies_fd"], "wb")
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    if args.get("audit_hook", True):  # off only in tests that show what the kernel's layer refuses by itself
        install_audit_hook(os.getcwd())
    if streams is None:
        _program(args["code"])
    else:
        _serve(args["code"], *streams)


def _program(code: str) -> None:
    status = 0
    try:
        exec(compile(code, "<solution>", "exec"), {"__name__": "__main__", "__builtins__": builtins})
    except SystemExit as stop:
        status = 0 if stop.code in (None, 0) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        status = 1
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:  # sys.__stdout__ may be None
                stream.flush()
        except BaseException:
            pass
    os._exit(status)


class _Handles:
    """Objects the judge holds handles to, by number."""

    def __init__(self) -> None:
        self.objects: list[Any] = []

    def add(self, obj: Any) -> int:
        self.objects.append(obj)
        return len(self.objects) - 1

    def get(self, number: int) -> Any:
        if not 0 <= number < len(self.objects):
            raise plain.PlainError(f"no object {number}")
        return self.objects[number]


def _serve(code: str, requests: Any, replies: Any) -> None:
    """Requests arrive as length-prefixed marshal data (from the judge, trusted; marshal needs no import), answers
    leave as JSON lines (the judge parses them strictly)."""
    import marshal

    scope: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    failure = None
    try:
        exec(compile(code, "<solution>", "exec"), scope)
    except BaseException as err:
        failure = {"type": type(err).__name__, "message": _message(err)}
    handles = _Handles()
    while True:
        header = requests.read(4)
        if len(header) < 4:
            os._exit(0)
        try:
            reply = _answer(marshal.loads(requests.read(int.from_bytes(header, "little"))), scope, handles, failure)
        except BaseException as err:  # the code's exceptions, and its SystemExit, are answers too
            reply = {"raise": {"type": type(err).__name__, "message": _message(err)}}
        try:
            data = plain.to_json(reply)
        except (plain.PlainError, ValueError, RecursionError) as err:
            data = plain.to_json({"raise": {"type": "TypeError", "message": f"unencodable answer: {err}"}})
        replies.write(data.encode("utf-8", "surrogatepass") + b"\n")
        replies.flush()


def _message(err: BaseException) -> str:
    try:
        return str(err)[:2000]
    except BaseException:
        return "?"


def _answer(request: dict[str, Any], scope: dict[str, Any], handles: _Handles, failure: Any) -> dict[str, Any]:
    op = request["op"]
    if op == "names":
        if failure is not None:
            return {"failed": failure}
        names = {k: v for k, v in scope.items() if not (k.startswith("__") and k.endswith("__"))}
        return {"value": {"$dict": [[k, plain.encode(v, handles.add)] for k, v in names.items()]}}
    target = handles.get(request["ref"])
    if op == "call":
        args = plain.decode(request["args"], handles.get)
        kwargs = plain.decode(request["kwargs"], handles.get)
        result = target(*args, **kwargs)
    elif op == "getattr":
        result = getattr(target, request["name"])
    elif op == "setattr":
        setattr(target, request["name"], plain.decode(request["value"], handles.get))
        result = None
    elif op == "getitem":
        result = target[plain.decode(request["key"], handles.get)]
    elif op == "len":
        result = len(target)
    elif op == "bool":
        result = bool(target)
    elif op == "iter":
        result = list(itertools.islice(iter(target), plain.MAX_ITEMS + 1))
    elif op in ("str", "repr"):
        result = str(target) if op == "str" else repr(target)
    else:
        raise ValueError(f"unknown request {op!r}")
    return {"value": plain.encode(result, handles.add)}
