"""`rlpost report` (rlpost/report.py, rlpost/dashboard.py) over run directories written here: a finished run and
one still in progress (no eval.json, a half-written last line), their differing keys, the summary and the figure;
the samples logged by the trainer; and a resume cutting samples.jsonl back with metrics.jsonl."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rlpost.app.cli import main
from rlpost.checkpoint import truncate_metrics
from rlpost.dashboard import ema
from rlpost.loop import sample_records
from rlpost.report import differing_keys, load_run, report
from rlpost.types import Group, Prompt, Sample


def _run_dir(root: Path, name: str, lr: float, steps: int, done: bool) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(f"run:\n  name: {name}\n  output_dir: {root}\nlearner:\n  lr: {lr}\n"
                                      "rollout:\n  mode: sync\n")
    lines = [json.dumps({"step": 0, "sync/probe_max_abs_diff": 1e-6})]
    for step in range(1, steps + 1):
        record = {"step": step, "reward/mean": 0.1 * step, "acc/a": 0.5, "acc/b": 0.01 * step, "acc/mean": 0.3,
                  "sampler/weight/a": 0.5, "sampler/weight/b": 0.5, "alloc/n_hist": [8, 8, 4, 12],
                  "tokens/completion_len_mean": 3.0, "tokens/truncated_frac": 0.1, "train/clip_frac": 0.01,
                  "time/generate": 1.0, "time/train": 2.0, "time/wall": 3.0, "perf/tokens_per_s": 100.0,
                  "tokens/generated": 300.0}
        if step % 2 == 0:
            record.update({"eval/a": 0.6, "eval/b": 0.2, "eval/mean": 0.4, "eval/sampled/mean": 0.3})
        lines.append(json.dumps(record))
    text = "\n".join(lines) + "\n"
    (path / "metrics.jsonl").write_text(text if done else text + '{"step": 99, "rew')  # a line being written
    if done:
        (path / "eval.json").write_text(json.dumps({"before": {"a": 0.5, "b": 0.1, "mean": 0.3},
                                                    "after": {"a": 0.7, "b": 0.3, "mean": 0.5}}))
    (path / "samples.jsonl").write_text(json.dumps({"step": 2, "samples": [
        {"data_source": "a", "prompt": "1+2=", "completion": "3|x", "rewards": {"exact": 1.0}, "reward": 1.0,
         "advantage": 0.5, "length": 2}]}) + "\n")
    return path


def test_report_of_a_finished_and_an_unfinished_run(tmp_path):
    done = _run_dir(tmp_path, "lr-a", 1e-4, 6, True)
    running = _run_dir(tmp_path, "lr-b", 5e-5, 3, False)
    runs = [load_run(done), load_run(running)]
    assert [len(r.steps()) for r in runs] == [6, 3]  # the half-written line is skipped
    assert differing_keys(runs) == {"learner.lr": [1e-4, 5e-5]}  # run.name and output_dir never count
    assert runs[0].evals() == [(0, {"a": 0.5, "b": 0.1, "mean": 0.3}), (2, {"a": 0.6, "b": 0.2, "mean": 0.4}),
                               (4, {"a": 0.6, "b": 0.2, "mean": 0.4}), (6, {"a": 0.7, "b": 0.3, "mean": 0.5})]
    png, md = report([done, running], tmp_path / "out")
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10_000
    text = md.read_text()
    assert "| `learner.lr` | `0.0001` | `5e-05` |" in text
    assert "| lr-a | 6 | done | 30.0% | 50.0% | +20.0 |" in text
    assert "| lr-b | 3 | in progress | – | 40.0% | – |" in text  # no eval.json yet: the latest eval step
    assert "`3\\|x`" in text and "| exact |" in text  # a | in a completion cannot break the table


def test_cli_report_writes_into_the_run_dir_and_refuses_what_is_not_a_run(tmp_path, capsys):
    done = _run_dir(tmp_path, "one", 1e-4, 4, True)
    assert main(["report", str(done)]) == 0
    assert (done / "report.png").is_file() and "(one run)" in (done / "report.md").read_text()
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "not an rlpost run directory" in capsys.readouterr().err


def test_ema_skips_missing_points_and_follows_the_span():
    assert ema([1.0, math.nan, 3.0], span=1.0) == [1.0, 1.0, 3.0]  # alpha 1: the last point
    smoothed = ema([0.0, 4.0], span=3.0)  # alpha 0.5
    assert smoothed == [0.0, 2.0]
    assert math.isnan(ema([math.nan], 2.0)[0])


def test_sample_records_take_a_few_groups_per_source_with_their_rewards():
    groups = [Group(Prompt(i, f"p{i}", [1], str(i), "ab"[i % 2]),
                    [Sample(i, [5, 6], [-0.1, -0.2], f"c{i}", "stop", reward=1.0 + i,
                            reward_components={"exact": 1.0, "fmt": float(i)})], [0.25 * i]) for i in range(6)]
    records = sample_records(groups, per_source=2)
    assert [(r["data_source"], r["prompt"]) for r in records] == [("a", "p0"), ("a", "p2"), ("b", "p1"), ("b", "p3")]
    assert records[1] == {"data_source": "a", "prompt": "p2", "answer": "2", "completion": "c2",
                          "rewards": {"exact": 1.0, "fmt": 2.0}, "reward": 3.0, "advantage": 0.5, "length": 2,
                          "finish_reason": "stop", "version": 0}


@pytest.mark.parametrize("cut", [2, 3])
def test_resume_cuts_samples_back_with_metrics(tmp_path, cut):
    run = _run_dir(tmp_path, "r", 1e-4, 4, True)
    with (run / "samples.jsonl").open("a") as f:
        f.write(json.dumps({"step": 4, "samples": []}) + "\n" + '{"step": 5, "sam')  # cut by a kill
    truncate_metrics(run, cut)
    assert [json.loads(x)["step"] for x in (run / "samples.jsonl").read_text().splitlines()] == [2]
    assert max(json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()) == cut
