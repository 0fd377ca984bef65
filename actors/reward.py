"""Reward workers: Ray actors that run reward functions in a child process each (actors/plugin_process.py), with a
per-call timeout, a memory limit, one retry and a per-sample error policy.

A call that fails is retried once. What happens when it fails again depends on how it failed:
- it raised, hung past reward.timeout_s or killed its process: its completions are scored one by one, so a single
  bad sample does not cost its neighbours (until the chunk passes reward.max_error_rate); those that still fail
  are errors;
- it returned output that is not a list of one value per completion (wrong length, not a sequence): every
  completion of the call is an error. Its values cannot be matched to completions, and single calls would hide the
  bug: a function returning `[1.0]` whatever it is given passes every one-completion call (security review F7). No
  one-by-one calls are made;
- it returned one value per completion but some are unusable (non-numeric, NaN, inf): those completions are errors,
  the others keep their values.
Errors get `on_error`: 'raise' stops the run with the plugin's message, 'skip' leaves the sample out of training, a
number is used as that function's score. Failures are counted and returned with the first message, which the
driver prints in full once per plugin (a warning line per step after that, rlpost/scoring.py); the driver decides
whether the error rate stops the run. Each result also carries the plugins' health gauges, read once per child.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from actors.env_host import EnvSettings
from actors.plugin_process import LOAD_TIMEOUT_S, PluginProcess
from rlpost.config import RewardConfig, reward_name
from rlpost.types import RewardRequest, RewardResult


@dataclass(frozen=True)
class RewardSettings:
    """What a worker needs from the recipe's reward section: the `RewardConfig` fields of the same names, documented
    there. No defaults: the schema's are the only ones, and code that builds settings by hand (tests, benchmarks)
    states every value it relies on."""

    functions: list[str]
    weights: list[float]  # empty: all 1.0
    timeout_s: float
    args: dict[str, dict[str, Any]]
    on_error: str  # 'raise', 'skip', or a number
    max_error_rate: float  # isolation of failing samples stops once a chunk passes this rate
    memory_mb: int  # 0: no limit

    @classmethod
    def from_config(cls, reward: RewardConfig) -> RewardSettings:
        """The worker's slice of the reward section, copied field by field by name."""
        values = {f.name: getattr(reward, f.name) for f in dataclasses.fields(cls)}
        values["args"] = {name: dict(kwargs) for name, kwargs in reward.args.items()}
        return cls(**values)


@dataclass
class _Call:
    """What one call (after its retry) gave: values (None: nothing usable came back), the indices within the call
    whose value broke the contract, the last error message ('' when it succeeded), whether the output as a whole
    was unusable, and what it passed to log_metric."""

    values: list[float] | None
    bad: dict[int, str] = field(default_factory=dict)
    error: str = ""
    whole_output: bool = False
    logged: dict[str, tuple[float, int]] = field(default_factory=dict)


