"""One training run end to end: validate, start actors, evaluate, train with a progress bar, evaluate, save.

Everything that can be checked before actors start is checked first (recipe, data, reward plugins, resources),
so a mistake costs seconds. Ray and the actor classes are imported lazily: `rlpost` imports without them.
Resumes from checkpoints (rlpost/checkpoint.py) when checkpoint.resume is set.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlpost import checkpoint as checkpoints
from rlpost.config import RecipeError, RootConfig, to_yaml
from rlpost.data import DataError, load_rows, per_source, to_prompts
from rlpost.metrics import MetricsLog, accuracy_table, plot_run
from rlpost.recipe_checks import check_against_data
from rlpost.sampling import make_sampler


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


def resolve_model_path(config: RootConfig) -> str:
    """'embedded' builds (or reuses) the tiny base model in the cache; anything else is passed through."""
    if config.model.path != "embedded":
        return config.model.path
    from actors.runtime import cache_dir
    from rlpost.embedded.model import ensure_base_model

    return str(ensure_base_model(cache_dir() / "base_model"))


def resolve_transport(config: RootConfig) -> str:
    from actors.runtime import has_cuda

    if config.sync.transport != "auto":
        return config.sync.transport
    return "nccl" if has_cuda() and config.resources.rollout_gpus > 0 else "cpu"


def prepare(config: RootConfig) -> dict[str, Any]:
    """Everything short of starting actors: model files, tokenizer, data, reward plugins (loaded and checked in a
    child process, with a time limit: plugin code never runs in the driver). `notes` holds the plugins' check-hook
    notes, for `rlpost validate` and the start of `train`."""
    from transformers import AutoTokenizer

    model_path = resolve_model_path(config)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=config.model.trust_remote_code)
    except (OSError, ValueError) as err:
        raise DataError(f"model.path {model_path!r}: cannot load its tokenizer: {str(err).splitlines()[0]}") from None
    check_vocabulary(model_path, tokenizer, config.model.trust_remote_code)
    train = to_prompts(load_rows(config.data, config.data.train_split), config.data, tokenizer, "train")
    evaluation = []
    if config.data.eval_split:
        rows = load_rows(config.data, config.data.eval_split)
        evaluation = per_source(to_prompts(rows, config.data, tokenizer, config.data.eval_split),
                                config.data.n_eval_per_source)
    check_prompt_forms([(config.data.train_split, train), (config.data.eval_split, evaluation)])
    for warning in check_against_data(config, train, evaluation):  # what cannot work raises RecipeError
        print(f"[rlpost] warning: {warning}", file=sys.stderr, flush=True)
    splits = {config.data.train_split: prompt_columns(train)}
    if evaluation and config.data.eval_split != config.data.train_split:
        splits[config.data.eval_split] = prompt_columns(evaluation)
    notes = check_reward_plugins(config, splits)
    try:
        make_sampler(config, train, config.run.seed)  # a mixture or stage naming a missing source fails here
    except ValueError as err:
        raise RecipeError(f"sampler section: {err}") from None
    return {"model_path": model_path, "tokenizer": tokenizer, "train": train, "eval": evaluation, "notes": notes}


def run_columns(config: RootConfig) -> list[str]:
    """The run columns this recipe gives reward functions (length_budget only with a length-budget curriculum)."""
    from rewards import RUN_COLUMNS

    return [c for c in RUN_COLUMNS if c != "length_budget" or config.sampler.budget_initial]


def check_reward_plugins(config: RootConfig, splits: dict[str, dict[str, list[Any]]] | None) -> list[str]:
    """Load and check the recipe's reward plugins in a child process (actors/plugin_process.py) against these
    splits' columns (None: not known, offline); returns their check hooks' notes. The child gets no
    reward.memory_mb limit: it holds every row of the data, which a limit sized for scoring calls need not fit."""
    from actors import plugin_process

    args = {name: dict(value) for name, value in dict(config.reward.args).items()}
    return plugin_process.check_plugins(list(config.reward.functions), args, splits, run_columns(config),
                                        timeout_s=max(config.reward.timeout_s, plugin_process.LOAD_TIMEOUT_S))


def prompt_columns(prompts: list) -> dict[str, list[Any]]:
    """A split's dataset columns as reward functions see them: column -> one value per row, every row."""
    return {key: [p.columns.get(key) for p in prompts] for key in prompts[0].columns} if prompts else {}


def check_prompt_forms(splits: list[tuple[str, list]]) -> None:
    """Refuse data that mixes chat-message and plain-text prompts: reward functions get one form or the other
    (rewards/protocol.py), and TRL's functions index `completion[0]["content"]` on every completion."""
    rows = [(split, p.uid, p.messages is not None) for split, prompts in splits for p in prompts]
    chat = [(split, uid) for split, uid, is_chat in rows if is_chat]
    plain = [(split, uid) for split, uid, is_chat in rows if not is_chat]
    if chat and plain:
        raise DataError(f"the data mixes chat-message prompts (split {chat[0][0]!r} row {chat[0][1]}, {len(chat)} in "
                        f"all) and plain-text prompts (split {plain[0][0]!r} row {plain[0][1]}, {len(plain)} in all); "
                        "reward functions get one form per run: give every prompt as text or every prompt as a "
                        "message list")


