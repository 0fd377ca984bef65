"""The reward worker and its child process with broken plugins: each failure gives the documented behaviour (retry
once, isolate the bad samples, then raise / skip / fixed score) and message, and the other samples are scored."""

import dataclasses
import math
import textwrap
import time

import pytest

from actors.reward import RewardSettings, RewardWorker
from rewards import RewardPluginError
from rlpost.config import RewardConfig
from rlpost.types import RewardRequest

BROKEN = '''
import math, os, time, asyncio
from rewards import reward

def raises(prompts, completions, completion_ids, **kw):
    if any(c == "bad" for c in completions):
        raise ZeroDivisionError("boom in plugin")
    return [1.0] * len(completions)

def hangs(prompts, completions, completion_ids, **kw):
    if any(c == "bad" for c in completions):
        time.sleep(60)
    return [1.0] * len(completions)

def nan(prompts, completions, completion_ids, **kw):
    return [math.nan if c == "bad" else 1.0 for c in completions]

def short(prompts, completions, completion_ids, **kw):
    return [1.0] * (len(completions) - 1)

def dies(prompts, completions, completion_ids, **kw):
    if any(c == "bad" for c in completions):
        os._exit(3)
    return [1.0] * len(completions)

def hog(prompts, completions, completion_ids, **kw):
    if any(c == "bad" for c in completions):
        blob = bytearray(2 << 30)
    return [1.0] * len(completions)

def text(prompts, completions, completion_ids, **kw):
    return "1.0"

def flaky(prompts, completions, completion_ids, **kw):
    marker = os.path.join(os.path.dirname(__file__), "flaky.done")
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("first call fails")
    return [1.0] * len(completions)

def maybe(prompts, completions, completion_ids, **kw):
    return [None if c == "bad" else 1.0 for c in completions]

async def slow_async(prompts, completions, completion_ids, **kw):
    await asyncio.sleep(0.01)
    return [float(len(c)) for c in completions]

@reward(group=True)
def group_size(prompts, completions, completion_ids, **kw):
    return [float(len(completions))] * len(completions)

@reward(batch_size=2)
def batch_of_two(prompts, completions, completion_ids, **kw):
    assert len(completions) <= 2, len(completions)
    return [1.0] * len(completions)

def sees(prompts, completions, completion_ids, components, step, answer, scale=1.0):
    return [scale * (components["raises"][i] + step) for i in range(len(completions))]
'''


