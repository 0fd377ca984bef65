"""FLOP counting and the MFU figure: golden values, the parameters a real model multiplies by, the peak's cache."""

import json
import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from actors import flops as device_flops
from rlpost.flops import FORWARD, FORWARD_BACKWARD, mfu, sequence_flops


def test_sequence_flops_golden_values():
    # 2 x 1000 params x 10 tokens + 2 x 2 layers x 8 hidden x 10² = 20,000 + 3,200 per forward
    assert sequence_flops([10], 1000, 2, 8, FORWARD) == 23_200
    assert sequence_flops([10], 1000, 2, 8, FORWARD_BACKWARD) == 3 * 23_200
    # attention grows with the square of each sequence: one 20-token sequence costs more than two of 10
    assert sequence_flops([20], 1000, 2, 8, FORWARD) == 40_000 + 12_800
    assert sequence_flops([10, 10], 1000, 2, 8, FORWARD) == 2 * 23_200
    assert sequence_flops([], 1000, 2, 8, FORWARD_BACKWARD) == 0


def test_mfu_is_achieved_over_peak_and_nan_without_a_peak():
    assert mfu(5e11, 2.0, 1e12) == pytest.approx(0.25)
    assert math.isnan(mfu(5e11, 2.0, float("nan")))
    assert math.isnan(mfu(5e11, 0.0, 1e12))


def test_matmul_params_count_every_linear_weight_and_not_the_embedding():
    cfg = LlamaConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, intermediate_size=24, num_attention_heads=4,
                      num_key_value_heads=2, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    head_dim = 16 // 4
    attention = 16 * 16 * 2 + 16 * (2 * head_dim) * 2  # q, o; k, v with 2 kv heads
    mlp = 3 * 16 * 24
    assert device_flops.matmul_params(model) == 2 * (attention + mlp) + 40 * 16


def test_peak_is_measured_once_per_machine_threads_and_dtype(tmp_path, monkeypatch):
    monkeypatch.setenv("RLPOST_CACHE_DIR", str(tmp_path))
    calls = []

    def fake_measure(device, dtype):
        calls.append(dtype)
        return 1e11 if dtype == torch.float32 else 4e11

    monkeypatch.setattr(device_flops, "measure_matmul_flops", fake_measure)
    cpu = torch.device("cpu")
    assert device_flops.peak_flops(cpu, torch.float32) == 1e11
    assert device_flops.peak_flops(cpu, torch.float32) == 1e11
    assert device_flops.peak_flops(cpu, torch.bfloat16) == 4e11
    assert calls == [torch.float32, torch.bfloat16]
    cached = json.loads((tmp_path / "peak_flops.json").read_text())
    assert len(cached) == 2 and all(f"threads={torch.get_num_threads()}" in key for key in cached)


def test_measured_matmul_peak_is_a_plausible_rate():
    rate = device_flops.measure_matmul_flops(torch.device("cpu"), torch.float32, repeats=2)
    assert 1e8 < rate < 1e14
