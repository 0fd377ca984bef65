"""Two short quickstart runs through the CLI: `rollout.mode=sync`, and `async` with `max_staleness=0`.

- async with a lag of 0 is the synchronous loop: the same metrics at every step (held-out evals, greedy and
  sampled, included) and the same final accuracy, bit-exact on this CPU stack, every key but timings. Users of other
  systems report staleness-0 runs that silently differ from sync; here a lag of 0 takes the very same calls.
- `rlpost report` on the two runs (different recipes) writes the dashboard and a summary naming the keys in which
  they differ, with the latest logged completions.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import run_cli
from tests.e2e.test_resume import _metrics, _timing

ARGS = ["quickstart", "run.steps=3", "data.n_eval_per_source=8", "algorithm.prompts_per_step=8",
        "run.progress_bar=false", "run.name=modes", "run.eval_every=2", "run.log_samples_every=2",
        "run.eval_samples=3", "data.embedded_sources=[sum3,sum5,sum9]"]
MODES = {"sync": ["rollout.mode=sync"], "async0": ["rollout.mode=async", "rollout.max_staleness=0"]}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("modes")
    dirs = {}
    for name, mode in MODES.items():
        result = run_cli("train", *ARGS, *mode, f"run.output_dir={out / name}", timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        (dirs[name],) = list((out / name).iterdir())
    return dirs


def test_async_with_staleness_zero_logs_exactly_the_sync_run(two_runs):
    sync, async0 = (_metrics(two_runs[name].parent) for name in MODES)
    assert sorted(sync) == sorted(async0) == [0, 1, 2, 3]
    for step in sync:
        assert ({k: v for k, v in sync[step].items() if not _timing(k)}
                == {k: v for k, v in async0[step].items() if not _timing(k)}), step
    assert all(sync[step]["rollout/staleness_max"] == 0 for step in (1, 2, 3))
    assert "eval/mean" in sync[2] and "eval/sampled/mean" in sync[2]  # run.eval_every: greedy and sampled
    assert {k[5:] for k in sync[2] if k.startswith("eval/") and k.count("/") == 1} == {"sum3", "sum5", "sum9", "mean"}
    for source in ("sum3", "sum5", "sum9"):  # mean@3 over 8 prompts: a multiple of 1/24
        assert sync[2][f"eval/sampled/{source}"] * 24 == pytest.approx(round(sync[2][f"eval/sampled/{source}"] * 24))
    assert 0 < sync[2]["eval/sampled/se/mean"] < 0.5 and 0 <= sync[2]["eval/se/mean"] < 0.5
    evals = [json.loads((two_runs[name] / "eval.json").read_text()) for name in MODES]
    assert evals[0] == evals[1]
    assert set(evals[0]["before"]) == {"sum3", "sum5", "sum9", "mean"}  # greedy, as before
    assert {"sampled/mean", "se/mean", "sampled/se/mean"} <= set(evals[0]["before_all"])  # step 0 of the curve
    samples = [(two_runs[name] / "samples.jsonl").read_text() for name in MODES]
    assert samples[0] == samples[1] and json.loads(samples[0].splitlines()[0])["step"] == 2


def test_report_overlays_two_runs_and_names_the_keys_they_differ_in(two_runs, tmp_path):
    result = run_cli("report", str(two_runs["sync"]), str(two_runs["async0"]), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    png, md = tmp_path / "report.png", tmp_path / "report.md"
    assert png.stat().st_size > 20_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = md.read_text()
    assert "`rollout.mode` | `sync` | `async`" in text and "`rollout.max_staleness`" in text
    assert "run.name" not in text.split("## Recipe keys that differ")[1].split("## Samples")[0]
    assert text.count("## Samples of") == 2 and "(step 2)" in text
    assert "| 3 | done |" in text  # both runs finished their 3 steps
