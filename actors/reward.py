"""Reward workers: Ray actors that run reward functions in a child process each, with a per-call timeout, a memory
limit, one retry and a per-sample error policy.

The child is a plain `python -m actors.reward` subprocess speaking length-prefixed pickles over its pipes; it imports
only the plugins (not torch). Timeouts are the parent waiting on the pipe, never signals, so a hung or crashing
plugin is killed, named and replaced instead of hanging the run or scoring 0. A call that fails (raises, hangs,
kills its process, returns bad output) is retried once; if it fails again, its completions are scored one by one so a
single bad sample does not cost its neighbours, and those that still fail get `on_error`: 'raise' stops the run with
the plugin's traceback, 'skip' leaves the sample out of training, a number is used as that function's score. Failures
are counted and returned with the first traceback; the driver decides whether the error rate stops the run.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import os
import pickle
import select
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from rlpost.types import RewardRequest, RewardResult

LOAD_TIMEOUT_S = 120.0


class RewardTimeoutError(RuntimeError):
    """A reward call ran past its timeout; the child running it was killed and replaced."""


class RewardWorkerCrash(RuntimeError):
    """The reward child process died during a call."""


@dataclass(frozen=True)
class RewardSettings:
    """What a worker needs from the recipe's reward section."""

    functions: list[str]
    weights: list[float] = field(default_factory=list)
    timeout_s: float = 60.0
    args: dict[str, dict[str, Any]] = field(default_factory=dict)
    on_error: str = "raise"  # 'raise', 'skip', or a number
    max_error_rate: float = 1.0  # isolation of failing samples stops once a chunk passes this rate
    memory_mb: int = 0

    @classmethod
    def from_config(cls, reward: Any) -> RewardSettings:
        return cls(list(reward.functions), list(reward.weights), reward.timeout_s,
                   {k: dict(v) for k, v in dict(reward.args).items()}, str(reward.on_error), reward.max_error_rate,
                   reward.memory_mb)


def _send(stream: BinaryIO, message: Any) -> None:
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


