"""Multi-turn episodes (rlpost/multiturn.py) with a scripted engine and in-process environments (the real ones run
in tests/integration/test_environments.py): the exact token sequence, the environment-token mask through the
learner's shards, the budget and max_turns rules, seeds, observations, get_reward as a reward component."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rlpost.batching import compact_shards, expand_shard
from rlpost.embedded.tokenizer import build_tokenizer
from rlpost.embedded.tools import DigitTools
from rlpost.episodes import environment_tools
from rlpost.multiturn import EpisodeRunner, episode_metrics
from rlpost.records import decode_sample, encode_sample
from rlpost.rollouts import add_env_rewards
from rlpost.tool_formats import TagFormat
from rlpost.types import GenerationRequest, Group, Prompt, RewardResult, Sample

TOK = build_tokenizer("!")
EOS = TOK.eos_token_id


def ids(text: str) -> list[int]:
    return list(TOK(text, add_special_tokens=False)["input_ids"])


class ScriptedEngine:
    """Answers each request with the next scripted turn of its episode (keyed by the prompt+completion text)."""

    def __init__(self, script: dict[str, str]) -> None:
        self.script, self.requests = script, []

    def generate(self, requests: list[GenerationRequest]) -> list[list[Sample]]:
        self.requests += requests
        out = []
        for r in requests:
            text = TOK.decode(r.token_ids, skip_special_tokens=True)
            turn = self.script[text]
            eos = turn.endswith("$")
            tokens = ids(turn.rstrip("$")) + ([EOS] if eos else [])
            tokens = tokens[: r.max_new_tokens]
            finish = "stop" if (eos or turn.endswith("]")) and len(tokens) <= r.max_new_tokens else "length"
            out.append([Sample(r.prompt_uid, np.asarray(tokens, np.int32), np.full(len(tokens), -0.5, np.float32),
                               turn, finish, version=3) for _ in range(r.n)])
        return out

    def sequence_logprobs(self, sequences: list[list[int]]) -> list[list[list[float]]]:
        raise NotImplementedError


class LocalEnvs:
    """The EnvironmentPool contract over in-process DigitTools instances."""

    def __init__(self, observation: str | None = None, fail_reset: bool = False) -> None:
        self.open: dict[int, Any] = {}
        self.steps: list[Any] = []
        self.observation, self.fail_reset = observation, fail_reset

    def env_open(self, items):
        out = []
        for key, _name, row in items:
            if self.fail_reset:
                out.append((None, "reset raised:\nTraceback ... ValueError: broken"))
                continue
            env = DigitTools()
            env.reset(**row)
            self.open[key] = env
            out.append((self.observation, ""))
        return out

    def env_step(self, items):
        self.steps += items
        out = []
        for key, name, _arguments, argument in items:
            tools = environment_tools(self.open[key])
            try:
                out.append((str(tools[name](argument)), "", ""))
            except (KeyError, ValueError) as err:
                out.append((None, f"{type(err).__name__}: {err}", "detail"))
        return out

    def env_finish(self, keys):
        return [(float(self.open.pop(k).calls), "") for k in keys]


def run(script: dict[str, str], envs: LocalEnvs | None = None, n: int = 1, budget: int = 32, max_turns: int = 3,
        prompt: str = "3527=") -> tuple[list[Sample], ScriptedEngine, LocalEnvs]:
    engine, envs = ScriptedEngine(script), envs or LocalEnvs()
    runner = EpisodeRunner(engine, envs, TagFormat(TOK), TOK, max_turns, max_model_len=64)
    p = Prompt(7, prompt, list(TOK(prompt)["input_ids"]), "17", "sum4", {"answer": "17", "data_source": "sum4"})
    request = GenerationRequest(7, p.token_ids, n, budget, 1.0, 1.0, seed=1234)
    return runner.generate([p], [request])[0], engine, envs


TOOL_SCRIPT = {"3527=": "[add:3527]", "3527=[add:3527][=17]": "17$"}


def test_an_episode_is_its_turns_end_to_end_as_generated_and_appended():
    (sample,), engine, envs = run(TOOL_SCRIPT)
    turn1, reply, turn2 = ids("[add:3527]"), ids("[=17]"), ids("17") + [EOS]
    assert sample.token_ids.tolist() == turn1 + reply + turn2
    # the second turn continued exactly the prompt and the tokens so far (never re-tokenized text)
    assert engine.requests[1].token_ids == list(TOK("3527=")["input_ids"]) + turn1 + reply
    assert sample.env_mask.tolist() == [True] * len(turn1) + [False] * len(reply) + [True] * len(turn2)
    assert sample.logprobs.tolist() == [-0.5] * len(turn1) + [0.0] * len(reply) + [-0.5] * len(turn2)
    assert sample.text == "[add:3527][=17]17" and sample.finish_reason == "stop" and sample.version == 3
    assert sample.episode == {"turns": 2.0, "tool_calls": 1.0, "tool_errors": 0.0, "model_tokens": 13.0,
                              "env_tokens": 5.0, "env_failed": 0.0}
    assert sample.env_reward == 1.0 and envs.steps == [(0, "add", {}, "3527")] and not envs.open  # closed


def test_environment_tokens_get_no_loss_and_do_not_count_in_the_token_mean():
    (sample,), _, _ = run(TOOL_SCRIPT)
    plain = Sample(7, np.asarray(ids("17") + [EOS], np.int32), np.zeros(3, np.float32), "17", "stop")
    prompt = Prompt(7, "3527=", list(TOK("3527=")["input_ids"]), "17", "sum4")
    (shard,) = compact_shards([Group(prompt, [sample, plain], [1.0, -1.0])], 1)
    assert shard.total_tokens == 13 + 3  # model tokens only
    batch = expand_shard(shard)
    start = len(prompt.token_ids) - 1  # column predicting the first completion token
    mask = batch.loss_mask_BT[0, start: start + len(sample.token_ids)].tolist()
    assert mask == [1.0 if m else 0.0 for m in sample.env_mask]
    env_columns = [start + i for i, m in enumerate(sample.env_mask) if not m]
    assert float(batch.loss_weights_BT[0, env_columns].abs().sum()) == 0.0
    assert float(batch.rollout_logprobs_BT[0, env_columns].abs().sum()) == 0.0
    assert float(batch.loss_mask_BT[1].sum()) == 3.0


def test_a_reply_that_leaves_no_room_is_rolled_back_and_the_episode_is_truncated():
    (sample,), _, envs = run(TOOL_SCRIPT, budget=14)  # 10 call tokens + 5 reply tokens would reach the budget
    assert sample.token_ids.tolist() == ids("[add:3527]") and sample.finish_reason == "length"
    assert envs.steps  # the call ran (TRL runs it too), its reply was not appended
    assert sample.env_mask.all()


def test_a_call_in_the_last_turn_is_not_run():
    (sample,), _, envs = run(TOOL_SCRIPT, max_turns=1)
    assert not envs.steps and sample.finish_reason == "length" and sample.episode["turns"] == 1.0


def test_without_calls_the_first_turn_is_the_plain_request_and_its_seeds():
    script = {"3527=": "17$"}
    samples, engine, _ = run(script, n=4)
    (request,) = engine.requests
    assert (request.n, request.seed, request.max_new_tokens, request.stop) == (4, 1234, 32, ("]",))
    assert [s.token_ids.tolist() for s in samples] == [ids("17") + [EOS]] * 4
    assert all(s.episode["tool_calls"] == 0 and s.env_mask.all() for s in samples)


def test_each_later_turn_of_each_sample_has_its_own_seed():
    _, engine, _ = run(TOOL_SCRIPT, n=3)
    later = [r.seed for r in engine.requests[1:]]
    assert len(later) == 3 and len(set(later)) == 3 and 1234 not in later


def test_a_failed_call_is_fed_back_and_counted():
    script = {"3527=": "[mul:3527]", "3527=[mul:3527][!keyerror mul]": "17$"}
    (sample,), _, _ = run(script)
    assert sample.text == "[mul:3527][!keyerror mul]17"
    assert sample.episode["tool_errors"] == 1.0 and sample.episode["tool_calls"] == 1.0


def test_an_observation_is_an_environment_turn_after_the_prompt():
    script = {"3527=(hint)": "17$"}
    (sample,), engine, _ = run(script, envs=LocalEnvs(observation="(hint)"))
    assert engine.requests[0].n == 1 and sample.token_ids.tolist() == ids("(hint)") + ids("17") + [EOS]
    assert sample.env_mask.tolist() == [False] * 6 + [True] * 3
    assert sample.version == 3  # the engine's weights, stamped although the episode began with the observation


def test_a_failed_reset_fails_its_sample_and_get_reward_is_a_reward_component():
    (broken,), _, _ = run({"3527=": "17$"}, envs=LocalEnvs(fail_reset=True))
    assert broken.finish_reason == "env_error" and broken.episode["env_failed"] == 1.0 and len(broken.token_ids) == 0
    (good,), _, _ = run(TOOL_SCRIPT)
    prompt = Prompt(7, "3527=", [1], "17", "sum4", {"answer": "17"})
    groups = [Group(prompt, [broken, good])]
    result = RewardResult(rewards=[1.0, 1.0], components={"tool_answer": [1.0, 1.0]})
    add_env_rewards(groups, result, {"default": "DigitTools"}, "skip")
    assert math.isnan(result.rewards[0]) and result.failed == [True, False]
    assert result.rewards[1] == 2.0 and math.isnan(result.components["DigitTools"][0])
    assert result.components["DigitTools"][1] == 1.0
    add_env_rewards(groups, fixed := RewardResult([1.0, 1.0], {}), {"default": "DigitTools"}, "0")
    assert math.isnan(fixed.rewards[0])  # a failed reset leaves no episode to score, whatever on_error says


def test_episode_metrics_and_records_keep_the_episode():
    samples, _, _ = run(TOOL_SCRIPT, n=2)
    prompt = Prompt(7, "3527=", [1], "17", "sum4")
    metrics = episode_metrics([Group(prompt, samples)])
    assert metrics["env/call_rate"] == 1.0 and metrics["env/call_rate/sum4"] == 1.0
    assert metrics["env/turns"] == 2.0 and metrics["env/env_tokens"] == 5.0 and metrics["env/reward"] == 1.0
    back = decode_sample(encode_sample(samples[0]))
    assert back.env_mask.tolist() == samples[0].env_mask.tolist() and back.episode == samples[0].episode
    assert back.env_reward == 1.0
    assert episode_metrics([Group(prompt, [Sample(7, [1], [0.0], "1", "stop")])]) == {}


@pytest.mark.parametrize("digits,expected", [("35271", 18), ("0", 0)])
def test_the_embedded_tool(digits, expected):
    env = DigitTools()
    env.reset(prompt="x")
    assert env.add(digits) == expected
    with pytest.raises(ValueError):
        env.add("3a")


def test_env_host_turns_a_raising_hanging_or_garbage_tool_into_a_counted_error(monkeypatch):
    """The worker's side with its real child process (no Ray): every failure is an error reply with its detail; a
    hang is killed at the timeout and the other episodes' state is replayed into the new child."""
    from actors.env_host import EnvHost, EnvSettings

    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parents[1] / "integration"))
    host = EnvHost(EnvSettings({"default": "trl_inventory:Inventory"}, [], True, timeout_s=2.0, memory_mb=0))
    try:
        assert host.open([(1, "default", {"prompt": "p"}), (2, "default", {"prompt": "q"})]) == [(None, "")] * 2
        assert host.step([(1, "add", {}, "a")])[0][0] == "a=1"
        raised, hung, garbage = host.step([(2, "explode", {}, "x"), (2, "stall", {}, "x"), (2, "garbage", {}, "x")])
        assert raised[0] is None and "Traceback" in raised[2]
        assert hung[:2] == (None, "timeout") and host.timeouts == 1
        assert garbage[0] is None and "returned object" in garbage[2]
        assert host.step([(1, "add", {}, "a")])[0][0] == "a=2"  # replayed after the restart
        assert host.finish([1, 2]) == [(2.0, ""), (0.0, "")]
    finally:
        host.close()


