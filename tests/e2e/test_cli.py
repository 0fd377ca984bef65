"""The quickstart recipe through the `rlpost` CLI on real Ray + vLLM + DeepSpeed, and the CLI's error paths."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO, run_cli

SMALL = ["run.steps=3", "data.n_eval_per_source=16", "algorithm.prompts_per_step=8", "run.progress_bar=false"]


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    result = run_cli("train", "quickstart", *SMALL, f"run.output_dir={out}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = list(out.iterdir())
    (run_dir / "stdout.txt").write_text(result.stdout)
    return run_dir


def test_run_directory_holds_config_metrics_tensorboard_and_table(quickstart_run):
    assert "steps: 3" in (quickstart_run / "config.yaml").read_text()
    records = [json.loads(line) for line in (quickstart_run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "reward/mean" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    for key in ("reward/mean", "acc/mean", "train/clip_frac", "tokens/generated", "time/generate", "time/reward",
                "time/train", "time/sync", "sync/probe_max_abs_diff"):
        assert all(r.get(key) is not None and math.isfinite(r[key]) for r in steps), key
    assert all(r["sync/probe_max_abs_diff"] < 1e-3 for r in steps)
    assert any(k.startswith("acc/sum") for k in steps[0])
    assert list((quickstart_run / "tb").glob("events.out.tfevents.*"))
    assert (quickstart_run / "metrics.png").stat().st_size > 0
    assert (quickstart_run / "report.png").stat().st_size > 0 and "| 3 | done |" in (
        quickstart_run / "report.md").read_text()  # every run ends with its dashboard and summary
    evaluation = json.loads((quickstart_run / "eval.json").read_text())
    assert set(evaluation["before"]) == set(evaluation["after"]) >= {"sum3", "mean"}
    stdout = (quickstart_run / "stdout.txt").read_text()
    assert "held-out greedy accuracy" in stdout and "before" in stdout and "step    1 |" in stdout


def test_final_checkpoint_loads_in_transformers_and_vllm(quickstart_run):
    final = quickstart_run / "final"
    script = textwrap.dedent(f"""
        import os
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        if __name__ == "__main__":
            from transformers import AutoModelForCausalLM, AutoTokenizer
            from vllm import LLM, SamplingParams
            AutoModelForCausalLM.from_pretrained({str(final)!r})
            tok = AutoTokenizer.from_pretrained({str(final)!r})
            llm = LLM({str(final)!r}, dtype="float32", max_model_len=64, enforce_eager=True)
            params = SamplingParams(max_tokens=4, temperature=0)
            out = llm.generate([{{"prompt_token_ids": tok("123=")["input_ids"]}}], params)
            print("GENERATED", repr(out[0].outputs[0].text))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert "GENERATED" in result.stdout, result.stderr[-3000:]


def test_unknown_recipe_key_fails_fast_naming_key_and_file(tmp_path):
    recipe = tmp_path / "typo.yaml"
    recipe.write_text("defaults: [" + str(REPO / "recipes/quickstart.yaml") + "]\nrollout:\n  temprature: 0.7\n")
    result = run_cli("train", str(recipe), timeout=120)
    assert result.returncode == 2
    assert "typo.yaml" in result.stderr and "rollout.temprature" in result.stderr
    assert "did you mean 'rollout.temperature'" in result.stderr
    assert "Traceback" not in result.stderr


def test_broken_reward_plugin_is_named_with_its_traceback(tmp_path):
    plugin = tmp_path / "broken.py"
    plugin.write_text("def reward(prompts, completions, completion_ids, **kw):\n    return []\n"
                      "raise ImportError('oops in plugin')\n")
    result = run_cli("train", "quickstart", f"reward.functions=[{plugin}:reward]", "--dry-run", timeout=300)
    assert result.returncode == 2
    assert f"{plugin}:reward" in result.stderr and "oops in plugin" in result.stderr


def test_help_lists_documented_keys():
    result = run_cli("train", "--help", timeout=60)
    assert result.returncode == 0
    assert "rollout.samples_per_prompt" in result.stdout and "G: completions sampled per prompt" in result.stdout


def test_validate_passes_on_every_shipped_recipe(capsys):
    """Recipes needing GPUs or labelled nodes are checked offline (schema and plugins); the rest fully."""
    from rlpost.app.cli import main
    from rlpost.recipes import load_config, shipped_recipes

    for name in shipped_recipes():
        res = load_config(name).resources
        offline = bool(res.rollout_gpus or res.learner_gpus or res.rollout_custom or res.learner_custom
                       or res.reward_custom)
        assert main(["validate", name, *(["--offline"] if offline else [])]) == 0, name
        out = capsys.readouterr().out
        assert f"{name}: valid" in out and ("resources:" in out) != offline, out


def test_more_gpus_than_exist_fails_before_any_actor_starts():
    result = run_cli("train", "quickstart", "resources.learner_gpus=4", timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "resources.learner_gpus=4 x learner.world_size=2" in result.stderr
    assert "actors ready" not in result.stdout and "Traceback" not in result.stderr


def test_eval_reproduces_the_runs_greedy_accuracy_and_reports_pass_at_k(quickstart_run, tmp_path):
    out = tmp_path / "eval.json"
    result = run_cli("eval", str(quickstart_run / "final"), "quickstart", "data.n_eval_per_source=16", "--k", "1",
                     "4", "--out", str(out), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())["results"]
    after = json.loads((quickstart_run / "eval.json").read_text())["after"]
    assert set(report) == set(after)
    for source, accuracy in after.items():  # the same greedy decoding of the same weights on the same prompts
        assert report[source]["greedy_acc"] == pytest.approx(accuracy), source
    for row in report.values():
        assert 0.0 <= row["pass@1"] <= row["pass@4"] <= 1.0
    assert "pass@4" in result.stdout and "greedy_acc" in result.stdout
