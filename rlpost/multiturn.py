"""Multi-turn rollouts: each sample of a group is an episode of model turns and environment turns (TRL's
`environment_factory` / `tools` contract, rlpost/episodes.py).

For every prompt of a pass, each of its n samples gets its own environment instance on the reward workers, reset with
the prompt's dataset row. Then turns alternate, all live episodes together: the vLLM engines continue every live
episode (its prompt and all its turns so far, as token ids, never re-tokenized); the tool format
(rlpost/tool_formats.py) finds the calls a model turn ends with; the environments run them; the replies' tokens are
appended as an environment turn. An episode ends at a turn without calls, after rollout.max_turns model turns (a
call in the last is not run), or when its budget (rollout.max_new_tokens, model and environment tokens together, as
TRL's max_completion_length) is spent: a reply that would not leave room for a model token is not appended, and
the episode ends truncated. Then get_reward() scores it and its instance is dropped.

Sampling is seeded as a single completion is: a group's first turns use its request's seed with n samples (a pass
whose model never calls a tool samples exactly what a plain pass does); each later turn of sample j has its own seed
from (the request's seed, j, turn). A reset observation (a str) is appended after the prompt as an environment turn.
Leaves out: observations for chat prompts (they would change the prompt's rendering), partial rollouts of episodes.
"""

from __future__ import annotations

import hashlib
import itertools
import sys
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from rlpost.episodes import Episode, Turn
from rlpost.tool_formats import Call, Result, ToolFormat
from rlpost.types import EnvironmentPool, GenerationRequest, Group, Prompt, RolloutEngine, Sample


@dataclass
class _Live:
    """One episode while it runs."""

    key: int
    uid: int  # the prompt's
    env: str
    prompt: list[int]
    budget: int  # tokens the completion may hold, model and environment together
    seed: int
    episode: Episode = field(default_factory=Episode)
    finish: str = "stop"
    done: bool = False
    calls: int = 0
    errors: int = 0
    version: int = 0
    messages: list[dict[str, Any]] = field(default_factory=list)

    def used(self) -> int:
        return sum(len(t.token_ids) for t in self.episode.turns)


@dataclass
class EpisodeStats:
    """Errors of the environments: a failed reset or get_reward fails its sample (the reward stage's health counts
    it, with this message); a failed tool call is the model's, fed back and counted, its first detail printed."""

    reset_errors: int = 0
    reward_errors: int = 0
    tool_errors: int = 0
    first_error: str = ""
    tool_error_shown: bool = False

    def note(self, error: str) -> None:
        self.first_error = self.first_error or error

    def take_error(self) -> str:
        error, self.first_error = self.first_error, ""
        return error

    def tool_failed(self, detail: str) -> None:
        self.tool_errors += 1
        if not self.tool_error_shown:
            self.tool_error_shown = True
            print(f"[rlpost] a tool call failed (fed back to the model and counted as env/tool_errors; only the first "
                  f"is shown):\n{detail}", file=sys.stderr, flush=True)


