"""Reward plugin loading and checks, and the reward worker's child process (timeouts, crashes, bad output)."""

import textwrap

import pytest

from actors.reward import RewardTimeoutError, RewardWorker, RewardWorkerCrash
from rewards import RewardPluginError, check_output, check_signature, load_reward
from rlpost.types import RewardRequest


def _plugin(tmp_path, body: str) -> str:
    path = tmp_path / "plugin.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


def _request(n=2):
    return RewardRequest(["p"] * n, ["1", "2"][:n], [[5], [6]][:n], {"answer": ["1", "1"][:n]})


def test_load_by_name_dotted_path_and_file(tmp_path):
    assert load_reward("exact_match") is load_reward("rewards.synthetic:exact_match")
    path = _plugin(tmp_path, "def fn(prompts, completions, completion_ids, **kw):\n    return [0.5] * len(prompts)\n")
    assert load_reward(f"{path}:fn")(["a"], ["b"], [[1]]) == [0.5]


def test_unknown_names_and_import_errors_are_named(tmp_path):
    with pytest.raises(RewardPluginError, match="not a built-in"):
        load_reward("nosuch")
    with pytest.raises(RewardPluginError, match="no callable 'missing'"):
        load_reward("rewards.synthetic:missing")
    path = _plugin(tmp_path, "import nosuchmodule_xyz\n")
    with pytest.raises(RewardPluginError, match="nosuchmodule_xyz"):
        load_reward(f"{path}:fn")


def test_signature_check_before_training(tmp_path):
    path = _plugin(tmp_path, "def fn(prompts, completions, solution):\n    return []\n")
    with pytest.raises(RewardPluginError, match="solution"):
        check_signature("p", load_reward(f"{path}:fn"), ["answer"])
    check_signature("exact_match", load_reward("exact_match"), ["answer", "data_source"])


@pytest.mark.parametrize("values, message", [
    ([1.0], "1 values for 2"), ([1.0, float("nan")], "non-finite"), ([1.0, "x"], "non-numeric"), (3.0, "float"),
])
def test_output_checks(values, message):
    with pytest.raises(RewardPluginError, match=message):
        check_output("p", values, 2)


def test_worker_scores_in_child_process():
    worker = RewardWorker(["exact_match"], [], timeout_s=30)
    result = worker.score(_request())
    assert result.rewards == [1.0, 0.0]
    assert result.components == {"exact_match": [1.0, 0.0]}


def test_worker_reports_plugin_traceback(tmp_path):
    path = _plugin(tmp_path, """
        def fn(prompts, completions, completion_ids, **kw):
            raise ZeroDivisionError("boom in plugin")
    """)
    worker = RewardWorker([f"{path}:fn"], [], timeout_s=30)
    with pytest.raises(RewardPluginError, match="(?s)plugin.py:fn.*ZeroDivisionError: boom in plugin"):
        worker.score(_request())


def test_worker_kills_hung_call_and_recovers(tmp_path):
    path = _plugin(tmp_path, """
        import time
        def fn(prompts, completions, completion_ids, **kw):
            if completions[0] == "hang":
                time.sleep(60)
            return [1.0] * len(prompts)
    """)
    worker = RewardWorker([f"{path}:fn"], [], timeout_s=2)
    with pytest.raises(RewardTimeoutError, match="exceeded 2s"):
        worker.score(RewardRequest(["p"], ["hang"], [[1]], {}))
    assert worker.score(RewardRequest(["p"], ["ok"], [[1]], {})).rewards == [1.0]


def test_worker_names_a_plugin_that_kills_its_process(tmp_path):
    path = _plugin(tmp_path, """
        import os
        def fn(prompts, completions, completion_ids, **kw):
            os._exit(3)
    """)
    worker = RewardWorker([f"{path}:fn"], [], timeout_s=10)
    with pytest.raises(RewardWorkerCrash, match="exit code 3"):
        worker.score(_request())


def test_worker_start_fails_on_broken_plugin(tmp_path):
    path = _plugin(tmp_path, "raise RuntimeError('bad import')\n")
    with pytest.raises(RewardPluginError, match="bad import"):
        RewardWorker([f"{path}:fn"], [], timeout_s=10)


def test_gsm8k_final_number():
    fn = load_reward("gsm8k_final_number")
    out = fn(["q"] * 3, ["so the answer is 1,234.", "maybe 7", "no idea"], [[1]] * 3,
             answer=["... #### 1234", "#### 8", "#### 3"])
    assert out == [1.0, 0.0, 0.0]
