"""Batches generated ahead of the step that trains on them: `rollout.mode` (sync, one_step_off, async).

With a lag of k policy versions (sync 0, one_step_off 1, async `rollout.max_staleness`), step t trains on a batch
the engines generated with the weights after step t-1-k (the start weights for the first k+1 steps). The schedule is
fixed, not a race: at step t, after the advantages and the sampler's update, the driver queues step t's training on
the learner ranks, then collects step t+k in a background thread while they train, joins it, and only then syncs the
new weights into the engines. So the draws, the seeds and the weights of every batch are the same on every run and
after a resume, and a lag of 0 is the synchronous loop itself, call for call. Lags:
- the sampler draws step s's prompts after its update from step s-k (sync: s-1; one_step_off: also s-1);
- an allocator that learns from rollouts updates as each batch is scored (in the background);
- learner calls the background collection makes (GVM's gradient norms, KL-in-reward) queue behind the step's
  training on every rank, so they see the weights after step t (Ray runs one submitter's calls to an actor in
  submission order, and the driver process is one submitter whichever thread calls; rlpost's actors never retry).
The first k batches are collected before step 1 trains, with the start weights. A checkpoint stores the batches
collected ahead (`state_dict`), so a resumed run trains on exactly the rollouts the interrupted run had generated.
A single thread does the background work: the driver never has two collections in flight.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from rlpost.collect import Collector, StepBatch
from rlpost.config import RootConfig
from rlpost.metrics import PhaseTimer
from rlpost.records import decode_group, encode_group
from rlpost.types import Prompt


def rollout_lag(config: RootConfig) -> int:
    """Policy versions between the weights that generate a step's batch and the weights that train on it."""
    mode = config.rollout.mode
    if mode == "sync":
        return 0
    if mode == "one_step_off":
        return 1
    if mode == "async":
        return config.rollout.max_staleness
    raise ValueError(f"rollout.mode={mode!r} has no schedule in rlpost/pipeline.py")


class Pipeline:
    """The batches collected ahead of training, and the one collection running in the background."""

    def __init__(self, collector: Collector, lag: int, last_step: int) -> None:
        self.collector, self.lag, self.last_step = collector, lag, last_step
        self.ready: dict[int, StepBatch] = {}
        self.generate_s = 0.0  # engine seconds spent generating since the last `take` (for the idle fraction)
        self._future: Future[StepBatch] | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="rlpost-collect") if lag else None

    def take(self, step: int, timer: PhaseTimer) -> StepBatch:
        """Step `step`'s batch. One not collected ahead (sync, the run's first steps) is collected now, with the
        engines' weights; before the first launch the next lag-1 batches are collected too (phases timed apart)."""
        self.generate_s = 0.0
        if step not in self.ready:
            self.ready[step] = self._collect(step, timer)
        for ahead in range(step + 1, min(step + self.lag, self.last_step + 1)):
            if ahead not in self.ready:
                self.ready[ahead] = self._collect(ahead, PhaseTimer())
        return self.ready.pop(step)

    def launch(self, step: int) -> None:
        """Start collecting step + lag in the background (a no-op in sync mode and past the run's last step)."""
        target = step + self.lag
        if self._pool is None or target > self.last_step or target in self.ready:
            return
        self._future = self._pool.submit(self._collect, target, PhaseTimer())

    def join(self) -> None:
        """Wait for the background collection; its errors (a reward error rate, a dead actor) surface here."""
        if self._future is not None:
            future, self._future = self._future, None
            batch = future.result()
            self.ready[batch.step] = batch

    def close(self) -> None:
        """Stop the background thread once its collection (if any) ends; nothing is collected after this."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _collect(self, step: int, timer: PhaseTimer) -> StepBatch:
        batch = self.collector.collect(step, timer)
        batch.timing = {key: value for key, value in timer.seconds.items()}
        self.generate_s += timer.seconds.get("time/generate", 0.0)
        return batch

    def state_dict(self) -> list[dict[str, Any]]:
        """The batches collected ahead, as JSON-ready records (a checkpoint's `pending`); nothing may be in flight."""
        if self._future is not None:
            raise RuntimeError("a checkpoint was asked for while a batch was still being collected")
        return [encode_batch(self.ready[step]) for step in sorted(self.ready)]

    def load_state_dict(self, records: list[dict[str, Any]], prompts: dict[int, Prompt]) -> None:
        self.ready = {record["step"]: decode_batch(record, prompts) for record in records}


def encode_batch(batch: StepBatch) -> dict[str, Any]:
    """A collected batch as JSON-ready data (rlpost/records.py); `kept` as indices into `generated`."""
    index = {id(g): i for i, g in enumerate(batch.generated)}
    return {"step": batch.step, "budget": batch.budget, "run": batch.run, "rounds": batch.rounds,
            "completions": batch.completions, "tokens": batch.tokens, "metrics": batch.metrics,
            "health": batch.health, "timing": batch.timing, "kept": [index[id(g)] for g in batch.kept],
            "generated": [encode_group(g) for g in batch.generated]}


def decode_batch(record: dict[str, Any], prompts: dict[int, Prompt]) -> StepBatch:
    """What `encode_batch` wrote, with each group's prompt found by uid among the run's training prompts."""
    generated = [decode_group(g, prompts) for g in record["generated"]]
    return StepBatch(step=record["step"], budget=record["budget"], run=record["run"],
                     kept=[generated[i] for i in record["kept"]], generated=generated, rounds=record["rounds"],
                     completions=record["completions"], tokens=record["tokens"], metrics=record["metrics"],
                     health=record["health"], timing=record["timing"])
