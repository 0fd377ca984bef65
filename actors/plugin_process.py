"""The process that holds reward plugins: its wire protocol, the parent's handle on it, the child's loop, and the
plugin check run before any actor starts.

Plugin code runs only in such a child, never in the driver or a Ray actor: importing a plugin can call `sys.exit`
or `os._exit`, loop forever or exhaust memory, and a driver that imported it would exit 0 in silence or hang
(security review F8). The child is a plain `python -m actors.reward` subprocess (it imports the plugins, not torch)
speaking length-prefixed pickles over its pipes. Timeouts are the parent waiting on the pipe, never signals. Plugins
load one message each, so one that exits or hangs at import is named, with its exit code or the time it was given.

Messages, parent to child; the child answers ("ok", payload) or ("error", message) unless noted:
- ("load", spec, args): import one plugin; payload (group, batch_size) of its calling style.
- ("check", splits | None, run_columns): signatures against each split's columns (None: not known, offline), then
  the `check` hooks; payload the hooks' notes.
- ("health",): every plugin's `health` gauges, merged by largest value; payload a dict.
- ("score", index, kwargs): one call of plugin `index`. ("ok", values, logged); ("bad_values", values, {index:
  message}, logged) for right-length output holding unusable values; ("bad_output", message) when the output as a
  whole is unusable (not a list, wrong length); ("error", message) when the call raised.
- ("env_*", ...): environments and tools of multi-turn episodes (actors/env_child.py).
Leaves out: the scoring policy (retries, isolation, on_error), which is actors/reward.py's.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import pickle
import select
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from rewards import RewardPluginError, reward_name

LOAD_TIMEOUT_S = 120.0  # per plugin import, per check, per health read: a slow import on a busy machine fits


def _send(stream: IO[bytes], message: Any) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(payload)) + payload)
    stream.flush()


def _read_exact(fd: int, size: int, deadline: float | None) -> bytes:
    chunks, remaining = [], size
    while remaining:
        if deadline is not None:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError
        chunk = os.read(fd, remaining)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _recv(fd: int, deadline: float | None = None) -> Any:
    (size,) = struct.unpack("<Q", _read_exact(fd, 8, deadline))
    return pickle.loads(_read_exact(fd, size, deadline))


class PluginProcess:
    """The parent's handle on one plugin child: start it, load plugins one by one (each failure named), ask it
    things with a deadline, stop it."""

    def __init__(self, memory_mb: int = 0) -> None:
        self.memory_mb = memory_mb
        self.child = subprocess.Popen([sys.executable, "-m", "actors.reward", str(memory_mb)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=dict(os.environ))

    @property
    def pid(self) -> int:
        return self.child.pid

    def call(self, message: Any, timeout_s: float) -> Any:
        """Send one message and wait for its reply; TimeoutError past `timeout_s`, EOFError or BrokenPipeError when
        the child died."""
        assert self.child.stdin is not None and self.child.stdout is not None
        _send(self.child.stdin, message)
        return _recv(self.child.stdout.fileno(), time.monotonic() + timeout_s)

    def load(self, specs: Sequence[str], args: Mapping[str, Mapping[str, Any]],
             timeout_s: float = LOAD_TIMEOUT_S) -> list[tuple[bool, int | None]]:
        """Import each plugin (with its reward.args entry); returns their calling styles. A plugin that fails,
        exits or does not finish importing within `timeout_s` is a RewardPluginError naming it."""
        styles = []
        for spec in specs:
            styles.append(self.ask(("load", spec, dict(args.get(reward_name(spec), {}))), timeout_s,
                                   f"reward plugin {spec!r}", "importing"))
        return styles

    def ask(self, message: Any, timeout_s: float, who: str, doing: str) -> Any:
        """One request whose failure stops the run: an error reply, a dead child or a timeout is a
        RewardPluginError saying who failed doing what; the child is stopped first."""
        try:
            reply = self.call(message, timeout_s)
        except TimeoutError:
            self.kill()
            raise RewardPluginError(f"{who} did not finish {doing} within {timeout_s:g} s; its process was "
                                    "killed") from None
        except (EOFError, BrokenPipeError):
            code = self.kill(grace_s=5.0)
            limit = f", memory limit {self.memory_mb} MiB" if self.memory_mb else ""
            raise RewardPluginError(f"{who}: its process exited with code {code} while {doing}{limit} (os._exit or "
                                    "a signal; its stderr is above)") from None
        if reply[0] != "ok":
            self.kill()
            raise RewardPluginError(reply[1])
        return reply[1]

    def kill(self, grace_s: float = 0.0) -> int | None:
        """Stop the child (after `grace_s` for one that is exiting on its own) and return its exit code."""
        try:
            return self.child.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.child.kill()
            return self.child.wait()

    def close(self) -> None:
        """End the child the polite way (stdin closed: its loop returns), killing it if it does not go."""
        if self.child.poll() is None and self.child.stdin is not None:
            try:
                self.child.stdin.close()
            except BrokenPipeError:
                pass
        self.kill(grace_s=5.0)


def check_plugins(specs: Sequence[str], args: Mapping[str, Mapping[str, Any]],
                  splits: Mapping[str, Mapping[str, Sequence[Any]]] | None, run_columns: Sequence[str],
                  memory_mb: int = 0, timeout_s: float = LOAD_TIMEOUT_S) -> list[str]:
    """Everything about the reward plugins that can fail before actors start, in a child process: each imports,
    is callable, takes the keyword contract, each split's columns (split name -> column -> rows; None: not known)
    and its reward.args, and its `check` hook accepts the data. Returns the hooks' notes; raises RewardPluginError."""
    process = PluginProcess(memory_mb)
    try:
        process.load(specs, args, timeout_s)
        return process.ask(("check", None if splits is None else {k: dict(v) for k, v in splits.items()},
                            list(run_columns)), timeout_s, f"reward plugins {list(specs)}", "checking signatures "
                           "and data")
    finally:
        process.close()


