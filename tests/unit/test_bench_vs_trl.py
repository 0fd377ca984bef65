"""scripts/bench_vs_trl.py's CPU-side logic: arguments, warm-up dropping, reading metrics.jsonl, the table and
ratios, and the shared reward. Nothing here starts Ray, vLLM or a trainer."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import bench_vs_trl as bench  # noqa: E402
from _bench_reward import digit_fraction  # noqa: E402


def test_defaults_quick_and_subsets():
    args = bench.parse_args([])
    assert (args.steps, args.warmup, args.prompts, args.samples, args.max_new_tokens) == (11, 1, 16, 8, 128)
    assert args.systems == ("rlpost", "trl", "bare")
    assert bench.parse_args(["--quick"]).steps == 6
    assert bench.parse_args(["--quick", "--steps", "3"]).steps == 3  # an explicit --steps wins
    assert bench.parse_args(["--systems", "trl, bare"]).systems == ("trl", "bare")
    s = bench.settings_from(bench.parse_args(["--prompts", "32", "--learner-ranks", "1"]))
    assert (s.prompts, s.samples, s.learner_ranks, s.steps) == (32, 8, 1, 11)


@pytest.mark.parametrize("argv", [["--systems", "rlpost,verl"], ["--systems", ","], ["--steps", "1"]])
def test_bad_arguments_are_refused(argv, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)
    assert "error" in capsys.readouterr().err


def test_summary_drops_the_warmup_steps():
    summary = bench.summarize([30.0, 10.0, 14.0], [100.0, 800.0, 1000.0], warmup=1)
    assert summary["s_per_step"] == 12.0 and summary["tokens_per_step"] == 900.0
    assert summary["tokens_per_s"] == pytest.approx(1800 / 24)  # total tokens over total time, not a mean of ratios
    assert summary["steps_measured"] == 2
    with pytest.raises(ValueError, match="nothing after warm-up"):
        bench.summarize([1.0], [1.0], warmup=1)


def _record(step: int, wall: float, tokens: float, generate: float) -> dict:
    return {"step": step, "timestamp": 1.0 + step, "tokens/generated": tokens, "time/generate": generate,
            "time/train": wall - generate - 0.5, "time/step": wall - 0.5, "time/wall": wall}


def test_metrics_file_is_read_and_summarised(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": 0, "timestamp": 0.5, "sync/probe_max_abs_diff": 0.0}),  # start-up probe only
             *(json.dumps(_record(i, w, t, g)) for i, w, t, g in [(2, 10.0, 900, 3.0), (1, 50.0, 50, 40.0),
                                                                   (3, 14.0, 1100, 2.0)]),
             '{"step": 4, "tokens/gen']  # half-written by a crash
    path.write_text("\n".join(lines))
    records = bench.read_metrics(path)
    assert [r["step"] for r in records] == [1, 2, 3]
    summary = bench.rlpost_summary(records, warmup=1)
    assert summary["s_per_step"] == 12.0 and summary["tokens_per_step"] == 1000.0
    assert summary["generate_tokens_per_s"] == pytest.approx(2000 / 5)
    assert summary["phases"] == pytest.approx({"time/generate": 2.5, "time/train": 9.0, "time/step": 11.5,
                                               "time/wall": 12.0})
    assert list(summary["phases"]) == ["time/generate", "time/train", "time/step", "time/wall"]  # the step's order


def test_step_seconds_falls_back_to_the_sum_of_phases():
    assert bench.step_seconds([{"time/step": 3.0}, {"time/step": 4.0, "time/wall": 4.5}]) == [3.0, 4.5]


def test_table_ratios_and_rollout_line():
    rlpost = {"label": "rlpost", "s_per_step": 12.6, "tokens_per_step": 8994.0, "tokens_per_s": 712.0,
              "generate_tokens_per_s": 3216.0}
    trl = {"label": "TRL", "s_per_step": 16.3, "tokens_per_step": 6571.0, "tokens_per_s": 403.0}
    ratio = bench.ratios(rlpost, trl)
    assert ratio["tokens_per_s"] == pytest.approx(712 / 403) and ratio["s_per_step"] == pytest.approx(12.6 / 16.3)
    table = bench.format_table({"rlpost": rlpost, "trl": trl, "bare": {"error": "boom"}})
    rows = table.splitlines()
    assert len(rows) == 4 and "8,994" in rows[1] and "403" in rows[2]  # the failed system has no row
    assert rows[3].startswith("rlpost / TRL") and "1.77x" in rows[3] and "0.77x" in rows[3]
    assert "rlpost / TRL" not in bench.format_table({"rlpost": rlpost})
    line = bench.format_rollout(rlpost, {"tokens_per_s": 3538.0})
    assert "3,216" in line and "3,538" in line and "(91%)" in line


def test_report_names_failures_versions_and_differences():
    s = bench.Settings()
    text = bench.report({"trl": {"error": "trl exited 1"}}, s, {"trl": "1.16.0", "rlpost": "abc1234+dirty"})
    assert "trl: FAILED: trl exited 1" in text and "trl 1.16.0" in text and "rlpost abc1234+dirty" in text
    assert "16 prompts x 8 samples, up to 128 new tokens" in text and "what differs:" in text


def test_rlpost_overrides_carry_the_shared_settings():
    s = bench.Settings(prompts=32, max_new_tokens=64, learner_ranks=1)
    overrides = dict(o.split("=", 1) for o in bench.rlpost_overrides(s, Path("/m"), Path("/d.jsonl"), Path("/r")))
    assert overrides["algorithm.prompts_per_step"] == "32" and overrides["rollout.max_new_tokens"] == "64"
    assert overrides["learner.world_size"] == "1" and overrides["algorithm.kl_coef"] == "0.0"
    assert overrides["data.eval_split"] == "" and overrides["run.save_final"] == "false"
    assert overrides["reward.functions"].endswith("_bench_reward.py:digit_fraction]")
    assert int(overrides["rollout.max_model_len"]) > 64 + int(overrides["data.max_prompt_tokens"]) - 1


def test_shared_reward_varies_and_takes_both_calling_conventions():
    scores = digit_fraction(prompts=["1+2="] * 3, completions=["12ab", "", "zz"], completion_ids=[[1], [], [2]],
                            answer=["3"] * 3, trainer_state=None)
    assert scores == [0.5, 0.0, 0.0]


def test_precision_and_rollout_threads_reach_both_systems(tmp_path):
    args = bench.parse_args(["--dtype", "bfloat16", "--rollout-cpus", "1"])
    s = bench.settings_from(args)
    assert (s.dtype, s.rollout_cpus) == ("bfloat16", 1)
    overrides = dict(o.split("=", 1) for o in bench.rlpost_overrides(s, Path("/m"), Path("/d.jsonl"), Path("/r")))
    assert overrides["model.dtype"] == "bfloat16" and overrides["resources.rollout_cpus"] == "1"
    assert bench.trl_config(s, tmp_path).bf16 is True
    assert bench.trl_config(bench.Settings(), tmp_path).bf16 is False
    text = bench.report({}, s, {})
    assert "bfloat16" in text and "TRL autocasts" in text and "(1 CPU:" in text
    assert "both in fp32" in bench.report({}, bench.Settings(), {})


def test_phase_table_shows_padding_and_mfu():
    records = [_record(step, 10.0, 1000.0, 2.0) | {"perf/padding_frac": 0.1 * step, "perf/mfu": 0.5}
               for step in (1, 2, 3)]
    summary = bench.rlpost_summary(records, warmup=1)
    assert summary["perf"] == pytest.approx({"perf/padding_frac": 0.25, "perf/mfu": 0.5})
    text = bench.format_phases(summary)
    assert "perf/padding_frac" in text and "25%" in text and "50%" in text


def test_trl_on_the_gpu_samples_with_colocated_vllm(tmp_path):
    s = bench.settings_from(bench.parse_args(["--trl-device", "cuda"]))  # bf16 without a GPU: TRL refuses
    config = bench.trl_config(s, tmp_path)
    assert config.use_vllm and config.vllm_mode == "colocate" and not config.use_cpu
    assert config.vllm_importance_sampling_correction is False and config.vllm_max_model_length > 128
    cpu = bench.trl_config(bench.Settings(), tmp_path)
    assert cpu.use_cpu and not cpu.use_vllm


def test_attention_implementation_reaches_both_systems():
    s = bench.settings_from(bench.parse_args(["--attn-implementation", "eager"]))
    overrides = dict(o.split("=", 1) for o in bench.rlpost_overrides(s, Path("/m"), Path("/d.jsonl"), Path("/r")))
    assert overrides["model.attn_implementation"] == "eager"
    assert "attention in both trained models: eager" in bench.report({}, s, {})
    assert "default (sdpa)" in bench.report({}, bench.Settings(), {})
