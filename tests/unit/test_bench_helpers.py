"""The benchmark scripts' statistics (their numbers end up in README and issue notes) and their --help."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

from _paired import auc, bootstrap_ci, first_crossing, paired, run_arm, run_overrides, time_to_target, tokens_at  # noqa: E402
from bench_allocation import accuracy_at_tokens  # noqa: E402
from bench_curriculum import rollout_share  # noqa: E402


def test_auc_is_the_mean_accuracy_over_steps():
    assert auc([(0, {"mean": 0.5}), (10, {"mean": 0.5}), (20, {"mean": 0.5})], lambda a: a["mean"]) == 0.5
    assert auc([(0, {"mean": 0.0}), (10, {"mean": 1.0})], lambda a: a["mean"]) == 0.5
    assert auc([(0, {"mean": 0.0}), (10, {"mean": 1.0}), (30, {"mean": 1.0})], lambda a: a["mean"]) == \
        pytest.approx((5 + 20) / 30)


def test_bootstrap_interval_brackets_the_mean_and_collapses_for_equal_values():
    low, high = bootstrap_ci([1.0, 2.0, 3.0, 4.0])
    assert low < 2.5 < high and low >= 1.0 and high <= 4.0
    assert bootstrap_ci([2.0, 2.0]) == (2.0, 2.0)


def test_token_accounting_and_interpolation():
    records = [{"step": 0}, {"step": 1, "tokens/generated": 10.0, "prepass/tokens": 5.0},
               {"step": 2, "tokens/generated": 10.0}]
    assert tokens_at(records, 1) == 15 and tokens_at(records, 2) == 25
    assert tokens_at(records, 1.5) == 20 and tokens_at(records, 0.5) == 7.5 and tokens_at(records, 9) == 25
    assert accuracy_at_tokens([(0, 0.2), (10, 0.4), (20, 0.8)], 15) == pytest.approx(0.6)
    share = rollout_share([{"sampler/count/a": 3.0, "sampler/count/b": 1.0}], ("a",))
    assert share == 0.75


@pytest.mark.parametrize("script", ["bench_curriculum.py", "bench_allocation.py"])
def test_bench_scripts_explain_themselves(script):
    out = subprocess.run([sys.executable, str(SCRIPTS / script), "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "--seeds" in out and "paired" in out


def test_soak_slope_is_mib_per_hundred_steps():
    from soak_memory import slope

    assert slope([(10, 100.0), (20, 101.0), (30, 102.0)]) == pytest.approx(10.0)
    assert slope([(10, 50.0), (20, 50.0), (30, 50.0)]) == 0.0


def test_first_crossing_interpolates_and_says_never():
    assert first_crossing([0, 10, 20], [0.2, 0.4, 0.8], 0.6) == pytest.approx(15)
    assert first_crossing([0, 10, 20], [0.2, 0.7, 0.5], 0.6) == pytest.approx(8)  # the first time, not the last
    assert first_crossing([0, 10], [0.7, 0.9], 0.6) == 0
    assert first_crossing([0, 10], [0.2, 0.3], 0.6) is None


def _run(curve: list[float], every: int = 10, tokens_per_step: float = 100.0) -> dict:
    steps = len(curve) - 1
    return {"points": [(i * every, {"mean": y}) for i, y in enumerate(curve)],
            "records": [{"step": 0}] + [{"step": s, "tokens/generated": tokens_per_step}
                                        for s in range(1, steps * every + 1)]}


def test_time_to_target_ratio_of_an_arm_twice_as_fast():
    base = [_run([0.2, 0.3, 0.4, 0.5, 0.6, 0.6, 0.6, 0.6]) for _ in range(4)]
    fast = [_run([0.2, 0.4, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]) for _ in range(4)]
    result = time_to_target(base, fast, lambda a: a["mean"], frac=0.8)
    assert result["target"] == pytest.approx(0.2 + 0.8 * 0.4)  # 80% of the gain to the last three evals
    assert result["baseline_steps"] == pytest.approx(32) and result["arm_steps"] == pytest.approx(16)
    assert result["steps_ratio"] == pytest.approx(2.0) and result["steps_ratio_ci95"] == pytest.approx([2.0, 2.0])
    assert result["tokens_ratio"] == pytest.approx(2.0) and result["arm_reached"]
    same = time_to_target(base, base, lambda a: a["mean"], frac=0.8)
    assert same["steps_ratio"] == pytest.approx(1.0)


def test_time_to_target_counts_prepass_tokens_and_flags_an_unreached_target():
    base = [_run([0.2, 0.4, 0.6, 0.6, 0.6])]
    costly = [_run([0.2, 0.4, 0.6, 0.6, 0.6], tokens_per_step=300.0)]
    result = time_to_target(base, costly, lambda a: a["mean"], frac=0.8)
    assert result["steps_ratio"] == pytest.approx(1.0) and result["tokens_ratio"] == pytest.approx(1 / 3)
    flat = [_run([0.2, 0.25, 0.3, 0.3, 0.3])]
    result = time_to_target(base, flat, lambda a: a["mean"], frac=0.8)
    assert not result["arm_reached"] and result["arm_steps"] == 40 and result["unreached_draws"] == 1.0


def test_paired_differences_count_positive_seeds():
    d = paired([0.6, 0.5, 0.7], [0.5, 0.5, 0.5])
    assert d["per_seed"] == pytest.approx([0.1, 0.0, 0.2]) and d["positive_seeds"] == 2
    assert d["mean"] == pytest.approx(0.1) and d["ci95"][0] <= d["mean"] <= d["ci95"][1]


def _args(tmp_path: Path, **kw) -> argparse.Namespace:
    base = dict(out=str(tmp_path), steps=4, eval_every=2, eval_samples=2, eval_per_source=8, prompts=8, lr=1e-5,
                override=[], summarise_only=False)
    return argparse.Namespace(**{**base, **kw})


def test_finished_runs_are_reused_and_other_settings_refused(tmp_path, monkeypatch):
    import _paired

    trained = []
    monkeypatch.setattr(_paired, "_train", lambda name, overrides, recipe: trained.append(name) or {"points": [],
                                                                                                     "n": 1})
    args = _args(tmp_path)
    assert run_arm("a", 0, args, ["x=1"])["n"] == 1 and trained == ["a-s0"]
    assert run_arm("a", 0, args, ["x=1"])["n"] == 1 and trained == ["a-s0"]  # resumed: not trained again
    assert not list((tmp_path / "results").glob("*.lock")) and not list((tmp_path / "results").glob("*.tmp-*"))
    with pytest.raises(SystemExit, match="other settings"):
        run_arm("a", 0, _args(tmp_path, steps=8), ["x=1"])
    with pytest.raises(SystemExit, match="other settings"):
        run_arm("a", 0, _args(tmp_path, recipe="trace"), ["x=1"])
    assert run_arm("b", 0, _args(tmp_path, summarise_only=True), []) is None and trained == ["a-s0"]
    assert "run.eval_samples=2" in run_overrides([], 0, args, "a-s0")


def test_a_live_lock_is_left_to_its_process_and_a_stale_one_taken_over(tmp_path, monkeypatch):
    import _paired

    monkeypatch.setattr(_paired, "_train", lambda name, overrides, recipe: {"points": []})
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "a-s0.lock").write_text(str(os.getppid()))  # alive: the test runner's parent
    assert run_arm("a", 0, _args(tmp_path), []) is None
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / "results" / "a-s0.lock").write_text(dead)
    assert run_arm("a", 0, _args(tmp_path), []) == {"points": []}  # the dead process's run is trained here
    assert (tmp_path / "results" / "a-s0.json").is_file() and not (tmp_path / "results" / "a-s0.lock").exists()


def test_auc_standard_error_weights_each_eval_like_the_trapezoid():
    import math

    from _paired import auc_standard_error, eval_noise

    points = [(0, {"se/mean": 0.02, "mean": 0.5}), (10, {"se/mean": 0.02, "mean": 0.6}),
              (20, {"se/mean": 0.02, "mean": 0.5})]
    # weights 5, 10, 5 over a span of 20: 0.25, 0.5, 0.25
    assert auc_standard_error(points, "se/mean") == pytest.approx(0.02 * math.sqrt(0.25 ** 2 * 2 + 0.5 ** 2))
    noise = eval_noise([{"points": points}], "greedy")
    assert noise["se_mean"] == pytest.approx(0.02) and noise["successive_rms"] == pytest.approx(0.1)
    assert math.isnan(auc_standard_error([(0, {}), (10, {})], "se/mean"))