# ---- the child process -------------------------------------------------------------------------------------------
Plugins = list[tuple[str, Any, dict[str, Any]]]  # (spec, function, its reward.args entry), in recipe order


def child_main() -> None:
    """Child process loop: set the memory limit, then answer messages until stdin closes."""
    memory_mb = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    if memory_mb > 0:
        import resource

        limit = memory_mb << 20
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # plugin prints go to stderr, never into the protocol stream
    inp = sys.stdin.buffer.fileno()
    plugins: Plugins = []
    from actors.env_child import handlers as env_handlers

    handlers: dict[str, Callable[..., Any]] = {"load": _load, "check": _check, "health": _health, "score": _score,
                                               **env_handlers()}
    while True:
        try:
            message = _recv(inp)
        except EOFError:
            return
        _send(out, handlers[message[0]](plugins, *message[1:]))


def _load(plugins: Plugins, spec: str, args: dict[str, Any]) -> tuple[str, Any]:
    from rewards import load_reward, short_traceback, style_of

    try:
        fn = load_reward(spec)
    except RewardPluginError as err:
        return ("error", str(err))
    except BaseException:  # KeyboardInterrupt or the like raised by the plugin's module body
        return ("error", f"reward plugin {spec!r}: importing it raised:\n{short_traceback()}")
    plugins.append((spec, fn, args))
    return ("ok", (style_of(fn).group, style_of(fn).batch_size))


def _check(plugins: Plugins, splits: dict[str, dict[str, list[Any]]] | None,
           run_columns: list[str]) -> tuple[str, Any]:
    from rewards import check_signature, run_check

    notes: list[str] = []
    try:
        for spec, fn, args in plugins:
            for columns in ([None] if splits is None else [sorted(c) for c in splits.values()]):
                check_signature(spec, fn, columns, args, run_columns)
        for spec, fn, args in plugins:
            notes += [n for n in run_check(spec, fn, splits or {}, args) if n not in notes]
    except RewardPluginError as err:
        return ("error", str(err))
    return ("ok", notes)


def _health(plugins: Plugins) -> tuple[str, Any]:
    from rewards import read_health

    gauges: dict[str, float] = {}
    try:
        for spec, fn, args in plugins:
            for key, value in read_health(spec, fn, args).items():
                gauges[key] = max(value, gauges.get(key, value))
    except RewardPluginError as err:
        return ("error", str(err))
    return ("ok", gauges)


def _score(plugins: Plugins, index: int, kwargs: dict[str, Any]) -> tuple[Any, ...]:
    from rewards import OutputError, call_kwargs, read_output, short_traceback
    from rewards.protocol import TrainerState

    spec, fn, args = plugins[index]
    logged: dict[str, list[float]] = {}

    def log_metric(name: str, value: float) -> None:
        logged.setdefault(str(name), []).append(float(value))

    extras = {"trainer_state": TrainerState(global_step=max(0, int(kwargs.get("step") or 1) - 1)),
              "log_metric": log_metric, "log_extra": lambda column, values: None}
    try:
        values = fn(**call_kwargs(fn, {**kwargs, **extras, **args}))
        if inspect.isawaitable(values):
            values = asyncio.run(_wait(values))
    except BaseException:  # a plugin's SystemExit or MemoryError is its error, not the worker's
        return ("error", f"raised:\n{short_traceback()}")
    sums = {name: (sum(v), len(v)) for name, v in logged.items()}
    try:
        out, bad = read_output(spec, values, len(kwargs["completions"]))
    except OutputError as err:
        return ("bad_output", str(err))
    return ("bad_values", out, bad, sums) if bad else ("ok", out, sums)


async def _wait(awaitable: Any) -> Any:
    return await awaitable
