"""Environments of multi-turn episodes on a reward worker: one child process holds the instances (actors/env_child.py);
this side sends each reset, tool call and get_reward with a timeout and keeps what it needs to rebuild them.

A call that hangs past environment.timeout_s, or kills the child, is an error of that call (fed back to the model,
counted); the child is then replaced, and every other open episode is rebuilt in it by replaying its reset and its
successful calls in order (environments are expected to be deterministic given them, as TRL's pooled instances are
given reset). Leaves out: rebuilding state that depends on wall time or randomness outside the calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from actors.plugin_process import LOAD_TIMEOUT_S, PluginProcess


@dataclass(frozen=True)
class EnvSettings:
    """The recipe's environment section as a worker needs it."""

    factories: dict[str, str]  # name -> spec; a single `factory` is the entry named 'default'
    tools: list[str]
    tag_format: bool
    timeout_s: float
    memory_mb: int


@dataclass
class _Episode:
    name: str
    row: dict[str, Any]
    calls: list[tuple[str, dict[str, Any], str | None]] = field(default_factory=list)  # successful ones, in order
    broken: str = ""  # why the episode's environment is gone ('' while it is alive)


class EnvHost:
    """Open, step and finish episodes' environments; counts timeouts and crashes of the child."""

    def __init__(self, settings: EnvSettings) -> None:
        self.settings = settings
        self.episodes: dict[int, _Episode] = {}
        self.timeouts = self.crashes = 0
        self.info: dict[str, Any] = {}
        self.process: PluginProcess | None = None
        self._start()

    def _start(self) -> None:
        """A fresh child with the environments loaded and the open episodes rebuilt in it; an episode whose replay
        fails is marked broken (and a child left hung or dead by it is replaced again)."""
        while True:
            self.process = PluginProcess(self.settings.memory_mb)
            self.info = self.process.ask(("env_load", dict(self.settings.factories), list(self.settings.tools),
                                          self.settings.tag_format), max(LOAD_TIMEOUT_S, self.settings.timeout_s),
                                         f"environments {sorted(self.settings.factories.values())}", "loading")
            if self._replay():
                return
            self.process.kill()

    def _replay(self) -> bool:
        """Replay every open episode's reset and calls; False when one left the child hung or dead."""
        from rewards import RewardPluginError

        for key, episode in self.episodes.items():
            if episode.broken:
                continue
            try:
                self._ask(("env_open", key, episode.name, episode.row))
                for name, arguments, argument in episode.calls:
                    self._ask(("env_call", key, name, arguments, argument))
            except RewardPluginError as err:
                episode.broken = f"its environment could not be rebuilt after a restart: {err}"
            except (TimeoutError, EOFError, BrokenPipeError) as err:
                episode.broken = f"its environment could not be rebuilt after a restart ({type(err).__name__})"
                return False
        return True

    def _ask(self, message: Any) -> Any:
        """One message with the per-call timeout; an error reply raises RewardPluginError."""
        from rewards import RewardPluginError

        assert self.process is not None
        reply = self.process.call(message, self.settings.timeout_s)
        if reply[0] != "ok":
            raise RewardPluginError(reply[1])
        return reply[1]

    def _restart(self, why: str) -> str:
        """Replace a hung or dead child; the reason, for the error of the call that caused it."""
        assert self.process is not None
        if why == "timeout":
            self.timeouts += 1
            self.process.kill()
            message = f"timed out after {self.settings.timeout_s:g}s (environment.timeout_s); killed"
        else:
            self.crashes += 1
            code = self.process.kill(grace_s=5.0)
            message = f"the environment process died (exit code {code})"
        self._start()
        return message

    def _guarded(self, message: Any) -> tuple[Any, str]:
        """(payload, '') or (None, error) for one message, restarting the child when it hung or died."""
        from rewards import RewardPluginError

        try:
            return self._ask(message), ""
        except RewardPluginError as err:
            return None, str(err)
        except TimeoutError:
            return None, self._restart("timeout")
        except (EOFError, BrokenPipeError):
            return None, self._restart("crash")

    def open(self, items: list[tuple[int, str, dict[str, Any]]]) -> list[tuple[str | None, str]]:
        """Reset a new instance per episode: (observation, error) each; a failed reset leaves no episode."""
        out = []
        for key, name, row in items:
            observation, error = self._guarded(("env_open", key, name, row))
            if not error:
                self.episodes[key] = _Episode(name, row)
            out.append((observation, error))
        return out

    def step(self, items: list[tuple[int, str, dict[str, Any], str | None]]) -> list[tuple[str | None, str, str]]:
        """Run tool calls: (value, error for the model, detail for the logs) each."""
        out: list[tuple[str | None, str, str]] = []
        for key, name, arguments, argument in items:
            episode = self.episodes.get(key)
            if episode is None or episode.broken:
                why = episode.broken if episode else "no open environment"
                out.append((None, "environment lost", f"episode {key}: {why}"))
                continue
            payload, error = self._guarded(("env_call", key, name, arguments, argument))
            if error:
                out.append((None, "timeout" if "timed out" in error else "environment error", f"tool {name!r}: "
                            f"{error}"))
                continue
            value, short, detail = payload
            if value is not None:
                episode.calls.append((name, arguments, argument))
            out.append((value, short, detail))
        return out

    def finish(self, keys: list[int]) -> list[tuple[float | None, str]]:
        """get_reward of each episode (None without one), then its instance is dropped: (reward, error) each."""
        out: list[tuple[float | None, str]] = []
        for key in keys:
            episode = self.episodes.pop(key, None)
            if episode is None or episode.broken:
                out.append((None, f"episode {key}: {episode.broken if episode else 'no open environment'}"))
                continue
            value, error = self._guarded(("env_reward", key))
            out.append((value, error))
        if keys:
            self._guarded(("env_close", list(keys)))
        return out

    def close(self) -> None:
        if self.process is not None:
            self.process.close()