def test_a_chat_format_episode_is_the_templates_rendering_of_the_whole_conversation():
    """With a Qwen-style tool template: prompt + every model and environment turn, as the runner assembles them,
    equal the template's own tokenization of [user, assistant(tool call), tool, assistant]; reward functions get the
    turns as messages."""
    import json

    from rlpost.episodes import tool_schema
    from rlpost.tool_formats import ChatFormat
    from tests.unit.test_tool_formats import qwen_like_tokenizer

    tok = qwen_like_tokenizer()
    tools = [tool_schema("add", DigitTools().add)]
    fmt = ChatFormat(tok, tools)
    user = [{"role": "user", "content": "digit sum of 3527?"}]
    prompt_ids = fmt.render_prompt(user)
    call = '<tool_call>\n{"name": "add", "arguments": {"digits": "3527"}}\n</tool_call>'
    turns = iter([tok.encode(call + "<|im_end|>", add_special_tokens=False),
                  tok.encode("17<|im_end|>", add_special_tokens=False)])

    class Engine:
        def generate(self, requests):
            return [[Sample(r.prompt_uid, np.asarray(t, np.int32), np.zeros(len(t), np.float32), "", "stop")]
                    for r, t in zip(requests, [next(turns) for _ in requests])]

    class Envs(LocalEnvs):
        def env_step(self, items):
            return [(str(environment_tools(self.open[k])[name](**arguments)), "", "")
                    for k, name, arguments, _ in items]

    runner = EpisodeRunner(Engine(), Envs(), fmt, tok, max_turns=3, max_model_len=4096, chat=True)
    p = Prompt(0, "digit sum of 3527?", prompt_ids, "17", "s", {"answer": "17"}, messages=user)
    (sample,) = runner.generate([p], [GenerationRequest(0, prompt_ids, 1, 512, 1.0, 1.0, 5)])[0]
    conversation = [*user, {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "add", "arguments": {"digits": "3527"}}}]},
        {"role": "tool", "name": "add", "content": "17"}, {"role": "assistant", "content": "17"}]
    text = tok.apply_chat_template(conversation, tools=tools, tokenize=False)
    assert prompt_ids + sample.token_ids.tolist() == tok.encode(text.rstrip("\n"), add_special_tokens=False)
    assert [m["role"] for m in sample.messages] == ["assistant", "tool", "assistant"]
    assert sample.messages[1] == {"role": "tool", "name": "add", "content": "17"}
    assert json.loads(sample.messages[0]["content"].split("<tool_call>")[1].split("</tool_call>")[0])["name"] == "add"
    assert sample.episode["tool_calls"] == 1.0 and 0 < sample.episode["env_tokens"] < len(sample.token_ids)