def check_vocabulary(model_path: str, tokenizer: Any, trust_remote_code: bool = False) -> None:
    """A tokenizer whose ids run past the model's embedding rows would crash (or silently wrap) mid-run: refuse it."""
    from transformers import AutoConfig

    try:
        rows = getattr(AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code), "vocab_size", None)
    except (OSError, ValueError) as err:
        raise DataError(f"model.path {model_path!r}: cannot read its config: {str(err).splitlines()[0]}") from None
    if rows is not None and len(tokenizer) > rows:
        raise DataError(f"model.path {model_path!r}: its tokenizer has {len(tokenizer)} tokens but the model's "
                        f"embedding has {rows} rows, so token ids >= {rows} have no embedding; use the tokenizer "
                        "saved with the model")


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
    setup = prepare(config)
    for note in setup["notes"]:
        print(f"[rlpost] {note}", flush=True)
    run_dir, resume = _run_dir(config)
    from actors.calls import ActorDiedError

    trainer, learner = _start_actors(config, setup, run_dir)
    log = MetricsLog(run_dir, config.run.tensorboard, purge_step=resume["step"] + 1 if resume else None)
    try:
        if resume:
            train_prompts, before = _restore(config, trainer, learner, setup["train"], resume)
        else:
            train_prompts, before = _first_step(config, trainer, log, setup)

        def save(step: int) -> Path:
            state = {"sampler": trainer.sampler.state_dict(), "allocator": trainer.allocator.state_dict(),
                     "prompt_uids": [p.uid for p in train_prompts], "before": before}
            return checkpoints.save(run_dir, step, learner, state, config.checkpoint.keep_last)

        try:
            steps, seconds, stopped = _train_loop(config, trainer, log, setup["eval"], resume["step"] if resume else 0,
                                                  save)
        except ActorDiedError as err:  # engines and reward workers are replaced; a learner rank cannot be
            done = checkpoints.complete_checkpoints(run_dir)
            where = f"the last checkpoint is {done[-1]}" if done else "there is no checkpoint (set checkpoint.every)"
            raise RunStopped(f"{err}\nThe run stopped; {where}. Continue it with the same command plus "
                             "`resume=auto`.") from None
        if stopped:  # by SIGTERM, with a checkpoint: no final eval or weights, the run is not over
            return RunResult(run_dir, before, {}, steps, seconds, stopped_by_signal=True)
        after = _finish(config, trainer, learner, setup["eval"], run_dir, before)
    finally:
        log.close()
    plot_run(run_dir / "metrics.jsonl", run_dir / "metrics.png", run_dir / "sampler_weights.png")
    print(f"[rlpost] trained {steps} steps in {seconds:.0f}s; metrics: {run_dir / 'metrics.jsonl'}", flush=True)
    return RunResult(run_dir, before, after, steps, seconds)


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


def _start_actors(config: RootConfig, setup: dict[str, Any], run_dir: Path) -> tuple[Any, Any]:
    """Ray, the actors and the weight sync, wired into a Trainer (no sampler yet); returns (trainer, learner)."""
    from actors.build import build_components
    from actors.placement import init_ray, placement_report
    from actors.runtime import actor_env_vars, configure_process_env
    from actors.weight_sync import make_weight_sync
    from rlpost.loop import Trainer

    configure_process_env()
    init_ray(config.resources, config, {"env_vars": actor_env_vars()})
    transport = resolve_transport(config)
    started = time.perf_counter()
    parts = build_components(config, setup["model_path"], transport)
    print(f"[rlpost] actors ready in {time.perf_counter() - started:.0f}s "
          f"({config.rollout.num_engines} vLLM engine(s), {config.learner.world_size} DeepSpeed rank(s) "
          f"ZeRO-{config.learner.zero_stage}, {config.reward.num_workers} reward worker(s), sync={transport})",
          flush=True)
    nodes = placement_report(parts.placements)
    (run_dir / "placement.json").write_text(json.dumps(nodes, indent=2))
    if len({n for ids in nodes.values() for n in ids}) > 1:
        print("[rlpost] placement: " + ", ".join(f"{role} on node {'/'.join(sorted({n[:8] for n in ids}))}"
                                                for role, ids in nodes.items()), flush=True)
    sync = make_weight_sync(transport, parts.learner_handles, parts.rollout_handles, config.sync.bucket_mb,
                            config.resources.call_timeout_s)
    parts.rollout.rejoin = sync.rejoin  # a replaced vLLM engine joins the transfer and gets the current weights
    probe = [p.token_ids + [setup["tokenizer"].eos_token_id] for p in setup["train"][: config.sync.probe_sequences]]
    trainer = Trainer(config, parts.rollout, parts.learner, parts.reward, sync, None, probe,
                      parts.rollout.sequence_logprobs)
    return trainer, parts.learner