class RewardWorker:
    """Owns one child process that has the reward functions loaded (wrapped by `ray.remote` in actors/build.py)."""

    def __init__(self, settings: RewardSettings) -> None:
        from rewards import reward_name

        self.settings = settings
        self.names = [reward_name(spec) for spec in settings.functions]
        self.weights = settings.weights or [1.0] * len(settings.functions)
        self.groupwise: list[bool] = []
        self.batch_sizes: list[int | None] = []
        self.child: subprocess.Popen | None = None
        self._start()

    # ---- child process -------------------------------------------------------------------------------------------
    def _start(self) -> None:
        self.child = subprocess.Popen([sys.executable, "-m", "actors.reward", str(self.settings.memory_mb)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=dict(os.environ))
        # Loading imports the plugins (slow on a busy machine); the per-call timeout bounds scoring calls only.
        try:
            reply = self._call(("load", self.settings.functions, self.settings.args),
                               max(self.settings.timeout_s, LOAD_TIMEOUT_S))
        except (TimeoutError, EOFError, BrokenPipeError):
            code = self._kill(grace_s=1.0)
            raise RewardWorkerCrash(f"reward child process failed while loading {self.settings.functions} "
                                    f"(exit code {code})") from None
        if reply[0] != "ok":
            self._kill()
            from rewards import RewardPluginError

            raise RewardPluginError(reply[1])
        self.groupwise = [group for group, _ in reply[1]]
        self.batch_sizes = [size for _, size in reply[1]]

    def _call(self, message: Any, timeout_s: float) -> Any:
        assert self.child is not None and self.child.stdin is not None and self.child.stdout is not None
        _send(self.child.stdin, message)
        return _recv(self.child.stdout.fileno(), time.monotonic() + timeout_s)

    def _kill(self, grace_s: float = 0.0) -> int | None:
        """Stop the child (after `grace_s` for one that is exiting on its own) and return its exit code."""
        if self.child is None:
            return None
        try:
            return self.child.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.child.kill()
            return self.child.wait()

    def ping(self) -> int:
        return self.child.pid if self.child else -1

    # ---- scoring -------------------------------------------------------------------------------------------------
    def score(self, request: RewardRequest) -> RewardResult:
        """Score one chunk; every function in recipe order, each seeing the earlier ones' values as `components`."""
        from actors.runtime import injected_fault

        injected_fault("reward.score")
        from rewards import RewardPluginError

        n = len(request.completions)
        result = RewardResult(rewards=[], components={}, failed=[False] * n)
        fixed = _fixed_score(self.settings.on_error)
        budget = max(1, math.ceil(self.settings.max_error_rate * n))
        for index, name in enumerate(self.names):
            values = [math.nan] * n
            for lo, hi in self._calls(index, request):
                out, error = self._attempt(index, request, lo, hi, result, retries=1)
                if error is None:
                    values[lo:hi] = out
                    continue
                if self.settings.on_error == "raise":
                    raise RewardPluginError(error)
                result.first_error = result.first_error or error
                units = [(j, j + 1) for j in range(lo, hi)] if not self.groupwise[index] and hi - lo > 1 \
                    else [(lo, hi)]
                for a, b in units:
                    if len(units) > 1 and sum(result.failed) < budget:
                        out, error = self._attempt(index, request, a, b, result, retries=0)
                        if error is None:
                            values[a:b] = out
                            continue
                    for j in range(a, b):
                        result.failed[j] = True
                        values[j] = math.nan if fixed is None else fixed
            result.components[name] = values
        for j in range(n):
            parts = [w * result.components[name][j] for name, w in zip(self.names, self.weights)
                     if not math.isnan(result.components[name][j])]
            skip = result.failed[j] and fixed is None
            result.rewards.append(math.nan if skip or not parts else sum(parts))
        return result

    def _calls(self, index: int, request: RewardRequest) -> list[tuple[int, int]]:
        """[lo, hi) of each call: one per group for group-level functions, else batches of batch_size."""
        if self.groupwise[index]:
            return request.groups()
        n, size = len(request.completions), self.batch_sizes[index] or max(1, len(request.completions))
        return [(lo, min(n, lo + size)) for lo in range(0, n, size)]

    def _attempt(self, index: int, request: RewardRequest, lo: int, hi: int, result: RewardResult,
                 retries: int) -> tuple[list[float], str | None]:
        """Run one call, retrying on failure; returns (values, None) or ([], the last error message)."""
        kwargs = {"prompts": request.prompts[lo:hi], "completions": request.completions[lo:hi],
                  "completion_ids": request.completion_ids[lo:hi],
                  **{c: v[lo:hi] for c, v in request.columns.items()}, **request.run,
                  "components": {k: v[lo:hi] for k, v in result.components.items()}}
        error = ""
        for attempt in range(retries + 1):
            if attempt:
                result.retries += 1
            where = f"reward plugin {self.settings.functions[index]!r} on {hi - lo} completion(s)"
            try:
                reply = self._call(("score", index, kwargs), self.settings.timeout_s)
            except TimeoutError:
                result.timeouts += 1
                self._kill()
                self._start()
                error = (f"{where}: timed out after {self.settings.timeout_s:g}s (reward.timeout_s); the child "
                         "process was killed and replaced")
                continue
            except (EOFError, BrokenPipeError):
                result.crashes += 1
                code = self._kill(grace_s=5.0)
                self._start()
                limit = f", memory limit {self.settings.memory_mb} MiB" if self.settings.memory_mb else ""
                error = f"{where}: the child process died (exit code {code}{limit}); it was replaced"
                continue
            if reply[0] == "ok":
                return reply[1], None
            error = f"{where}: {reply[1]}"
        return [], error


def _fixed_score(on_error: str) -> float | None:
    """The score given to failed samples, or None for 'raise'/'skip'."""
    try:
        return float(on_error)
    except ValueError:
        return None


# ---- the child process -------------------------------------------------------------------------------------------
def _child_main() -> None:
    """Child process loop: set the memory limit, load plugins, then answer calls until stdin closes."""
    memory_mb = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    if memory_mb > 0:
        import resource

        limit = memory_mb << 20
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # plugin prints go to stderr, never into the protocol stream
    inp = sys.stdin.buffer.fileno()
    functions: list[tuple[str, Any, dict[str, Any]]] = []
    while True:
        try:
            message = _recv(inp)
        except EOFError:
            return
        if message[0] == "load":
            _send(out, _load(message[1], message[2], functions))
        elif message[0] == "score":
            _send(out, _run(functions[message[1]], message[2]))


def _load(specs: list[str], args: dict[str, dict[str, Any]],
          functions: list[tuple[str, Any, dict[str, Any]]]) -> tuple[str, Any]:
    from rewards import RewardPluginError, load_reward, reward_name, style_of

    try:
        functions[:] = [(spec, load_reward(spec), args.get(reward_name(spec), {})) for spec in specs]
    except RewardPluginError as err:
        return ("error", str(err))
    return ("ok", [(style_of(fn).group, style_of(fn).batch_size) for _, fn, _ in functions])


def _run(function: tuple[str, Any, dict[str, Any]], kwargs: dict[str, Any]) -> tuple[str, Any]:
    from rewards import RewardPluginError, call_kwargs, check_output, short_traceback

    spec, fn, args = function
    try:
        values = fn(**call_kwargs(fn, {**kwargs, **args}))
        if inspect.isawaitable(values):
            values = asyncio.run(_wait(values))
    except BaseException:  # a plugin's SystemExit or MemoryError is its error, not the worker's
        return ("error", f"raised:\n{short_traceback()}")
    try:
        return ("ok", check_output(spec, values, len(kwargs["completions"])))
    except RewardPluginError as err:
        return ("error", str(err))


async def _wait(awaitable: Any) -> Any:
    return await awaitable


if __name__ == "__main__":
    _child_main()
