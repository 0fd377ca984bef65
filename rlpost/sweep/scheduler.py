"""Early stopping of sweep trials from their learning curves: LC-PFN's criterion (Adriaensen et al. 2023, after
Domhan et al. 2015) behind Ray Tune's scheduler interface, and ASHA (Tune's own) as the alternative.

A trial reports its held-out metric every run.eval_every steps. Once some trial has finished, every later report of
an unfinished trial asks the extrapolator for P(this trial's final value > the best finished trial's final value)
given its curve so far; below sweep.threshold (and past sweep.min_steps) the trial is stopped. Until a trial has
finished there is nothing to beat and nothing stops. What the scheduler knows (curves, final values, every decision
with its probability) is written to a JSON file after each report, so a sweep restored after its driver died
decides as it would have.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from rlpost.atomic import write_text_atomic
from rlpost.config import SweepConfig
from rlpost.sweep.pfn import PFNSettings, ensure_pfn

TIME_KEY = "training_step"  # what trials report as Tune's time attribute
OBJECTIVE_KEY = "objective"  # the value of sweep.metric in a trial's result


class Predictor(Protocol):
    def predict(self, observed: list[float], horizon: int) -> Any: ...


@dataclass
class CurveBook:
    """The LC-PFN scheduler's knowledge: each trial's curve (step -> value), finished trials' final values, and the
    decisions taken; kept in `path` (JSON) when given."""

    path: Path | None = None
    curves: dict[str, dict[int, float]] = field(default_factory=dict)
    finals: dict[str, float] = field(default_factory=dict)
    decisions: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path | None) -> CurveBook:
        if path is None or not path.exists():
            return cls(path)
        raw = json.loads(path.read_text())
        return cls(path, {t: {int(s): v for s, v in c.items()} for t, c in raw["curves"].items()}, raw["finals"],
                   raw["decisions"])

    def save(self) -> None:
        if self.path is None:
            return
        write_text_atomic(self.path, json.dumps({"curves": self.curves, "finals": self.finals,
                                                 "decisions": self.decisions}, indent=1))

    def record(self, trial: str, result: dict[str, Any], last_step: int) -> tuple[int, float] | None:
        """Add a trial's reported point (and its final value when `step` is the last); None when the result has
        no point."""
        if result.get(TIME_KEY) is None or result.get(OBJECTIVE_KEY) is None:
            return None
        step, value = int(result[TIME_KEY]), float(result[OBJECTIVE_KEY])
        self.curves.setdefault(trial, {})[step] = value
        if step >= last_step:
            self.finals[trial] = value
        return step, value

    def curve(self, trial: str) -> list[float]:
        points = self.curves.get(trial, {})
        return [points[s] for s in sorted(points)]

    def best_final(self) -> float | None:
        return max(self.finals.values()) if self.finals else None


def decide(curve: list[float], horizon: int, best: float | None, step: int, min_steps: int, threshold: float,
           predictor: Predictor) -> tuple[bool, float | None]:
    """(stop?, P(final > best)) for a trial whose eval values so far are `curve` (of `horizon` points in all); the
    probability is None when no decision is due: nothing has finished, too early, or the curve is complete."""
    if best is None or step < min_steps or not 0 < len(curve) < horizon:
        return False, None
    p = float(predictor.predict(curve, horizon).prob_above(best))
    return p < threshold, p


def make_scheduler(cfg: SweepConfig, steps: int, eval_every: int, state_path: Path | None = None,
                   pfn: tuple[Path, PFNSettings] | None = None) -> Any:
    """The Tune scheduler for sweep.scheduler: LCPFNScheduler, Tune's ASHA, or Tune's FIFO (no stopping)."""
    if cfg.scheduler == "lcpfn":
        return LCPFNScheduler(cfg, steps, eval_every, state_path, pfn=pfn)
    if cfg.scheduler == "asha":
        return ASHAScheduler(time_attr=TIME_KEY, metric=OBJECTIVE_KEY, mode="max", max_t=steps,
                             grace_period=max(cfg.min_steps, eval_every), reduction_factor=cfg.reduction_factor)
    if cfg.scheduler == "none":
        return FIFOScheduler()
    raise ValueError(f"unknown sweep.scheduler {cfg.scheduler!r}")


class LCPFNScheduler(FIFOScheduler):
    """Tune scheduler: trials run in submission order (FIFO) and stop by `decide`. `predictor` defaults to the
    extrapolator `pfn` = (cache folder, settings) (rlpost/sweep/pfn.py), loaded at the first decision; tests pass
    their own."""

    def __init__(self, cfg: SweepConfig, steps: int, eval_every: int, state_path: Path | None = None,
                 predictor: Predictor | None = None, pfn: tuple[Path, PFNSettings] | None = None) -> None:
        super().__init__()
        self.cfg, self.steps, self.eval_every, self.state_path = cfg, steps, eval_every, state_path
        self.pfn = pfn
        self._book: CurveBook | None = None
        self._predictor = predictor

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles the scheduler; the book and the network reload
        return {**self.__dict__, "_book": None, "_predictor": None}

    @property
    def book(self) -> CurveBook:
        if self._book is None:
            self._book = CurveBook.load(self.state_path)
        return self._book

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        book, cfg = self.book, self.cfg
        point = book.record(trial.trial_id, result, self.steps)
        if point is None:
            return str(TrialScheduler.CONTINUE)
        step, value = point
        if step >= self.steps:
            book.save()
            return str(TrialScheduler.CONTINUE)
        best = book.best_final()
        if self._predictor is None and best is not None:
            if self.pfn is None:
                raise ValueError("LCPFNScheduler needs a predictor or pfn=(cache folder, settings)")
            self._predictor = ensure_pfn(*self.pfn)
        stop, p = decide(book.curve(trial.trial_id), self.steps // self.eval_every + 1, best, step,
                         cfg.min_steps, cfg.threshold, self._predictor)  # type: ignore[arg-type]
        if p is not None:
            book.decisions.append({"trial": trial.trial_id, "step": step, "value": value, "p_beat_best": p,
                                   "best": best, "stop": stop})
            print(f"[lc-pfn] {trial.trial_id} step {step}: P(final {cfg.metric} > best {best:.3f}) = {p:.3f}"
                  + (f" < {cfg.threshold}: stopped" if stop else ""), flush=True)
        book.save()
        return str(TrialScheduler.STOP if stop else TrialScheduler.CONTINUE)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any] | None) -> None:
        """Tune hands a trial's last result (done=True) here rather than to on_trial_result."""
        if result and self.book.record(trial.trial_id, result, self.steps) is not None:
            self.book.save()

    def debug_string(self) -> str:
        return f"LC-PFN early stopping (threshold {self.cfg.threshold}, min_steps {self.cfg.min_steps})"