class RewardWorker:
    """Owns one child process that has the reward functions loaded (wrapped by `ray.remote` in actors/build.py)."""

    def __init__(self, settings: RewardSettings) -> None:
        self.settings = settings
        self.names = [reward_name(spec) for spec in settings.functions]
        self.weights = settings.weights or [1.0] * len(settings.functions)
        self.groupwise: list[bool] = []
        self.batch_sizes: list[int | None] = []
        self.gauges: dict[str, float] = {}
        self.process: PluginProcess | None = None
        self.envs: Any = None  # an EnvHost once env_start ran (multi-turn recipes)
        self._start()

    def _start(self) -> None:
        """A fresh child with the plugins loaded and their health read; plugin errors are RewardPluginErrors."""
        # Loading imports the plugins (slow on a busy machine); the per-call timeout bounds scoring calls only.
        timeout_s = max(self.settings.timeout_s, LOAD_TIMEOUT_S)
        self.process = PluginProcess(self.settings.memory_mb)
        styles = self.process.load(self.settings.functions, self.settings.args, timeout_s)
        self.gauges = self.process.ask(("health",), timeout_s, f"reward plugins {self.settings.functions}",
                                       "reading health gauges")
        self.groupwise = [group for group, _ in styles]
        self.batch_sizes = [size for _, size in styles]

    def ping(self) -> int:
        return self.process.pid if self.process else -1

    # ---- environments of multi-turn episodes (actors/env_host.py) -------------------------------------------------
    def env_start(self, settings: EnvSettings) -> dict[str, Any]:
        """Load the recipe's environments and tools in their own child; returns what they offer (tools, schemas)."""
        from actors.env_host import EnvHost

        self.envs = EnvHost(settings)
        return self.envs.info

    def env_open(self, items: list[tuple[int, str, dict[str, Any]]]) -> list[tuple[str | None, str]]:
        return self.envs.open(items)

    def env_step(self, items: list[tuple[int, str, dict[str, Any], str | None]]) -> list[tuple[str | None, str, str]]:
        return self.envs.step(items)

    def env_finish(self, keys: list[int]) -> list[tuple[float | None, str]]:
        return self.envs.finish(keys)

    def env_health(self) -> dict[str, int]:
        """Timeouts and crashes of the environment child so far."""
        return {"timeouts": self.envs.timeouts, "crashes": self.envs.crashes}

    # ---- scoring -------------------------------------------------------------------------------------------------
    def score(self, request: RewardRequest) -> RewardResult:
        """Score one chunk; every function in recipe order, each seeing the earlier ones' values as `components`."""
        from actors.runtime import injected_fault

        injected_fault("reward.score")
        n = len(request.completions)
        result = RewardResult(rewards=[], components={}, failed=[False] * n)
        budget = max(1, math.ceil(self.settings.max_error_rate * n))
        for index, name in enumerate(self.names):
            values = [math.nan] * n
            for lo, hi in self._calls(index, request):
                self._score_call(index, request, lo, hi, values, result, budget)
            result.components[name] = values
        fixed = _fixed_score(self.settings.on_error)
        for j in range(n):
            parts = [w * result.components[name][j] for name, w in zip(self.names, self.weights)
                     if not math.isnan(result.components[name][j])]
            skip = result.failed[j] and fixed is None
            result.rewards.append(math.nan if skip or not parts else sum(parts))
        result.gauges = dict(self.gauges)  # after any replacement of the child during this chunk
        return result

    def _calls(self, index: int, request: RewardRequest) -> list[tuple[int, int]]:
        """[lo, hi) of each call: one per group for group-level functions, else batches of batch_size."""
        if self.groupwise[index]:
            return request.groups()
        n, size = len(request.completions), self.batch_sizes[index] or max(1, len(request.completions))
        return [(lo, min(n, lo + size)) for lo in range(0, n, size)]

    def _score_call(self, index: int, request: RewardRequest, lo: int, hi: int, values: list[float],
                    result: RewardResult, budget: int) -> None:
        """Fill values[lo:hi] from one call and its retry, then apply the module docstring's rules to a failure."""
        from rewards import RewardPluginError

        call = self._attempt(index, request, lo, hi, result, retries=1)
        if call.error and self.settings.on_error == "raise":
            raise RewardPluginError(call.error)
        result.first_error = result.first_error or call.error
        if call.values is not None:  # success, or one value per completion with some unusable
            self._accept(call, lo, values, result)
        elif call.whole_output:
            self._fail(range(lo, hi), values, result)
        else:
            self._isolate(index, request, lo, hi, values, result, budget)

    def _isolate(self, index: int, request: RewardRequest, lo: int, hi: int, values: list[float],
                 result: RewardResult, budget: int) -> None:
        """Score a failed call's completions one by one (a group-level call stays whole), while the chunk's errors
        stay within `budget`; what still fails is an error."""
        units = [(j, j + 1) for j in range(lo, hi)] if not self.groupwise[index] and hi - lo > 1 else [(lo, hi)]
        for a, b in units:
            if len(units) > 1 and sum(result.failed) < budget:
                call = self._attempt(index, request, a, b, result, retries=0)
                if call.values is not None:
                    self._accept(call, a, values, result)
                    continue
            self._fail(range(a, b), values, result)

    def _accept(self, call: _Call, lo: int, values: list[float], result: RewardResult) -> None:
        """Take a call's values and log_metric sums; its unusable values are errors."""
        assert call.values is not None
        values[lo:lo + len(call.values)] = call.values
        self._fail([lo + i for i in call.bad], values, result)
        for key, (total, count) in call.logged.items():
            mine = result.logged.get(key, (0.0, 0))
            result.logged[key] = (mine[0] + total, mine[1] + count)

    def _fail(self, indices: Any, values: list[float], result: RewardResult) -> None:
        fixed = _fixed_score(self.settings.on_error)
        for j in indices:
            result.failed[j] = True
            values[j] = math.nan if fixed is None else fixed

    def _attempt(self, index: int, request: RewardRequest, lo: int, hi: int, result: RewardResult,
                 retries: int) -> _Call:
        """Run one call, retrying on any failure; returns the last attempt's outcome."""
        kwargs = {"prompts": request.prompts[lo:hi], "completions": request.completions[lo:hi],
                  "completion_ids": [_int_list(ids) for ids in request.completion_ids[lo:hi]],  # TRL passes lists
                  **{c: v[lo:hi] for c, v in request.columns.items()}, **request.run,
                  "components": {k: v[lo:hi] for k, v in result.components.items()}}
        call = _Call(None)
        for attempt in range(retries + 1):
            if attempt:
                result.retries += 1
            call = self._once(index, kwargs, hi - lo, result)
            if not call.error:
                break
        return call

    def _once(self, index: int, kwargs: dict[str, Any], n: int, result: RewardResult) -> _Call:
        """One call in the child; a hung child is killed and a dead one replaced (counted either way)."""
        assert self.process is not None
        where = f"reward plugin {self.settings.functions[index]!r} on {n} completion(s)"
        try:
            reply = self.process.call(("score", index, kwargs), self.settings.timeout_s)
        except TimeoutError:
            result.timeouts += 1
            self.process.kill()
            self._start()
            return _Call(None, error=f"{where}: timed out after {self.settings.timeout_s:g}s (reward.timeout_s); "
                                     "the child process was killed and replaced")
        except (EOFError, BrokenPipeError):
            result.crashes += 1
            code = self.process.kill(grace_s=5.0)
            self._start()
            limit = f", memory limit {self.settings.memory_mb} MiB" if self.settings.memory_mb else ""
            return _Call(None, error=f"{where}: the child process died (exit code {code}{limit}); it was replaced")
        if reply[0] == "ok":
            return _Call(reply[1], logged=reply[2])
        if reply[0] == "bad_values":
            bad = reply[2]
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            return _Call(reply[1], bad, f"{bad[min(bad)]}{more} in a call on {n} completion(s); those completions "
                                        "count as errors", logged=reply[3])
        if reply[0] == "bad_output":
            return _Call(None, error=f"{reply[1]}: the call's values cannot be matched to its completions, so all "
                                     f"{n} count as errors", whole_output=True)
        return _Call(None, error=f"{where}: {reply[1]}")


def _fixed_score(on_error: str) -> float | None:
    """The score given to failed samples, or None for 'raise'/'skip'."""
    try:
        return float(on_error)
    except ValueError:
        return None


if __name__ == "__main__":  # the plugin child process (actors/plugin_process.py), started as `python -m actors.reward`
    from actors.plugin_process import child_main

    child_main()


def _int_list(ids: Any) -> list[int]:
    """A completion's token ids as the plain list of ints reward functions get (TRL's contract)."""
    return ids.tolist() if hasattr(ids, "tolist") else list(ids)
