"""The reasoning-trace task through the CLI with Memory-R+ on: the trace base model builds (or is reused from the
cache), completions are traces verified on their final answer, and both memory rewards reach the logged reward."""

from __future__ import annotations

import json

from actors.runtime import cache_dir
from tests.e2e.conftest import run_cli


def test_trace_recipe_trains_with_memory_rewards(tmp_path):
    out = tmp_path / "runs"
    result = run_cli("train", "trace", "run.steps=3", "run.eval_every=3", "data.n_eval_per_source=4",
                     "algorithm.prompts_per_step=8", "run.progress_bar=false", "memory.exploit_weight=1",
                     "memory.explore_weight=1", "memory.explore_phase=2", "run.log_samples_every=1",
                     f"run.output_dir={out}", timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    (run_dir,) = list(out.iterdir())
    records = {r["step"]: r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}
    assert sorted(records) == [0, 1, 2, 3]
    assert all(records[s]["memory/exploit_keys"] > 0 for s in (1, 2, 3))  # most first traces are right
    assert records[3]["memory/explore_keys"] >= 2 and records[3]["reward/memory_explore"] > 0
    assert 0 < records[3]["reward/memory_exploit"] <= 1
    assert records[3]["eval/sampled/len/mean"] > 15  # traces, not bare answers: 'a+b=c;...;#s'
    assert records[3]["eval/mean"] > 0.5 and set(json.loads((run_dir / "eval.json").read_text())["after"]) == {
        "trace3", "trace4", "trace5", "trace6", "trace7", "mean"}
    report = json.loads((cache_dir() / "base_model_trace" / "base_model_report.json").read_text())
    assert report["settings"]["task"] == "trace" and report["greedy_accuracy"]["trace5"] > 0.8
    records = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    rows = [row for record in records for row in record["samples"]]
    assert len(records) == 3 and rows and all(set(row["rewards"]) == {"trace_answer", "memory_exploit",
                                                                      "memory_explore"} for row in rows)
    for row in rows:  # right only with the answer after '#'
        assert row["rewards"]["trace_answer"] == float(row["completion"].rsplit("#", 1)[-1].strip() == row["answer"]
                                                       and "#" in row["completion"])