def _first_step(config: RootConfig, trainer: Any, log: MetricsLog, setup: dict[str, Any]) -> tuple[list, dict]:
    """A fresh run's step 0: the sync probe, the RIF filter, the sampler, the eval before training."""
    train_prompts, first = setup["train"], {"sync/probe_max_abs_diff": trainer.probe()}
    if config.sampler.rif_k:
        train_prompts, rif_metrics = _rif_filter(config, trainer, train_prompts)
        first.update(rif_metrics)
    trainer.sampler = make_sampler(config, train_prompts, config.run.seed)
    log.log(0, first)
    before = trainer.evaluate(setup["eval"]) if setup["eval"] else {}
    _print_eval("before training", before)
    return train_prompts, before


def _finish(config: RootConfig, trainer: Any, learner: Any, evaluation: list, run_dir: Path,
            before: dict[str, float]) -> dict[str, float]:
    """The eval after training, eval.json, the before/after table and the final Hugging Face checkpoint."""
    after = trainer.evaluate(evaluation) if evaluation else {}
    _print_eval("after training", after)
    (run_dir / "eval.json").write_text(json.dumps({"before": before, "after": after}, indent=2))
    if before:
        print("\nheld-out greedy accuracy\n" + accuracy_table(before, after), flush=True)
    if config.run.save_final:
        final = run_dir / "final"
        learner.save_hf(str(final))
        print(f"[rlpost] Hugging Face checkpoint: {final}", flush=True)
    return after


def _restore(config: RootConfig, trainer: Any, learner: Any, prompts: list, state: dict[str, Any],
             ) -> tuple[list, dict[str, float]]:
    """Put a resumed run back where its checkpoint left it: learner state (then into vLLM), the training prompts,
    sampler and allocator state. Returns the training prompts and the before-training eval."""
    learner.load_state(str(state["path"] / "learner"))
    trainer.weight_sync.sync()
    by_uid = {p.uid: p for p in prompts}
    missing = [u for u in state["prompt_uids"] if u not in by_uid]
    if missing:
        raise checkpoints.ResumeError(f"the checkpoint trains on {len(missing)} prompt(s) this data no longer has "
                                      f"(first uid {missing[0]}); resume with the same data")
    kept = [by_uid[u] for u in state["prompt_uids"]]
    trainer.sampler = make_sampler(config, kept, config.run.seed)
    trainer.sampler.load_state_dict(state["sampler"])
    trainer.allocator.load_state_dict(state["allocator"])
    return kept, state["before"]


def _rif_filter(config: RootConfig, trainer: Any, prompts: list) -> tuple[list, dict[str, float]]:
    """RIF-RFT pass with a progress bar; stops with a clear error when no prompt survives."""
    from tqdm import tqdm

    cfg = config.sampler
    bar = tqdm(total=len(prompts), desc=f"RIF filter ({cfg.rif_k} rollouts/prompt)", unit="prompt",
               disable=not config.run.progress_bar, file=sys.stderr, dynamic_ncols=True)
    kept, metrics = trainer.rif_filter(prompts, cfg.rif_k, cfg.success_threshold, cfg.rif_drop_all_correct,
                                       progress=bar.update)
    bar.close()
    cells = ", ".join(f"{k.rsplit('/', 1)[1]} {100 * v:.0f}%" for k, v in metrics.items())
    print(f"[rlpost] RIF filter kept {len(kept)} of {len(prompts)} prompts ({cells})", flush=True)
    if not kept:
        raise RuntimeError(f"the RIF filter (sampler.rif_k={cfg.rif_k}) dropped every training prompt: no prompt "
                           f"had a rollout scoring at least sampler.success_threshold={cfg.success_threshold}")
    return kept, metrics


def _train_loop(config: RootConfig, trainer: Any, log: MetricsLog, eval_prompts: list, first_step: int,
                save: Any) -> tuple[int, float, bool]:
    """Steps first_step+1 .. run.steps; checkpoints every checkpoint.every steps, and on SIGTERM after the step in
    flight, then stops. Returns (last step, seconds, whether SIGTERM stopped the run)."""
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
    for step in range(first_step + 1, config.run.steps + 1):
        metrics = trainer.step(step)
        if config.run.eval_every and step % config.run.eval_every == 0 and eval_prompts:
            metrics.update({f"eval/{k}": v for k, v in trainer.evaluate(eval_prompts).items()})
        log.log(step, metrics)  # written and flushed: a reader sees the whole step
        injected_fault("driver.step_done")  # resilience tests stop the driver here, so a kill lands after this step
        bar.update(1)
        bar.set_postfix(reward=f"{metrics['reward/mean']:.3f}", step_s=f"{metrics['time/step']:.1f}")
        tqdm.write(_step_line(step, metrics), file=sys.stdout)
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
