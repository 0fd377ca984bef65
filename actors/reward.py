"""Reward workers: Ray actors that run reward functions in a child process each, with a per-call timeout.

The child is a plain `python -m actors.reward` subprocess speaking length-prefixed pickles over its pipes: no
signal-based timeouts and no threads, so a hung or crashing plugin is killed and named instead of hanging the run.
Errors are raised to the driver with the plugin's traceback, never turned into a score of 0.
Leaves out: retries, per-sample error policies, memory limits, error-rate thresholds (reward-plugin issue).
"""

from __future__ import annotations

import os
import pickle
import select
import struct
import subprocess
import sys
import time
import traceback
from typing import Any, BinaryIO

from rlpost.types import RewardRequest, RewardResult

LOAD_TIMEOUT_S = 120.0


class RewardTimeoutError(RuntimeError):
    """A reward call ran past its timeout; the child running it was killed and replaced."""


class RewardWorkerCrash(RuntimeError):
    """The reward child process died during a call."""


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

    def __init__(self, specs: list[str], weights: list[float], timeout_s: float) -> None:
        self.specs, self.weights, self.timeout_s = specs, weights or [1.0] * len(specs), timeout_s
        self.child: subprocess.Popen | None = None
        self._start()

    def _start(self) -> None:
        self.child = subprocess.Popen([sys.executable, "-m", "actors.reward"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, env=dict(os.environ))
        # Loading imports the plugins (slow on a busy machine); the per-call timeout bounds scoring calls only.
        reply = self._call(("load", self.specs), max(self.timeout_s, LOAD_TIMEOUT_S))
        if reply[0] != "ok":
            self._kill()
            from rewards import RewardPluginError

            raise RewardPluginError(reply[1])

    def _call(self, message: Any, timeout_s: float) -> Any:
        assert self.child is not None and self.child.stdin is not None and self.child.stdout is not None
        _send(self.child.stdin, message)
        return _recv(self.child.stdout.fileno(), time.monotonic() + timeout_s)

    def score(self, request: RewardRequest) -> RewardResult:
        """Score one chunk; raises a named error if a plugin fails, hangs or kills its process."""
        from rewards import RewardPluginError

        try:
            reply = self._call(("score", request, self.weights), self.timeout_s)
        except TimeoutError:
            self._restart()
            raise RewardTimeoutError(f"reward call over {len(request.completions)} completions exceeded "
                                     f"{self.timeout_s:.0f}s (plugins {self.specs}); the child was killed") from None
        except (EOFError, BrokenPipeError):
            code = None
            if self.child is not None:
                try:
                    code = self.child.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            self._restart()
            raise RewardWorkerCrash(f"reward child process died (exit code {code}) while running "
                                    f"{self.specs}") from None
        if reply[0] != "ok":
            raise RewardPluginError(reply[1])
        return reply[1]

    def _restart(self) -> None:
        self._kill()
        self._start()

    def _kill(self) -> None:
        if self.child is not None and self.child.poll() is None:
            self.child.kill()
            self.child.wait()

    def ping(self) -> int:
        return self.child.pid if self.child else -1


def _child_main() -> None:
    """Child process loop: load plugins, then score requests until stdin closes."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # plugin prints go to stderr, never into the protocol stream
    inp = sys.stdin.buffer.fileno()
    functions: list[tuple[str, Any]] = []
    while True:
        try:
            message = _recv(inp)
        except EOFError:
            return
        if message[0] == "load":
            _send(out, _load(message[1], functions))
        elif message[0] == "score":
            _send(out, _score(functions, message[1], message[2]))


def _load(specs: list[str], functions: list[tuple[str, Any]]) -> tuple[str, Any]:
    from rewards import RewardPluginError, load_reward

    try:
        functions[:] = [(spec, load_reward(spec)) for spec in specs]
    except RewardPluginError as err:
        return ("error", str(err))
    return ("ok", None)


def _score(functions: list[tuple[str, Any]], request: RewardRequest, weights: list[float]) -> tuple[str, Any]:
    from rewards import RewardPluginError, check_output

    n = len(request.completions)
    total = [0.0] * n
    components: dict[str, list[float]] = {}
    for (spec, fn), weight in zip(functions, weights):
        try:
            values = fn(prompts=request.prompts, completions=request.completions,
                        completion_ids=request.completion_ids, **request.columns)
        except Exception:
            return ("error", f"reward plugin {spec!r} raised:\n{traceback.format_exc()}")
        try:
            values = check_output(spec, values, n)
        except RewardPluginError as err:
            return ("error", str(err))
        components[spec] = values
        total = [t + weight * v for t, v in zip(total, values)]
    return ("ok", RewardResult(rewards=total, components=components))


if __name__ == "__main__":
    _child_main()