@pytest.fixture
def plugin(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text(textwrap.dedent(BROKEN))
    return lambda name: f"{path}:{name}"


def _request(completions, group_sizes=None):
    n = len(completions)
    return RewardRequest(["p"] * n, list(completions), [[1]] * n, {"answer": ["a"] * n}, {"step": 2},
                         group_sizes or [])


# What these tests rely on unless one sets its own (the schema's defaults differ: on_error 'skip',
# max_error_rate 0.1, memory_mb 4096, timeout_s 60).
BASE = {"weights": [], "timeout_s": 20, "args": {}, "on_error": "raise", "max_error_rate": 1.0, "memory_mb": 0}


def _worker(functions, **settings):
    return RewardWorker(RewardSettings(list(functions), **{**BASE, **settings}))


def test_settings_are_the_reward_config_slice_without_defaults_of_their_own():
    fields = dataclasses.fields(RewardSettings)
    assert all(f.default is f.default_factory is dataclasses.MISSING for f in fields)
    assert {f.name for f in fields} <= {f.name for f in dataclasses.fields(RewardConfig)}
    config = RewardConfig(functions=["exact_match", "x.py:fn"], args={"fn": {"k": 1}})
    settings = RewardSettings.from_config(config)
    assert all(getattr(settings, f.name) == getattr(config, f.name) for f in fields)


def test_good_samples_keep_their_scores_and_bad_ones_are_skipped(plugin):
    worker = _worker([plugin("raises")], on_error="skip", max_error_rate=1.0)
    result = worker.score(_request(["ok", "bad", "ok", "ok"]))
    assert result.failed == [False, True, False, False] and result.errors == 1
    assert result.rewards[0] == 1.0 and math.isnan(result.rewards[1]) and result.rewards[2:] == [1.0, 1.0]
    assert result.retries == 1  # the chunk was retried once, then scored one by one
    assert "broken.py:raises" in result.first_error and "ZeroDivisionError: boom in plugin" in result.first_error


def test_raise_policy_stops_with_the_plugin_traceback(plugin):
    worker = _worker([plugin("raises")], on_error="raise")
    with pytest.raises(RewardPluginError, match="(?s)broken.py:raises.*ZeroDivisionError: boom in plugin"):
        worker.score(_request(["ok", "bad"]))


def test_fixed_score_policy(plugin):
    worker = _worker([plugin("raises"), "exact_match"], on_error="-1", max_error_rate=1.0)
    result = worker.score(_request(["a", "bad"]))
    assert result.components["raises"] == [1.0, -1.0] and result.components["exact_match"] == [1.0, 0.0]
    assert result.rewards == [2.0, -1.0] and result.errors == 1


def test_hung_call_is_killed_retried_and_isolated(plugin):
    worker = _worker([plugin("hangs")], on_error="skip", timeout_s=1.5, max_error_rate=1.0)
    start = time.monotonic()
    result = worker.score(_request(["ok", "bad", "ok"]))
    assert time.monotonic() - start < 30
    assert result.failed == [False, True, False] and result.timeouts == 3  # call, retry, the bad sample alone
    assert "timed out after 1.5s" in result.first_error
    assert worker.score(_request(["ok"])).rewards == [1.0]  # the replaced child works


@pytest.mark.parametrize("name, message", [
    ("nan", "non-finite value nan at index 1"), ("short", "returned 1 values for 2 completions"),
    ("text", "returned str, expected a list of floats"),
])
def test_bad_output_is_a_named_error(plugin, name, message):
    worker = _worker([plugin(name)], on_error="raise")
    with pytest.raises(RewardPluginError, match=message):
        worker.score(_request(["ok", "bad"]))


def test_plugin_that_kills_its_process(plugin):
    worker = _worker([plugin("dies")], on_error="skip", max_error_rate=1.0)
    result = worker.score(_request(["bad", "ok"]))
    assert result.failed == [True, False] and result.crashes == 3
    assert "exit code 3" in result.first_error and result.rewards[1] == 1.0


def test_memory_limit(plugin):
    worker = _worker([plugin("hog")], on_error="skip", memory_mb=512, max_error_rate=1.0)
    result = worker.score(_request(["bad", "ok"]))
    assert result.failed == [True, False] and "MemoryError" in result.first_error


def test_transient_failure_is_retried_once_and_not_counted(plugin):
    worker = _worker([plugin("flaky")], on_error="skip")
    result = worker.score(_request(["a", "b"]))
    assert result.rewards == [1.0, 1.0] and result.errors == 0 and result.retries == 1


def test_none_means_no_score_not_an_error(plugin):
    worker = _worker([plugin("maybe"), "exact_match"], on_error="raise")
    result = worker.score(_request(["a", "bad"]))
    assert result.errors == 0 and result.rewards == [2.0, 0.0]  # None is left out of the sum
    worker = _worker([plugin("maybe")], on_error="raise")
    assert math.isnan(worker.score(_request(["bad"])).rewards[0])  # no function scored it: skipped by the driver


def test_async_group_and_batched_functions(plugin):
    worker = _worker([plugin("slow_async"), plugin("group_size"), plugin("batch_of_two")], on_error="raise")
    result = worker.score(_request(["a", "bb", "ccc", "dddd", "e"], group_sizes=[3, 2]))
    assert result.components["slow_async"] == [1.0, 2.0, 3.0, 4.0, 1.0]
    assert result.components["group_size"] == [3.0, 3.0, 3.0, 2.0, 2.0]
    assert result.components["batch_of_two"] == [1.0] * 5


def test_later_functions_see_components_run_columns_and_args(plugin):
    worker = _worker([plugin("raises"), plugin("sees")], args={"sees": {"scale": 10.0}}, on_error="raise")
    assert worker.score(_request(["a", "b"])).components["sees"] == [30.0, 30.0]


def test_broken_plugin_fails_at_start(tmp_path):
    path = tmp_path / "bad_import.py"
    path.write_text("raise RuntimeError('bad import')\n")
    with pytest.raises(RewardPluginError, match="(?s)bad_import.py:fn.*bad import"):
        _worker([f"{path}:fn"])


def test_plugin_killing_itself_at_import_is_named(tmp_path):
    path = tmp_path / "exits.py"
    path.write_text("import os\nos._exit(4)\n")
    with pytest.raises(RewardPluginError, match="exits.py:fn': its process exited with code 4 while importing"):
        _worker([f"{path}:fn"])


# ---- output that breaks the contract (security review F7) ----------------------------------------------------------
CONTRACT = '''
import os

def _count():
    with open(os.path.join(os.path.dirname(__file__), "calls.txt"), "a") as f:
        f.write("x")

def one_value(prompts, completions, completion_ids, **kw):
    _count()
    return [1.0]

def text_at_bad(prompts, completions, completion_ids, **kw):
    _count()
    return ["oops" if c == "bad" else 1.0 for c in completions]
'''


@pytest.fixture
def contract(tmp_path):
    path = tmp_path / "contract.py"
    path.write_text(CONTRACT)
    calls = tmp_path / "calls.txt"
    return (lambda name: f"{path}:{name}"), (lambda: len(calls.read_text()) if calls.exists() else 0)


def test_wrong_length_batch_output_counts_every_completion_as_an_error(contract):
    """`[1.0]` for 8 completions would pass every one-by-one call; it must not be "fixed" that way (F7)."""
    plugin, calls = contract
    result = _worker([plugin("one_value")], on_error="skip", max_error_rate=1.0).score(_request(["ok"] * 8))
    assert result.errors == 8 and result.failed == [True] * 8 and all(math.isnan(r) for r in result.rewards)
    assert calls() == 2 and result.retries == 1  # the call and its retry; no single calls that would mask it
    assert "contract.py:one_value' returned 1 values for 8 completions" in result.first_error
    assert "all 8 count as errors" in result.first_error
    fixed = _worker([plugin("one_value")], on_error="-1", max_error_rate=1.0).score(_request(["ok"] * 3))
    assert fixed.components["one_value"] == [-1.0] * 3 and fixed.errors == 3


def test_unusable_values_fail_only_their_completions(contract):
    plugin, calls = contract
    result = _worker([plugin("text_at_bad")], on_error="skip").score(_request(["ok", "bad", "ok"]))
    assert result.failed == [False, True, False] and result.rewards[0] == result.rewards[2] == 1.0
    assert calls() == 2 and "non-numeric value 'oops' at index 1" in result.first_error


def test_contract_errors_warn_once_per_plugin_with_the_count(contract, capsys):
    from rlpost.scoring import RewardHealth, apply_result
    from tests.unit.test_scoring import _groups

    plugin, _ = contract
    worker = _worker([plugin("one_value")], on_error="skip", max_error_rate=1.0)
    health = RewardHealth(max_error_rate=1.0, on_error="skip")
    for step in (1, 2):
        result = worker.score(_request(["ok"] * 4, group_sizes=[2, 2]))
        _, counts = apply_result(_groups([2, 2]), result)
        health.record(counts, result.first_error, f"step {step}")
    err = capsys.readouterr().err
    assert err.count("reward failed on 4 of 4 completions") == 2
    assert err.count("returned 1 values for 4 completions: the call's values cannot be matched") == 3  # 2 lines + once
    assert health.metrics()["reward_health/errors"] == 8.0


# ---- hooks and TRL's extra arguments ---------------------------------------------------------------------------
HOOKED = '''
import os
from rewards import reward

def _health(scale=1.0):
    return {"scale_seen": scale, "pid_parity": float(os.getpid() % 2)}

@reward(health=_health)
def gauged(prompts, completions, completion_ids, scale=1.0, **kw):
    if any(c == "die" for c in completions):
        os._exit(5)
    return [scale] * len(completions)

def trl_extras(completions, trainer_state, log_metric, log_extra, **kw):
    log_metric("length", float(sum(len(c) for c in completions)) / len(completions))
    log_extra("seen", list(completions))
    return [float(trainer_state.global_step)] * len(completions)

@reward(health=lambda **kw: {"errors": 1.0})
def bad_gauge(prompts, completions, completion_ids, **kw):
    return [0.0] * len(completions)
'''


@pytest.fixture
def hooked(tmp_path):
    path = tmp_path / "hooked.py"
    path.write_text(HOOKED)
    return lambda name: f"{path}:{name}"


def test_health_gauges_travel_with_every_result_and_are_read_again_after_a_replacement(hooked):
    worker = _worker([hooked("gauged")], args={"gauged": {"scale": 3.0}}, on_error="skip", max_error_rate=1.0)
    first = worker.score(_request(["a", "b"]))
    assert first.components["gauged"] == [3.0, 3.0] and first.gauges["scale_seen"] == 3.0
    assert first.gauges["pid_parity"] == float(worker.ping() % 2)
    result = worker.score(_request(["die"]))
    assert result.crashes == 2 and result.gauges["pid_parity"] == float(worker.ping() % 2)  # read in the new child


def test_a_gauge_named_like_a_count_is_refused_at_start(hooked):
    with pytest.raises(RewardPluginError, match="bad_gauge': health gauge 'errors'"):
        _worker([hooked("bad_gauge")])


def test_trl_extras_trainer_state_log_metric_and_log_extra(hooked):
    result = _worker([hooked("trl_extras")], on_error="raise").score(_request(["ab", "abcd"]))  # run step 2
    assert result.components["trl_extras"] == [1.0, 1.0]  # TRL's global_step: steps done before this one
    assert result.logged == {"length": (3.0, 1)}


def test_chat_completions_reach_trl_functions_unchanged():
    """TRL's own functions, by dotted path, on the conversational form rlpost/scoring.py builds for chat data."""
    from rlpost.scoring import build_request
    from rlpost.types import Group, Prompt, Sample

    messages = [{"role": "user", "content": "What is 1/3 + 0?"}]
    columns = {"solution": "$\\frac{1}{3}$", "answer": "1/3", "data_source": "chat"}
    prompt = Prompt(0, "What is 1/3 + 0?", [1], "1/3", "chat", columns, messages=messages)
    texts = ["<think>\nthirds\n</think>\nSo \\boxed{\\frac{1}{3}}", "\\boxed{\\frac{1}{2}}"]
    request = build_request([Group(prompt, [Sample(0, [5], [0.0], t, "stop") for t in texts])], {"step": 1})
    assert request.prompts == [messages, messages]
    assert request.completions[0] == [{"role": "assistant", "content": texts[0]}]
    worker = _worker(["trl.rewards:accuracy_reward", "trl.rewards:think_format_reward", "math_accuracy"],
                     on_error="raise")
    result = worker.score(request)
    assert result.components == {"accuracy_reward": [1.0, 0.0], "think_format_reward": [1.0, 0.0],
                                 "math_accuracy": [1.0, 0.0]} and result.errors == 0