class EpisodeRunner:
    """Runs a pass's episodes against the engines and the environments."""

    def __init__(self, engine: RolloutEngine, envs: EnvironmentPool, fmt: ToolFormat, tokenizer: Any,
                 max_turns: int, max_model_len: int, chat: bool = False) -> None:
        self.engine, self.envs, self.fmt, self.tokenizer = engine, envs, fmt, tokenizer
        self.max_turns, self.max_model_len, self.chat = max_turns, max_model_len, chat
        self.keys = itertools.count()
        self.stats = EpisodeStats()

    def generate(self, prompts: list[Prompt], requests: list[GenerationRequest]) -> list[list[Sample]]:
        """The episodes of every request (n per prompt), as samples in request order."""
        groups = self._open(prompts, requests)
        self._first_turns(groups, requests)
        for turn in range(1, self.max_turns + 1):
            live = [e for group in groups for e in group if not e.done]
            self._run_tools(live, last=turn == self.max_turns)
            live = [e for e in live if not e.done]
            if not live or turn == self.max_turns:
                break
            self._continue(live, requests[0], turn)
        return self._finish(groups)

    def _open(self, prompts: list[Prompt], requests: list[GenerationRequest]) -> list[list[_Live]]:
        """An environment per sample, reset with its prompt's row; an observation becomes a leading env turn."""
        groups = [[_Live(next(self.keys), p.uid, str(p.columns.get("environment", "default")), list(p.token_ids),
                         r.max_new_tokens, _turn_seed(r.seed, j, 0)) for j in range(r.n)]
                  for p, r in zip(prompts, requests)]
        rows = {id(e): {**p.columns, "prompt": p.messages if p.messages is not None else p.text}
                for p, group in zip(prompts, groups) for e in group}
        episodes = [e for group in groups for e in group]
        for e, (observation, error) in zip(episodes, self.envs.env_open([(e.key, e.env, rows[id(e)])
                                                                         for e in episodes])):
            if error:
                self.stats.reset_errors += 1
                self.stats.note(f"environment {e.env!r}: {error}")
                e.done, e.finish = True, "env_error"
            elif observation:
                if self.chat:
                    raise ValueError(f"environment {e.env!r}: reset returned an observation for a chat prompt; rlpost "
                                     "appends observations to plain-text prompts only (return None from reset, or "
                                     "put the text in the prompt)")
                ids = list(self.tokenizer(observation, add_special_tokens=False)["input_ids"])
                e.episode.turns.append(Turn("env", ids))
        return groups

    def _first_turns(self, groups: list[list[_Live]], requests: list[GenerationRequest]) -> None:
        """Every episode's first model turn: a group without observations and failed resets is sampled as one
        request of n (the plain pass's seeds); the others one request per episode."""
        whole = [i for i, group in enumerate(groups) if all(not e.done and not e.episode.turns for e in group)]
        plain = set(whole)
        single = [e for i, group in enumerate(groups) if i not in plain for e in group if not e.done]
        asked = [replace(requests[i], stop=tuple(self.fmt.stop)) for i in whole]
        asked += [self._request(e, requests[0], 0) for e in single]
        answers = self.engine.generate(asked) if asked else []
        for i, samples in zip(whole, answers):
            for e, sample in zip(groups[i], samples):
                self._add_model_turn(e, sample)
        for e, samples in zip(single, answers[len(whole):]):
            self._add_model_turn(e, samples[0])

    def _continue(self, live: list[_Live], template: GenerationRequest, turn: int) -> None:
        """The next model turn of every live episode."""
        for e, samples in zip(live, self.engine.generate([self._request(e, template, turn) for e in live])):
            self._add_model_turn(e, samples[0])

    def _request(self, e: _Live, template: GenerationRequest, turn: int) -> GenerationRequest:
        completion = e.episode.completion_ids()
        return GenerationRequest(prompt_uid=template.prompt_uid, token_ids=e.prompt + completion, n=1,
                                 max_new_tokens=max(1, e.budget - len(completion)), temperature=template.temperature,
                                 top_p=template.top_p, seed=_turn_seed(e.seed, 0, turn), stop=tuple(self.fmt.stop))

    def _add_model_turn(self, e: _Live, sample: Sample) -> None:
        ids = [int(t) for t in sample.token_ids]
        e.episode.turns.append(Turn("model", ids, [float(x) for x in sample.logprobs]))
        if sum(t.role == "model" for t in e.episode.turns) == 1:  # the first model turn's weights (after any
            e.version = sample.version                             # observation): later turns use the same ones
        if self.chat:
            e.messages.append({"role": "assistant", "content": self.tokenizer.decode(ids, skip_special_tokens=True)})
        if sample.finish_reason != "stop":
            e.done, e.finish = True, "length"

    def _run_tools(self, live: list[_Live], last: bool) -> None:
        """The calls each live episode's newest turn makes, run in its environment and answered as an env turn;
        an episode without calls is done (and one whose calls would run after its last turn ends truncated)."""
        calls = {id(e): self.fmt.calls(e.episode.turns[-1].token_ids) for e in live}
        for e in live:
            if not calls[id(e)]:
                e.done = True
            elif last:
                e.done, e.finish = True, "length"  # TRL: the last iteration's calls are not run
        asking = [e for e in live if not e.done]
        items = [(e.key, c.name, dict(c.arguments), c.argument) for e in asking for c in calls[id(e)] if not c.error]
        answers = iter(self.envs.env_step(items) if items else [])
        for e in asking:
            results = [self._result(e, c, answers) for c in calls[id(e)]]
            self._add_env_turn(e, results)

    def _result(self, e: _Live, call: Call, answers: Any) -> Result:
        e.calls += 1
        if call.error:
            e.errors += 1
            self.stats.tool_failed(f"unparseable tool call: {call.error}")
            return Result(call.name, None, call.error)
        value, error, detail = next(answers)
        if value is None:
            e.errors += 1
            self.stats.tool_failed(detail or error)
        return Result(call.name, value, error)

    def _add_env_turn(self, e: _Live, results: list[Result]) -> None:
        ids = list(self.fmt.reply_ids(results))
        if e.used() + len(ids) >= e.budget or len(e.prompt) + e.used() + len(ids) >= self.max_model_len:
            e.done, e.finish = True, "length"  # no room for the model's next token: rolled back, as TRL does
            return
        e.episode.turns.append(Turn("env", ids))
        if self.chat:
            e.messages += [{"role": "tool", "name": r.name, "content": r.value if r.value is not None
                            else str({"error": r.error})} for r in results]

    def _finish(self, groups: list[list[_Live]]) -> list[list[Sample]]:
        """get_reward of every episode (its instance dropped), then the samples."""
        opened = [e for group in groups for e in group if e.finish != "env_error"]
        rewards = dict(zip((e.key for e in opened), self.envs.env_finish([e.key for e in opened]) if opened else []))
        out = []
        for group in groups:
            samples = []
            for e in group:
                reward, error = rewards.get(e.key, (None, "reset failed"))
                if error and e.finish != "env_error":
                    self.stats.reward_errors += 1
                    self.stats.note(f"environment {e.env!r}: {error}")
                samples.append(self._sample(e, reward, bool(error)))
            out.append(samples)
        return out

    def _sample(self, e: _Live, reward: float | None, failed: bool) -> Sample:
        ids = e.episode.completion_ids()
        counts = e.episode.counts()
        stats = {"turns": float(counts["turns"]), "tool_calls": float(e.calls), "tool_errors": float(e.errors),
                 "model_tokens": float(counts["model_tokens"]), "env_tokens": float(counts["env_tokens"]),
                 "env_failed": float(failed)}
        return Sample(prompt_uid=e.uid, token_ids=np.asarray(ids, dtype=np.int32),
                      logprobs=np.asarray(e.episode.logprobs(), dtype=np.float32),
                      text=self.tokenizer.decode(ids, skip_special_tokens=True), finish_reason=e.finish,
                      version=e.version, env_mask=np.asarray(e.episode.loss_mask(), dtype=bool), episode=stats,
                      env_reward=reward, messages=list(e.messages) if self.chat else None)


