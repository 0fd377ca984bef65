"""The driver's reward stage: requests carry group boundaries and run columns, samples without a reward leave their
groups, and the error rate is counted, reported and enforced."""

import math

import pytest

from rlpost.scoring import RewardErrorRateExceeded, RewardHealth, apply_result, build_request
from rlpost.types import Group, Prompt, RewardRequest, RewardResult, Sample


def _groups(sizes):
    groups = []
    for uid, size in enumerate(sizes):
        prompt = Prompt(uid, f"p{uid}", [1], str(uid), "src", {"answer": str(uid), "data_source": "src"})
        groups.append(Group(prompt, [Sample(uid, [5] * (j + 1), [0.0] * (j + 1), f"c{uid}{j}", "stop")
                                     for j in range(size)]))
    return groups


def test_request_has_columns_run_and_group_sizes():
    request = build_request(_groups([2, 3]), {"step": 4})
    assert request.completions == ["c00", "c01", "c10", "c11", "c12"]
    assert request.columns["answer"] == ["0", "0", "1", "1", "1"] and request.run == {"step": 4}
    assert request.groups() == [(0, 2), (2, 5)]
    part = request.slice(2, 5)
    assert part.completions == ["c10", "c11", "c12"] and part.group_sizes == [3] and part.run == {"step": 4}
    with pytest.raises(ValueError, match="add up to 4"):
        RewardRequest(["p"] * 5, ["c"] * 5, [[1]] * 5, {}, {}, [4]).groups()


def test_samples_without_reward_leave_their_group():
    nan = math.nan
    groups = _groups([2, 1, 2])
    result = RewardResult(rewards=[1.0, nan, nan, 0.5, nan], components={"acc": [1.0, nan, nan, 0.5, 0.0]},
                          failed=[False, True, False, False, True], first_error="boom", retries=2)
    kept, health = apply_result(groups, result)
    assert [g.prompt.uid for g in kept] == [0, 2]  # group 1 lost its only sample
    assert [s.text for g in kept for s in g.samples] == ["c00", "c20"]
    assert kept[1].samples[0].reward_components == {"acc": 0.5}
    assert health == {"completions": 5.0, "errors": 2.0, "skipped": 2.0, "unscored": 1.0, "retries": 2.0,
                      "timeouts": 0.0, "crashes": 0.0, "replaced_workers": 0.0}


def test_health_reports_and_stops_past_the_rate(capsys):
    health = RewardHealth(max_error_rate=0.25, on_error="skip")
    counts = {"completions": 8.0, "errors": 2.0, "skipped": 2.0, "retries": 1.0}
    health.record(counts, "reward plugin 'x' on 4 completion(s): raised:\nTraceback\nValueError: bad", "step 3")
    err = capsys.readouterr().err
    assert "step 3: reward failed on 2 of 8 completions (25.0%" in err and "Traceback" in err
    assert "first: reward plugin 'x': ValueError: bad" in err
    health.record(counts, "reward plugin 'x' on 8 completion(s): raised:\nTraceback\nValueError: worse", "step 4")
    err = capsys.readouterr().err  # the same plugin again: its traceback is not repeated, its last line is shown
    assert "Traceback" not in err and "first: reward plugin 'x': ValueError: worse" in err
    metrics = health.metrics()
    assert metrics["reward_health/errors"] == 4.0 and metrics["reward_health/error_rate"] == 0.25
    assert health.metrics()["reward_health/error_rate"] == 0.0  # reset each step
    with pytest.raises(RewardErrorRateExceeded, match="(?s)3 of 8 .*max_error_rate=0.25.*ValueError: bad"):
        health.record({**counts, "errors": 3.0}, "plugin 'x' raised:\nValueError: bad", "step 4")


def test_step_line_shows_reward_errors_only_when_there_are_some():
    from rlpost.app.run import _step_line

    assert "reward 0.5s (3 errors) train" in _step_line(1, {"reward_health/errors": 3.0, "time/reward": 0.5})
    assert "errors" not in _step_line(1, {"reward_health/errors": 0.0})


def test_pass_at_k_matches_its_definition():
    from itertools import combinations

    from rlpost.app.evaluate import pass_at_k

    outcomes = [1, 0, 0, 1, 0]  # n = 5, c = 2: the share of 2-subsets holding a success, counted directly
    subsets = list(combinations(outcomes, 2))
    assert pass_at_k(5, 2, 2) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4) and pass_at_k(5, 0, 3) == 0.0 and pass_at_k(5, 3, 3) == 1.0
    with pytest.raises(ValueError, match="at least 4"):
        pass_at_k(3, 1, 4)


def test_chat_prompts_go_out_in_trls_conversational_form():
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "1+1?"}]
    chat = Group(Prompt(0, "be brief\n1+1?", [1], "2", "src", {"answer": "2"}, messages=messages),
                 [Sample(0, [5], [0.0], "2", "stop"), Sample(0, [6], [0.0], "3", "stop")])
    request = build_request([chat], {"step": 1})
    assert request.prompts == [messages, messages] and request.prompts[0] is not messages  # a copy per completion
    assert request.completions == [[{"role": "assistant", "content": "2"}], [{"role": "assistant", "content": "3"}]]
    plain = build_request(_groups([1]), {"step": 1})
    assert plain.prompts == ["p0"] and plain.completions == ["c00"]


def test_health_gauges_are_the_steps_largest_value_and_log_metric_a_mean():
    from rewards.protocol import HEALTH_COUNTS

    health = RewardHealth(max_error_rate=1.0, on_error="skip")
    for weak, logged in ((1.0, (3.0, 2)), (0.0, (5.0, 2))):  # two scoring passes in one step
        result = RewardResult(rewards=[1.0], components={"a": [1.0]}, failed=[False], gauges={"sandbox_weak": weak},
                              logged={"length": logged})
        _, counts = apply_result(_groups([1]), result)
        assert {k for k in counts if "/" not in k} <= set(HEALTH_COUNTS)  # gauges cannot shadow a count
        health.record(counts, "", "step 1")
    metrics = health.metrics()
    assert metrics["reward_health/sandbox_weak"] == 1.0 and metrics["reward_log/length"] == 2.0
    assert not any("log_count" in k or "log_sum" in k or "gauge/" in k for k in metrics)
    merged = RewardResult(rewards=[], components={}, gauges={"g": 0.0}, logged={"x": (1.0, 1)})
    merged.extend(RewardResult(rewards=[], components={}, gauges={"g": 2.0, "h": -1.0}, logged={"x": (2.0, 3)}))
    assert merged.gauges == {"g": 2.0, "h": -1.0} and merged.logged == {"x": (3.0, 4)}
