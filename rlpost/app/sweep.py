"""`rlpost sweep RECIPE SPACE.yaml`: every point of a search space trained as a Ray Tune trial on one Ray cluster,
with early stopping (sweep.scheduler), then a summary.

Each trial asks Tune for the recipe's whole placement (one bundle for its driver, then every role's bundles, as
actors/placement.py `trial_bundles` lays them out), so trials queue while the cluster is full; a local cluster
started here holds one trial unless resources.local_num_cpus says more. Everything lands in one sweep directory:
`tune/` (Tune's experiment state, which a rerun of the same command restores after the driver died), `trials/` (one
normal run directory per trial), `scheduler.json` (the LC-PFN scheduler's curves and decisions) and the summary.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune

from actors.runtime import injected_fault
from rlpost.config import RecipeError, RootConfig, SweepConfig
from rlpost.sweep.pfn import Extrapolator, PFNSettings, ensure_pfn
from rlpost.sweep.records import check_same_sweep
from rlpost.sweep.scheduler import OBJECTIVE_KEY, TIME_KEY
from rlpost.sweep.space import SearchSpace, load_space


@dataclass
class SweepPlan:
    recipe: str
    overrides: tuple[str, ...]
    config: RootConfig  # the recipe with the overrides (each trial adds its values)
    space: SearchSpace
    sweep_dir: Path


def plan_sweep(recipe: str, space_path: str, overrides: list[str], out: str | None = None) -> SweepPlan:
    """Load and check the recipe and the space; refuse settings a sweep cannot use, naming the key."""
    from rlpost.recipes import load_config

    config = load_config(recipe, overrides)
    run, cfg = config.run, config.sweep
    if not run.eval_every:
        raise RecipeError(f"{recipe}: a sweep needs run.eval_every > 0 (the held-out curve that drives stopping)")
    if run.steps % run.eval_every:
        raise RecipeError(f"{recipe}: a sweep needs run.steps ({run.steps}) to be a multiple of run.eval_every "
                          f"({run.eval_every}), so every trial's last step has an eval")
    if not cfg.metric.startswith("eval/"):
        raise RecipeError(f"{recipe}: sweep.metric {cfg.metric!r} must be a held-out metric (eval/...), e.g. "
                          "eval/sampled/mean or eval/mean")
    space = load_space(space_path, recipe, overrides)
    sweep_dir = Path(out) if out else Path(run.output_dir) / f"sweep-{run.name}"
    return SweepPlan(recipe, tuple(overrides), config, space, sweep_dir.resolve())


def run_sweep(plan: SweepPlan) -> dict[str, Any]:
    """Run (or restore and finish) the sweep; returns the summary (rlpost/sweep/summary.py)."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from actors.build import actor_roles
    from actors.placement import init_ray, trial_bundles
    from actors.runtime import actor_env_vars, configure_process_env
    from rlpost.app.prepare import prepare
    from rlpost.app.trial import RlpostTrial
    from rlpost.pipeline import rollout_lag
    from rlpost.sweep.scheduler import make_scheduler
    from rlpost.sweep.summary import summarise

    config, cfg = plan.config, plan.config.sweep
    started = time.perf_counter()
    prepare(config)  # data, plugins, model (built once here, not by every trial), before Tune starts anything
    extra: dict[str, Any] = {}
    if cfg.scheduler == "lcpfn":  # trained once (minutes) before the trials, not inside Tune's loop
        where, settings = pfn_location(pfn_settings(cfg))
        extra["lcpfn"] = {**ensure_pfn(where, settings).report, "cache": str(where)}
    configure_process_env()
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # JSON and CSV only, no TensorBoardX
    roles = actor_roles(config)
    init_ray(config.resources, roles, {"env_vars": actor_env_vars(rollout_lag(config) > 0)})
    plan.sweep_dir.mkdir(parents=True, exist_ok=True)
    check_same_sweep(plan.sweep_dir, {"recipe": plan.recipe, "overrides": list(plan.overrides),
                                      "space": {d.key: [d.kind, list(d.values)] for d in plan.space.dims}})
    trials_dir = plan.sweep_dir / "trials"
    trainable = tune.with_resources(
        tune.with_parameters(RlpostTrial, recipe=plan.recipe, overrides=plan.overrides, trials_dir=str(trials_dir)),
        tune.PlacementGroupFactory(trial_bundles(roles), strategy=config.resources.strategy))
    path = plan.sweep_dir / "tune"
    if tune.Tuner.can_restore(str(path)):
        print(f"[sweep] restoring {path}: finished trials stay, unfinished ones resume from their checkpoints",
              flush=True)
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, restart_errored=True)
    else:
        tuner = tune.Tuner(
            trainable, param_space=plan.space.tune_space(),
            tune_config=tune.TuneConfig(
                num_samples=cfg.num_samples, max_concurrent_trials=cfg.max_concurrent or None,
                scheduler=make_scheduler(cfg, config.run.steps, config.run.eval_every,
                                         plan.sweep_dir / "scheduler.json", pfn_location(pfn_settings(cfg))),
                search_alg=BasicVariantGenerator(random_state=cfg.seed)),
            run_config=tune.RunConfig(
                name="tune", storage_path=str(plan.sweep_dir), verbose=0,
                callbacks=[Progress(), JsonLoggerCallback(), CSVLoggerCallback()],
                failure_config=tune.FailureConfig(max_failures=0),
                checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False)))
    extra["setup_seconds"] = round(time.perf_counter() - started, 1)  # checks, and the extrapolator on first use
    started = time.perf_counter()
    tuner.fit()
    summary = summarise(plan.sweep_dir, cfg.metric, cfg.scheduler, config.run.steps, time.perf_counter() - started,
                        extra)
    print((plan.sweep_dir / "summary.md").read_text(), flush=True)
    print(f"[sweep] summary: {plan.sweep_dir / 'summary.md'}, curves: {plan.sweep_dir / 'curves.png'}", flush=True)
    return summary


def pfn_settings(cfg: SweepConfig) -> PFNSettings:
    """The extrapolator the recipe asks for: the default network, with its prior's share of falling curves."""
    return PFNSettings(falling=cfg.lcpfn_falling)


def pfn_location(settings: PFNSettings) -> tuple[Path, PFNSettings]:
    """Where the extrapolator with these settings is cached: beside the embedded base models, a folder per
    settings."""
    from actors.runtime import cache_dir

    return cache_dir() / "lcpfn" / settings.fingerprint(), settings


def cached_extrapolator(settings: PFNSettings | None = None) -> Extrapolator:
    """The extrapolator the lcpfn scheduler uses, trained from its prior on first use (a few minutes) and cached."""
    return ensure_pfn(*pfn_location(settings or PFNSettings()))


class Progress(tune.Callback):
    """One line per trial report and ending. The named fault point 'sweep.trial_done' lets a test kill the sweep's
    driver right after a trial ended (actors/runtime.py injected_fault)."""

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        if result.get(OBJECTIVE_KEY) is not None:
            print(f"[sweep] {trial.trial_id} step {result[TIME_KEY]}: {result[OBJECTIVE_KEY]:.3f}", flush=True)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        left = sum(t.status in ("PENDING", "RUNNING") for t in trials if t is not trial)
        print(f"[sweep] {trial.trial_id} ended; {left} trial(s) to go", flush=True)
        injected_fault("sweep.trial_done")
