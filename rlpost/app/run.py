"""One training run end to end: check (rlpost/app/prepare.py), start the actors (actors/build.py), evaluate, then
the step loop — one `Trainer.step`, its metrics logged, a checkpoint when due — with a progress bar, evaluate, save.

Ray and the actor classes are imported lazily, so `rlpost --help` stays fast. Resumes from checkpoints
(rlpost/checkpoint.py) when checkpoint.resume is set; SIGTERM checkpoints after the step in flight and stops.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlpost import checkpoint as checkpoints
from rlpost.allocators import make_allocator
from rlpost.app.prepare import Setup, prepare
from rlpost.config import RootConfig
from rlpost.loop import Trainer, probe_diff
from rlpost.metrics import MetricsLog, accuracy_table, plot_run
from rlpost.prepass import accuracy_only, rif_filter
from rlpost.recipes import to_yaml
from rlpost.rollouts import Rollouts, run_columns
from rlpost.sampling import make_sampler
from rlpost.types import LearnerGroup, Prompt, Workers

if TYPE_CHECKING:
    from actors.build import Cluster


class RunStopped(RuntimeError):
    """An actor that cannot be replaced (a learner rank) died; the message names the last checkpoint."""


@dataclass
class RunResult:
    run_dir: Path
    before: dict[str, float]
    after: dict[str, float]
    steps: int
    train_seconds: float
    stopped_by_signal: bool = False  # SIGTERM: checkpointed and stopped before run.steps; the CLI exits 143


def active_loggers(config: RootConfig) -> list[str]:
    """run.loggers, less TensorBoard when run.tensorboard is false (the older switch)."""
    return [name for name in config.run.loggers if config.run.tensorboard or name != "tensorboard"]


def flat_config(config: RootConfig) -> dict[str, Any]:
    """The resolved recipe as dotted keys (what W&B and MLflow show as the run's config)."""
    from omegaconf import OmegaConf

    from rlpost.rundir import flatten

    tree = OmegaConf.to_container(OmegaConf.create(to_yaml(config)))
    return flatten({str(k): v for k, v in tree.items()}) if isinstance(tree, dict) else {}


def make_run_dir(config: RootConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(config.run.output_dir) / f"{config.run.name}-{stamp}"
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = Path(config.run.output_dir) / f"{config.run.name}-{stamp}-{suffix}"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(to_yaml(config))
    return run_dir


def train(config: RootConfig) -> RunResult:
    """Run the recipe; prints one line per step, the before/after table, and returns where the outputs are."""
    session = Session(config)
    try:
        try:
            stopped = session.advance(config.run.steps)
        finally:
            session.run.trainer.pipeline.close()  # a batch collected ahead past a stop is dropped (a checkpoint
            # has its own)
        if stopped:  # by SIGTERM, with a checkpoint: no final eval or weights, the run is not over
            return RunResult(session.run_dir, accuracy_only(session.run.before), {}, session.step, session.seconds,
                             stopped_by_signal=True)
        after = session.finish()
    finally:
        session.log.close()
    run_dir = session.run_dir
    plot_run(run_dir / "metrics.jsonl", run_dir / "metrics.png", run_dir / "sampler_weights.png")
    from rlpost.report import report

    png, _ = report([run_dir])
    print(f"[rlpost] trained {session.step} steps in {session.seconds:.0f}s; metrics: {run_dir / 'metrics.jsonl'}; "
          f"dashboard: {png} (rlpost report RUN_DIR [RUN_DIR ...] compares runs)", flush=True)
    return RunResult(run_dir, accuracy_only(session.run.before), after, session.step, session.seconds)


class Session:
    """A run whose actors are up and whose step 0 (or checkpoint) is in place, ready to train: `train` takes it to
    run.steps in one go, a sweep trial (rlpost/app/trial.py) eval by eval, so that it can be stopped between."""

    def __init__(self, config: RootConfig) -> None:
        self.config = config
        self.setup = prepare(config)
        for note in self.setup.notes:
            print(f"[rlpost] {note}", flush=True)
        self.run_dir, resume = _run_dir(config)
        self.cluster = _start_cluster(config, self.setup, self.run_dir)
        self.log = MetricsLog(self.run_dir, active_loggers(config),
                              purge_step=resume["step"] + 1 if resume else None, config=flat_config(config))
        try:
            self.run = (_restore(config, self.cluster, self.setup, resume) if resume
                        else _first_step(config, self.cluster, self.setup, self.log))
        except BaseException:
            self.log.close()
            raise
        self.step: int = resume["step"] if resume else 0
        self.seconds = 0.0

    def save(self, step: int) -> Path:
        """A complete checkpoint of the run at `step` (rlpost/checkpoint.py)."""
        return checkpoints.save(self.run_dir, step, self.cluster.learner, self.run.driver_state(),
                                self.config.checkpoint.keep_last, self.config.checkpoint.save_merged)

    def advance(self, until: int, on_step: Callable[[int, dict[str, float]], None] | None = None) -> bool:
        """Train up to step `until` (at most run.steps); True when SIGTERM stopped it early with a checkpoint."""
        from actors.calls import ActorDiedError

        try:
            self.step, seconds, stopped = _train_loop(self.config, self.run.trainer, self.log, self.setup.eval,
                                                      self.step, self.save, until, on_step)
        except ActorDiedError as err:  # engines and reward workers are replaced; a learner rank cannot be
            done = checkpoints.complete_checkpoints(self.run_dir)
            where = f"the last checkpoint is {done[-1]}" if done else "there is no checkpoint (set checkpoint.every)"
            raise RunStopped(f"{err}\nThe run stopped; {where}. Continue it with the same command plus "
                             "`resume=auto`.") from None
        self.seconds += seconds
        return stopped

    def finish(self) -> dict[str, float]:
        """The eval after training, eval.json and the final weights (`_finish`)."""
        return _finish(self.config, self.run, self.cluster.learner, self.setup.eval, self.run_dir)


@dataclass
class Started:
    """A run ready for its next step: the trainer, the prompts it trains on (after the RIF filter) and the eval
    before training."""

    trainer: Trainer
    prompts: list[Prompt]
    before: dict[str, float]

    def driver_state(self) -> dict[str, Any]:
        """What a checkpoint keeps besides the learner: sampler and allocator state, prompts, the first eval, the
        policy version and the batches collected ahead of their step (off sync)."""
        return {"sampler": self.trainer.sampler.state_dict(), "allocator": self.trainer.allocator.state_dict(),
                "prompt_uids": [p.uid for p in self.prompts], "before": self.before,
                "policy_version": self.trainer.version, "pending": self.trainer.pipeline.state_dict(),
                "partial": partial.state_dict() if (partial := self.trainer.collector.partial) else [],
                "plan": self.trainer.collector.plan_state(),
                "memory": memory.state_dict() if (memory := self.trainer.collector.memory) else {}}


def _run_dir(config: RootConfig) -> tuple[Path, dict[str, Any] | None]:
    """The run directory and, when resuming, the driver state of the checkpoint to resume from."""
    found = checkpoints.find_resume(config) if config.checkpoint.resume else None
    if config.checkpoint.resume and found is None:
        print(f"[rlpost] resume=auto: no run directory {config.run.output_dir}/{config.run.name}-* has a complete "
              "checkpoint; starting fresh", flush=True)
    resume: dict[str, Any] | None = None
    if found is not None:
        run_dir, checkpoint = found
        checkpoints.check_same_recipe(run_dir, config)
        resume = {**checkpoints.load_driver_state(checkpoint), "path": checkpoint}
        checkpoints.truncate_metrics(run_dir, resume["step"])
        print(f"[rlpost] resuming {run_dir} from {checkpoint.name}", flush=True)
    else:
        run_dir = make_run_dir(config)
    print(f"[rlpost] run directory: {run_dir}", flush=True)
    return run_dir, resume


def _start_cluster(config: RootConfig, setup: Setup, run_dir: Path) -> Cluster:
    """Ray, the actors and the weight sync (actors/build.py); where each role landed goes to placement.json."""
    from actors.build import start_cluster
    from actors.placement import placement_report

    started = time.perf_counter()
    cluster = start_cluster(config, setup.model_path, setup.env.settings if setup.env else None)
    print(f"[rlpost] actors ready in {time.perf_counter() - started:.0f}s "
          f"({config.rollout.num_engines} vLLM engine(s), {config.learner.world_size} DeepSpeed rank(s) "
          f"ZeRO-{config.learner.zero_stage}, {config.reward.num_workers} reward worker(s), "
          f"sync={cluster.transport})", flush=True)
    nodes = placement_report(cluster.placements)
    (run_dir / "placement.json").write_text(json.dumps(nodes, indent=2))
    if len({n for ids in nodes.values() for n in ids}) > 1:
        print("[rlpost] placement: " + ", ".join(f"{role} on node {'/'.join(sorted({n[:8] for n in ids}))}"
                                                for role, ids in nodes.items()), flush=True)
    return cluster


def make_rollouts(config: RootConfig, workers: Workers, setup: Setup) -> Rollouts:
    """The run's generate-and-score path: single completions, or episodes when the recipe has environments."""
    if setup.env is None:
        return Rollouts(config, workers.rollout, workers.reward)
    from rlpost.app.environments import episode_rollouts

    return episode_rollouts(config, workers.rollout, workers.reward, setup.env, setup.tokenizer)


def _probe_sequences(config: RootConfig, setup: Setup) -> list[list[int]]:
    """The fixed sequences whose vLLM and learner logprobs are compared after every sync."""
    return [p.token_ids + [setup.tokenizer.eos_token_id] for p in setup.train[: config.sync.probe_sequences]]


def _first_step(config: RootConfig, cluster: Cluster, setup: Setup, log: MetricsLog) -> Started:
    """A fresh run's step 0: the sync probe, the RIF filter, the sampler, the eval before training."""
    workers, probe = cluster.workers, _probe_sequences(config, setup)
    rollouts = make_rollouts(config, workers, setup)
    prompts, first = setup.train, {"sync/probe_max_abs_diff": probe_diff(workers.rollout, workers.learner, probe)}
    if config.sampler.rif_k:
        prompts, rif_metrics = _rif_filter(config, rollouts, prompts)
        first.update(rif_metrics)
    sampler = make_sampler(config.sampler, prompts, config.algorithm.prompts_per_step, config.run.seed)
    trainer = Trainer(config, workers, sampler, rollouts=rollouts, probe_sequences=probe)
    log.log(0, first)
    before: dict[str, float] = {}
    if setup.eval:  # with a curve (run.eval_every), its step 0 is both evals, as every later point
        before = ({k[5:]: v for k, v in trainer.held_out(setup.eval).items()} if config.run.eval_every
                  else trainer.evaluate(setup.eval))
    _print_eval("before training", accuracy_only(before))
    return Started(trainer, prompts, before)


def _restore(config: RootConfig, cluster: Cluster, setup: Setup, state: dict[str, Any]) -> Started:
    """Put a resumed run back where its checkpoint left it: learner state (then into vLLM), the training prompts,
    sampler and allocator state, the eval before training."""
    cluster.learner.load_state(str(state["path"] / "learner"))
    cluster.workers.weight_sync.sync()
    by_uid = {p.uid: p for p in setup.train}
    missing = [u for u in state["prompt_uids"] if u not in by_uid]
    if missing:
        raise checkpoints.ResumeError(f"the checkpoint trains on {len(missing)} prompt(s) this data no longer has "
                                      f"(first uid {missing[0]}); resume with the same data")
    kept = [by_uid[u] for u in state["prompt_uids"]]
    sampler = make_sampler(config.sampler, kept, config.algorithm.prompts_per_step, config.run.seed)
    sampler.load_state_dict(state["sampler"])
    allocator = make_allocator(config.allocator, config.rollout.samples_per_prompt)
    allocator.load_state_dict(state["allocator"])
    trainer = Trainer(config, cluster.workers, sampler, allocator=allocator,
                      rollouts=make_rollouts(config, cluster.workers, setup), probe_sequences=_probe_sequences(config,
                                                                                                              setup))
    trainer.version = state.get("policy_version", 0)
    trainer.pipeline.load_state_dict(state.get("pending", []), by_uid)
    if trainer.collector.partial is not None:
        trainer.collector.partial.load_state_dict(state.get("partial", []), by_uid)
    trainer.collector.load_plan(state.get("plan", []), by_uid)
    if trainer.collector.memory is not None and state.get("memory"):
        trainer.collector.memory.load_state_dict(state["memory"])
    return Started(trainer, kept, state["before"])


def _finish(config: RootConfig, run: Started, learner: LearnerGroup, evaluation: list[Prompt],
            run_dir: Path) -> dict[str, float]:
    """The eval after training, eval.json, the before/after table and the final Hugging Face checkpoint."""
    after = accuracy_only(run.trainer.evaluate(evaluation)) if evaluation else {}
    _print_eval("after training", after)
    before = accuracy_only(run.before)
    (run_dir / "eval.json").write_text(json.dumps({"before": before, "after": after, "before_all": run.before},
                                                  indent=2))
    if before:
        print("\nheld-out greedy accuracy\n" + accuracy_table(before, after), flush=True)
    if config.run.save_final:
        final = run_dir / "final"
        learner.save_hf(str(final), config.checkpoint.save_merged)
        what = "LoRA adapter (PEFT)" if config.model.lora_rank else "Hugging Face checkpoint"
        print(f"[rlpost] {what}: {final}", flush=True)
    return after


def _rif_filter(config: RootConfig, rollouts: Rollouts, prompts: list[Prompt]) -> tuple[list[Prompt],
                                                                                          dict[str, float]]:
    """RIF-RFT pass with a progress bar; stops with a clear error when no prompt survives."""
    from tqdm import tqdm

    cfg = config.sampler
    bar = tqdm(total=len(prompts), desc=f"RIF filter ({cfg.rif_k} rollouts/prompt)", unit="prompt",
               disable=not config.run.progress_bar, file=sys.stderr, dynamic_ncols=True)
    kept, metrics = rif_filter(rollouts, prompts, run_columns(config, 0), cfg.rif_k, cfg.success_threshold,
                               cfg.rif_drop_all_correct, progress=bar.update)
    bar.close()
    cells = ", ".join(f"{k.rsplit('/', 1)[1]} {100 * v:.0f}%" for k, v in metrics.items())
    print(f"[rlpost] RIF filter kept {len(kept)} of {len(prompts)} prompts ({cells})", flush=True)
    if not kept:
        raise RuntimeError(f"the RIF filter (sampler.rif_k={cfg.rif_k}) dropped every training prompt: no prompt "
                           f"had a rollout scoring at least sampler.success_threshold={cfg.success_threshold}")
    return kept, metrics


def _train_loop(config: RootConfig, trainer: Trainer, log: MetricsLog, eval_prompts: list[Prompt], first_step: int,
                save: Callable[[int], Path], until: int | None = None,
                on_step: Callable[[int, dict[str, float]], None] | None = None) -> tuple[int, float, bool]:
    """Steps first_step+1 .. min(until, run.steps) (until None: run.steps), each one's metrics also to `on_step`;
    checkpoints every checkpoint.every steps, and on SIGTERM after the step in flight, then stops. Returns (last
    step, seconds, whether SIGTERM stopped the run)."""
    import signal

    from tqdm import tqdm

    from actors.runtime import injected_fault

    start = time.perf_counter()
    limit = config.run.max_train_minutes * 60
    bar = tqdm(total=config.run.steps, initial=first_step, desc="train", unit="step",
               disable=not config.run.progress_bar, file=sys.stderr, dynamic_ncols=True)
    stop: list[int] = []
    if config.checkpoint.on_sigterm:
        signal.signal(signal.SIGTERM, lambda signum, frame: stop.append(signum))
    step = first_step
    for step in range(first_step + 1, min(until or config.run.steps, config.run.steps) + 1):
        metrics = trainer.step(step)
        if config.run.eval_every and step % config.run.eval_every == 0 and eval_prompts:
            metrics.update(trainer.held_out(eval_prompts))
        log.log_samples(step, trainer.samples)
        log.log(step, metrics)  # written and flushed: a reader sees the whole step
        if on_step is not None:
            on_step(step, metrics)
        injected_fault("driver.step_done")  # resilience tests stop the driver here, so a kill lands after this step
        bar.update(1)
        bar.set_postfix(reward=f"{metrics['reward/mean']:.3f}", step_s=f"{metrics['time/step']:.1f}")
        tqdm.write(_step_line(step, metrics), file=sys.stdout)
        if "eval/mean" in metrics:
            tqdm.write(f"[rlpost] held-out accuracy at step {step}: greedy {100 * metrics['eval/mean']:.1f}%, "
                       f"sampled {100 * metrics.get('eval/sampled/mean', float('nan')):.1f}% "
                       f"(± {100 * metrics.get('eval/sampled/se/mean', float('nan')):.1f} s.e.)", file=sys.stdout)
        every = config.checkpoint.every
        if (every and step % every == 0) or stop:
            path = save(step)
            tqdm.write(f"[rlpost] checkpoint: {path}", file=sys.stdout)
        if stop:
            tqdm.write(f"[rlpost] SIGTERM: stopped after step {step} with a checkpoint; continue with "
                       f"`rlpost train ... resume=auto`", file=sys.stdout)
            bar.close()
            return step, time.perf_counter() - start, True
        if limit and time.perf_counter() - start > limit:
            tqdm.write(f"[rlpost] run.max_train_minutes={config.run.max_train_minutes} reached after step {step}")
            break
    bar.close()
    return step, time.perf_counter() - start, False


def _step_line(step: int, m: dict[str, float]) -> str:
    """One console line per step; a step whose groups were all dropped has no train or sync numbers (nan)."""
    def g(key: str) -> float:
        return m.get(key, float("nan"))

    dropped = f" ({g('groups/dropped'):.0f} dropped)" if m.get("groups/dropped") else ""
    errors = f" ({g('reward_health/errors'):.0f} errors)" if m.get("reward_health/errors") else ""
    return (f"step {step:4d} | reward {g('reward/mean'):.3f} | acc {g('acc/mean'):.3f} | "
            f"groups {g('groups/kept'):.0f}{dropped} | zero-signal {g('adv/zero_signal_group_frac'):.2f} | "
            f"clip {g('train/clip_frac'):.3f} | mismatch {g('train/logprob_mismatch_mean'):.1e} | "
            f"gen {g('time/generate'):.1f}s reward {g('time/reward'):.1f}s{errors} train {g('time/train'):.1f}s "
            f"sync {g('time/sync'):.1f}s | probe {g('sync/probe_max_abs_diff'):.1e}")


def _print_eval(label: str, accuracy: dict[str, float]) -> None:
    if accuracy:
        cells = ", ".join(f"{k} {100 * v:.1f}%" for k, v in accuracy.items())
        print(f"[rlpost] held-out greedy accuracy {label}: {cells}", flush=True)