@pytest.mark.parametrize("overrides,message", [
    (["environment.factory=a:B", "environment.factories={x: 'a:C'}"], "both set"),
    (["environment.factory=a:B", "rollout.partial_max_tokens=8"], "partial_max_tokens"),
    (["environment.factory=a:B", "algorithm.kl_in_reward=true", "algorithm.kl_coef=0.1"], "kl_in_reward"),
    (["reward.functions=[]"], "reward.functions' is empty"),
])
def test_environment_keys_that_cannot_work_together_are_refused(overrides, message):
    from rlpost.config import RecipeError
    from rlpost.recipes import load_config

    with pytest.raises(RecipeError, match=message):
        load_config("quickstart", overrides)


def test_plain_tools_without_an_environment_class(tmp_path, monkeypatch):
    """`environment.tools` alone: every episode gets the functions, with no instance to reset or score; a row
    naming an environment that does not exist is refused when there are environment classes."""
    from actors.env_host import EnvHost, EnvSettings

    (tmp_path / "plain_tools.py").write_text(
        "def shout(text: str) -> str:\n    '''Upper-case a text.\n\n    Args:\n        text: The text.\n    '''\n"
        "    return text.upper()\n")
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{Path(__file__).parents[1] / 'integration'}")
    host = EnvHost(EnvSettings({}, ["plain_tools:shout"], True, timeout_s=5.0, memory_mb=0))
    try:
        assert host.info[""]["tools"] == {"shout": None}
        assert host.open([(1, "default", {"prompt": "p"})]) == [(None, "")]
        assert host.step([(1, "shout", {}, "abc")])[0][0] == "ABC"
        assert host.finish([1]) == [(None, "")]  # no get_reward: no score, no error
    finally:
        host.close()
    host = EnvHost(EnvSettings({"shop": "trl_inventory:Inventory"}, [], True, timeout_s=5.0, memory_mb=0))
    try:
        (observation, error), = host.open([(1, "shopp", {"prompt": "p"})])
        assert observation is None and "unknown environment 'shopp'" in error and "shop" in error
    finally:
        host.close()
