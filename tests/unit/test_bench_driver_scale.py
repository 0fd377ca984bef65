"""The driver-scale harness's pure parts (scripts/bench_driver_scale.py): arguments and points, the synthetic data's
shapes and length statistics, the memory guard, the least-squares fit and the table. No Ray, no step."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import bench_driver_scale as bench  # noqa: E402


def test_points_parse_and_reject_bad_ones() -> None:
    assert bench.parse_points("256x512, 8192X4096") == [(256, 512), (8192, 4096)]
    for bad in ("256", "100x512", "256x8", "axb", "0x512"):
        with pytest.raises(argparse.ArgumentTypeError):
            bench.parse_point(bad)


def test_arguments_defaults_quick_and_modes() -> None:
    args = bench.parse_args([])
    assert args.points == bench.parse_points(bench.DEFAULT_POINTS) and args.mode == "ray" and args.steps == 3
    quick = bench.parse_args(["--quick"])
    assert quick.points == bench.parse_points(bench.QUICK_POINTS) and quick.mode == "both"
    assert bench.parse_args(["--points", "16x64", "--mode", "inprocess", "--out", "r.json"]).out == Path("r.json")
    assert bench.modes("both") == ["inprocess", "ray"] and bench.modes("ray") == ["ray"]
    with pytest.raises(SystemExit):
        bench.parse_args(["--steps", "1"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--mode", "gpu"])


def test_lengths_follow_gamma_around_the_mean_with_about_4_percent_at_the_cap() -> None:
    mean = 512
    lengths = bench.completion_lengths(np.random.default_rng(0), 50_000, mean)
    assert lengths.min() >= 16 and lengths.max() == 2 * mean
    assert abs(lengths.mean() / mean - 1) < 0.03
    assert 0.03 < (lengths == 2 * mean).mean() < 0.055


def test_group_and_prompts_have_the_harness_shapes() -> None:
    group = bench.make_group(seed=0, index=3, mean=64)
    assert len(group) == bench.GROUP
    for sample in group:
        n = len(sample.token_ids)
        assert 16 <= n <= 128 and len(sample.logprobs) == n and len(sample.text) == bench.CHARS_PER_TOKEN * n
        assert sample.token_ids.dtype == np.int32 and sample.logprobs.dtype == np.float32  # as vLLM's actor
        assert all(0 <= t < bench.VOCAB for t in sample.token_ids) and max(sample.logprobs) <= 0
        assert sample.finish_reason == ("length" if n == 128 else "stop")
    as_lists = bench.make_group(seed=0, index=3, mean=64, as_lists=True)
    for array_sample, list_sample in zip(group, as_lists, strict=True):
        assert type(list_sample.token_ids[0]) is int and type(list_sample.logprobs[0]) is float
        assert list_sample.token_ids == array_sample.token_ids.tolist()
        assert list_sample.logprobs == array_sample.logprobs.tolist()
    again = bench.make_group(seed=0, index=3, mean=64)
    assert [s.token_ids.tolist() for s in again] == [s.token_ids.tolist() for s in group]  # any process: same data
    prompts = bench.make_prompts(16, seed=0)
    assert {len(p.token_ids) for p in prompts} == {bench.PROMPT_LEN}
    assert len({p.data_source for p in prompts}) == bench.SOURCES
    assert all(p.columns == {"answer": p.answer, "data_source": p.data_source} for p in prompts)


def test_config_overrides_load() -> None:
    from rlpost.recipes import load_config

    config = load_config("quickstart", bench.config_overrides(1024, 512))
    assert config.algorithm.prompts_per_step == 64 and config.rollout.samples_per_prompt == 16
    assert config.learner.world_size == 8 and config.rollout.max_new_tokens == 1024
    assert config.sampler.kind == "dump" and config.reward.chunk_size == 64 and config.sync.probe_sequences == 0


def test_memory_guard_grows_with_tokens() -> None:
    small, big = bench.estimate_bytes(256, 512, "ray", "lists"), bench.estimate_bytes(8192, 4096, "ray", "lists")
    assert small < 1.5e9 and 15e9 < big < 25e9
    assert bench.estimate_bytes(8192, 4096, "inprocess", "lists") < big
    assert bench.estimate_bytes(8192, 4096, "ray") < big / 3  # arrays: the default
    assert bench.estimate_bytes(8192, 16384, "ray") < 20e9  # the 8192 x 16384 point fits in this machine's 23 GB
    assert bench.available_bytes() > 0


def test_fit_recovers_a_line() -> None:
    tokens = [1e5, 1e6, 4e6, 1.6e7]
    a, b, r2 = bench.fit(tokens, [0.02 + 4.3e-7 * t for t in tokens])
    assert a == pytest.approx(0.02) and b == pytest.approx(4.3e-7) and r2 == pytest.approx(1.0)
    assert all(np.isnan(v) for v in bench.fit([1e5, 1e5], [1.0, 2.0]))


def _result(mode: str, samples: int, mean: int, seconds: float) -> dict:
    median = {"tokens": float(samples * mean), "driver_s": seconds, "time/generate": 0.1, "time/reward": 0.2,
              "time/advantage": 0.01, "time/train": 0.5, "build_shards": 0.3, "ray_put": 0.1,
              "build_request": 0.05, "apply_result": 0.02}
    return {"mode": mode, "samples": samples, "mean_len": mean, "median": median,
            "peak_rss_bytes": 300 * samples * mean, "sample_bytes": 2e6, "reward_bytes": 1e6, "shard_bytes": 12e6}


def test_table_and_fits_print_every_point() -> None:
    results = [_result("ray", 256, 512, 0.09), _result("ray", 1024, 4096, 1.35),
               {"mode": "ray", "samples": 8192, "mean_len": 16384, "skipped": "needs ~60 GB"}]
    table = bench.format_table(results)
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["mode", "point", "Mtok", "driver"]
    assert "256x512" in lines[1] and "15.0 (2.0+1.0+12.0)" in lines[1] and "0.04" in lines[1]  # 0.13 M tok x 300 B
    assert "0.100" in lines[1]  # learners: train - build_shards - ray.put
    assert lines[-1] == "skipped ray 8192x16384: needs ~60 GB"
    fits = bench.format_fits(results)
    assert fits.startswith("fit ray (2 points)") and "300 B/token" in fits