def _turn_seed(base: int, index: int, turn: int) -> int:
    """The sampling seed of turn `turn` of sample `index` of a request whose seed is `base`."""
    digest = hashlib.blake2b(f"{base}:{index}:{turn}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def episode_metrics(groups: list[Group], prefix: str = "env/") -> dict[str, float]:
    """Per-episode means of turns, tool calls, tool errors and tokens by role, the share of episodes that called a
    tool (overall and per data_source), and the environments' mean get_reward(); empty without episodes."""
    samples = [(g.prompt.data_source, s) for g in groups for s in g.samples if getattr(s, "episode", None)]
    if not samples:
        return {}
    n = float(len(samples))
    out = {f"{prefix}{key}": sum(s.episode.get(key, 0.0) for _, s in samples) / n
           for key in ("turns", "tool_calls", "tool_errors", "model_tokens", "env_tokens")}
    out[f"{prefix}call_rate"] = sum(s.episode.get("tool_calls", 0.0) > 0 for _, s in samples) / n
    for source in sorted({src for src, _ in samples}):
        mine = [s for src, s in samples if src == source]
        out[f"{prefix}call_rate/{source}"] = sum(s.episode.get("tool_calls", 0.0) > 0 for s in mine) / len(mine)
    rewards = [s.env_reward for _, s in samples if s.env_reward is not None]
    if rewards:
        out[f"{prefix}reward"] = sum(rewards) / len(rewards)
    return out
