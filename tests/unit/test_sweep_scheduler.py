"""Sweep logic without a cluster: the LC-PFN stopping rule and its Tune scheduler (with a stand-in predictor), the
scheduler registry, the trials' status and curve files, and the summary read back from run directories."""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from rlpost.app.trial import trial_overrides
from rlpost.choices import SweepScheduler, values_of
from rlpost.config import SweepConfig
from rlpost.sweep.records import ended_status, read_curve, write_status
from rlpost.sweep.scheduler import OBJECTIVE_KEY, TIME_KEY, CurveBook, LCPFNScheduler, decide, make_scheduler
from rlpost.sweep.summary import best_trial, summarise, trial_rows


@dataclass
class Said:
    p: float

    def prob_above(self, value: float) -> float:
        return self.p


class Predictor:
    """P(final > best) = the last value seen minus the best plus 0.5, clipped: rising curves pass, flat ones not."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[float], int]] = []

    def predict(self, observed: list[float], horizon: int) -> Said:
        self.calls.append((list(observed), horizon))
        return Said(min(1.0, max(0.0, observed[-1] - 0.5 + 0.5)))


@dataclass
class Trial:
    trial_id: str


def test_decide_waits_for_a_finished_trial_min_steps_and_an_open_curve():
    pred = Predictor()
    assert decide([0.1, 0.2], 5, None, 20, 0, 0.5, pred) == (False, None)  # nothing to beat yet
    assert decide([0.1, 0.2], 5, 0.9, 10, 20, 0.5, pred) == (False, None)  # before min_steps
    assert decide([0.1] * 5, 5, 0.9, 40, 0, 0.5, pred) == (False, None)  # the curve is complete
    assert pred.calls == []
    assert decide([0.1, 0.2], 5, 0.9, 20, 0, 0.5, pred) == (True, pytest.approx(0.2))
    assert decide([0.1, 0.7], 5, 0.9, 20, 0, 0.5, pred) == (False, pytest.approx(0.7))
    assert pred.calls[-1] == ([0.1, 0.7], 5)


def result(step: int, value: float) -> dict[str, float]:
    return {TIME_KEY: step, OBJECTIVE_KEY: value}


def test_scheduler_stops_a_weak_trial_once_one_has_finished(tmp_path):
    cfg = SweepConfig(min_steps=20, threshold=0.5)
    state = tmp_path / "scheduler.json"
    sched = LCPFNScheduler(cfg, steps=40, eval_every=10, state_path=state, predictor=Predictor())
    a, b, c = Trial("a"), Trial("b"), Trial("c")
    for step in (0, 10, 20, 30):  # nothing has finished: a always continues
        assert sched.on_trial_result(None, a, result(step, 0.1 * step / 10)) == TrialScheduler.CONTINUE
    sched.on_trial_complete(None, a, {**result(40, 0.6), "done": True})
    assert sched.book.finals == {"a": 0.6}
    assert sched.on_trial_result(None, b, result(10, 0.1)) == TrialScheduler.CONTINUE  # before min_steps
    assert sched.on_trial_result(None, b, result(20, 0.1)) == TrialScheduler.STOP
    assert sched.on_trial_result(None, c, result(20, 0.8)) == TrialScheduler.CONTINUE
    saved = json.loads(state.read_text())
    assert [d["trial"] for d in saved["decisions"]] == ["b", "c"] and saved["decisions"][0]["stop"] is True
    assert saved["curves"]["b"] == {"10": 0.1, "20": 0.1}

    # what Tune pickles leaves the predictor and the book behind; the book comes back from its file
    thawed = pickle.loads(pickle.dumps(sched))
    assert thawed._predictor is None and thawed._book is None
    assert thawed.book.finals == {"a": 0.6} and thawed.book.curve("b") == [0.1, 0.1]


def test_a_result_without_the_metric_changes_nothing(tmp_path):
    sched = LCPFNScheduler(SweepConfig(), 40, 10, tmp_path / "s.json", predictor=Predictor())
    assert sched.on_trial_result(None, Trial("a"), {"training_iteration": 1}) == TrialScheduler.CONTINUE
    assert sched.book.curves == {}


def test_curve_book_round_trip(tmp_path):
    book = CurveBook(tmp_path / "b.json", {"t": {20: 0.5, 0: 0.1, 10: 0.3}}, {"u": 0.7}, [{"trial": "t"}])
    book.save()
    back = CurveBook.load(tmp_path / "b.json")
    assert back.curve("t") == [0.1, 0.3, 0.5] and back.best_final() == 0.7 and back.decisions == [{"trial": "t"}]
    assert CurveBook.load(tmp_path / "absent.json").best_final() is None


@pytest.mark.parametrize("kind", values_of(SweepScheduler))
def test_every_scheduler_kind_builds(kind, tmp_path):
    sched = make_scheduler(replace(SweepConfig(), scheduler=kind, min_steps=0), 100, 10, tmp_path / "s.json")
    expected = {"lcpfn": LCPFNScheduler, "asha": ASHAScheduler, "none": FIFOScheduler}[kind]
    assert type(sched) is expected
    if kind == "asha":
        assert sched._max_t == 100 and sched._brackets[0]._rungs[-1][0] == 10  # grace: one eval interval


def test_trial_overrides_set_its_run_directory_and_resume(tmp_path):
    over = trial_overrides({"learner.lr": 3e-05}, tmp_path, "trial_x", eval_every=10, checkpoint_every=0)
    assert over[0] == "learner.lr=3.0e-05"
    assert f"run.output_dir={tmp_path}" in over and "run.name=trial_x" in over
    assert "checkpoint.resume=auto" in over and "checkpoint.every=10" in over
    assert "checkpoint.every=5" in trial_overrides({}, tmp_path, "t", 10, 5)


def make_trial(root: Path, name: str, status: str | None, curve: list[tuple[int, float]], **extra: object) -> Path:
    run_dir = root / f"{name}-20261130-120000"
    run_dir.mkdir(parents=True)
    (run_dir / "curve.jsonl").write_text("".join(json.dumps(p) + "\n" for p in curve))
    if status:
        write_status(run_dir, status=status, step=curve[-1][0], objective=curve[-1][1], **extra)
    return run_dir


def test_status_and_curve_files(tmp_path):
    run_dir = make_trial(tmp_path, "trial_a", "stopped", [(0, 0.1), (10, 0.2), (10, 0.25)], values={"x": 1})
    assert read_curve(run_dir) == [(0, 0.1), (10, 0.25)]  # a resumed trial's repeat keeps the latest
    assert ended_status(tmp_path, "trial_a")["status"] == "stopped"
    make_trial(tmp_path, "trial_b", "running", [(0, 0.1)])
    assert ended_status(tmp_path, "trial_b") is None and ended_status(tmp_path, "trial_c") is None


def test_summary_of_a_sweep(tmp_path):
    trials = tmp_path / "trials"
    make_trial(trials, "trial_a", "finished", [(0, 0.1), (10, 0.3), (20, 0.5)], values={"learner.lr": 1e-4},
               train_seconds=30.0)
    make_trial(trials, "trial_b", "stopped", [(0, 0.1), (10, 0.15)], values={"learner.lr": 1e-6},
               train_seconds=10.0)
    make_trial(trials, "trial_c", "finished", [(0, 0.1), (10, 0.2), (20, 0.4)], values={"learner.lr": 3e-5},
               train_seconds=30.0)
    make_trial(trials, "trial_d", None, [(0, 0.1)])  # the sweep died while it ran
    rows = trial_rows(trials)
    assert [r.status for r in rows] == ["finished", "stopped", "finished", "running"]
    assert best_trial(rows).name == "trial_a"
    data = summarise(tmp_path, "eval/sampled/mean", "lcpfn", steps=20, wall_seconds=100.0)
    assert data["steps_run"] == 20 + 10 + 20 + 0 and data["steps_if_unstopped"] == 80
    assert data["compute_saved"] == pytest.approx(1 - 50 / 80)
    assert data["counts"] == {"finished": 2, "stopped": 1, "failed": 0, "running": 1}
    md = (tmp_path / "summary.md").read_text()
    assert "trial_a **best**" in md and "best: trial_a (learner.lr=0.0001)" in md and "38% saved" in md
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert json.loads((tmp_path / "summary.json").read_text())["best"]["name"] == "trial_a"


def test_a_sweep_directory_refuses_another_sweep(tmp_path):
    from rlpost.config import RecipeError
    from rlpost.sweep.records import check_same_sweep

    spec = {"recipe": "quickstart", "overrides": ["run.steps=10"], "space": {"learner.lr": ["grid", [1e-5, 3e-5]]}}
    check_same_sweep(tmp_path, spec)
    check_same_sweep(tmp_path, json.loads(json.dumps(spec)))  # the same sweep again: restored
    with pytest.raises(RecipeError, match="another overrides, space"):
        check_same_sweep(tmp_path, {**spec, "overrides": [], "space": {}})
