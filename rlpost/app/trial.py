"""One sweep trial as a Ray Tune trainable: a normal rlpost run (rlpost/app/run.py `Session`) in its own run
directory, stepped one eval interval per Tune iteration so a scheduler can stop it between evals.

The run directory is `<sweep>/trials/trial_<id>-<time>`, and its `status.json` says how the trial ended: 'finished'
(all steps, final eval and weights), 'stopped' (by the scheduler: a checkpoint at the last step run, so the run can
be continued with `rlpost train ... checkpoint.resume=RUN_DIR`), or 'failed' (with the error). A trial started again
after a sweep was restored resumes its run from its newest checkpoint (checkpoint.resume=auto); one whose status
says it already ended reports that ending without starting actors.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

from ray import tune

from rlpost.checkpoint import checkpoint_dir
from rlpost.sweep.records import append_curve, ended_status, read_status, write_status
from rlpost.sweep.scheduler import OBJECTIVE_KEY, TIME_KEY
from rlpost.sweep.space import overrides_for


def trial_overrides(values: dict[str, Any], trials_dir: Path, name: str, eval_every: int,
                    checkpoint_every: int) -> list[str]:
    """The recipe overrides of one trial: its values, its run directory, and the settings a trial needs (resume
    from its own checkpoints; no time limit, since stopping is the scheduler's; no SIGTERM handler or progress bar
    inside a Ray actor)."""
    return [*overrides_for(values), f"run.output_dir={trials_dir}", f"run.name={name}", "checkpoint.resume=auto",
            "run.max_train_minutes=0", "checkpoint.on_sigterm=false", "run.progress_bar=false",
            f"checkpoint.every={checkpoint_every or eval_every}"]


class RlpostTrial(tune.Trainable):
    """setup: load the recipe with the trial's values and start (or resume) the run; step: train to the next eval
    and report sweep.metric there; cleanup: record how the trial ended."""

    def setup(self, config: dict[str, Any], recipe: str = "", overrides: tuple[str, ...] = (),
              trials_dir: str = "") -> None:
        from rlpost.recipes import load_config

        self.trials_dir, self.name = Path(trials_dir), f"trial_{self.trial_id}"
        self.values = dict(config)
        self.ended = ended_status(self.trials_dir, self.name)
        self.session: Any = None
        self.result: dict[str, Any] = {}
        self.error = ""
        if self.ended is not None:
            return
        base = load_config(recipe, list(overrides))
        cfg = load_config(recipe, [*overrides, *trial_overrides(self.values, self.trials_dir, self.name,
                                                                 base.run.eval_every, base.checkpoint.every)])
        self.metric, self.steps, self.every = cfg.sweep.metric, cfg.run.steps, cfg.run.eval_every
        from ray.util import get_current_placement_group

        from actors.placement import host_in_group
        from rlpost.app.run import Session

        host_in_group(get_current_placement_group())
        self.session = Session(cfg)
        write_status(self.session.run_dir, status="running", trial_id=self.trial_id, values=self.values,
                     step=self.session.step)

    def step(self) -> dict[str, Any]:
        if self.ended is not None:  # ended before the sweep was restored: report how, and end again
            return {TIME_KEY: self.ended["step"], OBJECTIVE_KEY: self.ended.get("objective"), "done": True}
        s = self.session
        try:
            if not self.result and (s.step == 0 or s.step >= self.steps):  # the run's eval where it stands
                value = self._current_eval()
            else:
                seen: dict[str, float] = {}
                target = min(self.steps, (s.step // self.every + 1) * self.every)
                s.advance(target, lambda step, metrics: seen.update(metrics))
                value = seen.get(self.metric)
            if value is None:
                raise KeyError(f"sweep.metric {self.metric!r} is not among the run's held-out metrics (eval/...); "
                               "does the recipe's data have an eval split?")
            self.result = {TIME_KEY: s.step, OBJECTIVE_KEY: float(value), "done": s.step >= self.steps}
            append_curve(s.run_dir, s.step, float(value))
            if s.step >= self.steps:
                s.run.trainer.pipeline.close()
                s.finish()
                self._end("finished")
        except Exception:
            self.error = traceback.format_exc()
            raise
        return self.result

    def save_checkpoint(self, checkpoint_dir: str) -> dict[str, Any]:
        """What Tune keeps of a trial: where its run is (the run directory has the real checkpoints, which a
        restarted trial resumes from)."""
        s = self.session
        return {"run_dir": str(s.run_dir) if s else "", "step": s.step if s else 0}

    def load_checkpoint(self, checkpoint: dict[str, Any] | None) -> None:
        """Nothing to load: setup already resumed the run from its newest checkpoint (checkpoint.resume=auto)."""

    def _current_eval(self) -> float | None:
        """The metric before training (step 0: the run's first eval), or of a run resumed from its last step's
        checkpoint (evaluated now: no step is left to report it)."""
        s = self.session
        if s.step == 0:
            return s.run.before.get(self.metric.removeprefix("eval/"))
        return s.run.trainer.held_out(s.setup.eval).get(self.metric)

    def _end(self, status: str) -> None:
        s = self.session
        write_status(s.run_dir, status=status, trial_id=self.trial_id, values=self.values, step=s.step,
                     objective=self.result.get(OBJECTIVE_KEY), metric=self.metric, train_seconds=s.seconds,
                     **({"error": self.error} if self.error else {}))
        self.ended = read_status(s.run_dir)

    def cleanup(self) -> None:
        """Stopped before the end (the scheduler, or an error): a checkpoint at the last step run, the status, the
        metrics closed; then the run's actors are killed so the trial's resources are free."""
        s = self.session
        if s is None:
            return
        try:
            if self.ended is None:
                s.run.trainer.pipeline.close()
                if not self.error and s.step > 0 and not checkpoint_dir(s.run_dir, s.step).exists():
                    s.save(s.step)
                self._end("failed" if self.error else "stopped")
        finally:
            s.log.close()
            from rlpost.metrics import plot_run

            plot_run(s.run_dir / "metrics.jsonl", s.run_dir / "metrics.png", s.run_dir / "sampler_weights.png")
            s.cluster.close()

