"""`rlpost` command line: train a recipe, print its resolved config, or list every recipe key, preset and reward.

Errors a user can fix (recipe keys, data, reward plugins, resources) print one clear message and exit 2, without a
Python traceback unless RLPOST_DEBUG=1.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Callable
from typing import Any

from rlpost.config import RecipeError, RootConfig, all_fields
from rlpost.recipes import load_config, shipped_recipes, to_yaml

USAGE_ERRORS: tuple[type[BaseException], ...] = (RecipeError,)


def _keys_help() -> str:
    lines = ["recipe keys (set in YAML or as key=value overrides):"]
    for key, type_name, default, text in all_fields():
        lines.append(f"  {key} ({type_name}, default {default!r})")
        lines += textwrap.wrap(text, width=100, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines)


def keys_markdown() -> str:
    """The README's recipe-key table, generated from the schema (a test keeps the README in step)."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, type_name, default, text in all_fields():
        lines.append(f"| `{key}` | {type_name} | `{default!r}` | {text} |")
    return "\n".join(lines)


def _recipe_command(sub: Any, name: str, help: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand taking RECIPE and key=value overrides."""
    parser = sub.add_parser(name, help=help, **kwargs)
    parser.add_argument("recipe", help="recipe file, or the name of a shipped recipe (e.g. quickstart)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="overrides, e.g. run.steps=10")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlpost", description="Reinforcement-learning post-training (GRPO) on Ray + vLLM + DeepSpeed.",
        epilog=f"shipped recipes: {', '.join(shipped_recipes())}. Example: rlpost train quickstart run.steps=20",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    train = _recipe_command(
        sub, "train", "train a recipe", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train RECIPE (a YAML file or a shipped recipe name) with optional key=value overrides.",
        epilog=_keys_help())
    train.add_argument("--dry-run", action="store_true",
                       help="print the resolved config and check data and reward plugins, then exit")
    validate = _recipe_command(
        sub, "validate", "check a recipe without starting actors: schema, plugins, data, model, resources",
        description="Check RECIPE (with overrides) short of starting actors: the schema, the reward plugins "
                    "(importable, callable, signatures against the data's columns), the data (columns, prompt "
                    "lengths), the model and tokenizer, and the resources against the connected Ray cluster "
                    "(resources.address or RAY_ADDRESS) or this machine. Exit 0 when everything holds.")
    validate.add_argument("--offline", action="store_true",
                          help="schema and reward plugins only (no data, model or cluster): for recipes meant for "
                               "another machine, e.g. GPU recipes on a laptop")
    submit = _recipe_command(
        sub, "submit", "run a recipe as a Ray job (ray job submit), without uploading outputs or caches",
        description="Validate the recipe's schema and plugins here, then `ray job submit` it: the working directory "
                    "is uploaded without runs/, .cache/, .venv/, .git/ and weights; a relative run.output_dir is "
                    "made absolute so the run directory lands where you expect on a local or shared-filesystem "
                    "cluster. Waits for the job and exits with its status unless --no-wait.")
    submit.add_argument("--address", default=None,
                        help="Ray job-submission address (default: RAY_ADDRESS if it is a URL, else "
                             "http://127.0.0.1:8265)")
    submit.add_argument("--python", default=sys.executable,
                        help="the cluster's Python with rlpost installed (default: this interpreter's path)")
    submit.add_argument("--working-dir", default=".", help="directory uploaded as the job's working directory")
    submit.add_argument("--no-wait", action="store_true", help="return once the job is submitted")
    submit.add_argument("--cache-dir", default=None,
                        help="RLPOST_CACHE_DIR for the job (built embedded model, JIT ops; default: this "
                             "checkout's cache, useful when the cluster sees this filesystem; '' for none)")
    evaluate = sub.add_parser(
        "eval", help="evaluate a checkpoint on a recipe's data: greedy accuracy and pass@k per data_source",
        description="Evaluate CHECKPOINT (a Hugging Face directory, e.g. a run's final/, or a hub id) on RECIPE's "
                    "data (data.eval_split, data.n_eval_per_source prompts per source) with RECIPE's reward "
                    "functions, in this process: vLLM for generation, a reward worker for scoring. Greedy accuracy "
                    "uses run.eval_max_new_tokens; sampled metrics use the rollout settings (temperature, top_p, "
                    "max_new_tokens); pass@k is the unbiased estimator over --samples completions per prompt.")
    evaluate.add_argument("checkpoint", help="model directory or Hugging Face model id")
    evaluate.add_argument("recipe", help="recipe file or shipped recipe name (data and reward sections are used)")
    evaluate.add_argument("overrides", nargs="*", metavar="key=value")
    evaluate.add_argument("--k", type=int, nargs="+", default=[1, 4], help="pass@k for these k (default 1 4)")
    evaluate.add_argument("--samples", type=int, default=0, help="completions per prompt (default: the largest k)")
    evaluate.add_argument("--split", default=None, help="dataset split (default: data.eval_split)")
    evaluate.add_argument("--out", default=None, help="write the results as JSON to this file")
    _report_command(sub)
    _sweep_command(sub)
    keys = sub.add_parser("keys", help="list every recipe key with its type, default and meaning")
    keys.add_argument("--markdown", action="store_true", help="print the README's markdown table")
    presets = sub.add_parser("presets", help="list the algorithm presets (algorithm.preset) and what each sets")
    presets.add_argument("--markdown", action="store_true", help="print the README's markdown table")
    rewards = sub.add_parser("rewards", help="list the built-in reward functions and installed reward plugins")
    rewards.add_argument("--markdown", action="store_true", help="print a markdown table")
    return parser


def _report_command(sub: Any) -> None:
    report = sub.add_parser(
        "report", help="draw a dashboard PNG and a markdown summary of one run or several (overlaid)",
        description="Read RUN_DIR(s) (finished, in progress or resumed) and write report.png (smoothed reward and "
                    "accuracy per data_source, held-out accuracy over steps, sampler weights, allocation, "
                    "completion length and truncation, KL/clip/mismatch, phase times, tokens/s) and report.md (the "
                    "final numbers per run, the recipe keys in which the runs differ, the latest sample "
                    "completions).")
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (runs/<name>-<time>)")
    report.add_argument("--out", default=None, help="where to write them (default: the first RUN_DIR)")
    report.add_argument("--dpi", type=int, default=80, help="resolution of the PNG (default 80)")


def _sweep_command(sub: Any) -> None:
    sweep = sub.add_parser(
        "sweep", help="a hyperparameter sweep on Ray Tune with learning-curve early stopping (LC-PFN or ASHA)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train RECIPE once per point of the search space in SPACE (a YAML file mapping recipe keys to a "
                    "value or {grid|choice|uniform|loguniform|randint: [...]}), each point a Ray Tune trial and a "
                    "normal run directory, stopping weak trials early by their held-out curve (sweep.scheduler: "
                    "lcpfn, asha or none; sweep.metric every run.eval_every steps; sweep.min_steps). Writes "
                    "SWEEP_DIR/summary.md (table, best configuration, compute used and saved), summary.json and "
                    "curves.png. Rerunning the same command after the driver died restores the sweep: finished "
                    "trials stay, unfinished ones resume from their checkpoints.",
        epilog="example SPACE.yaml:\n  learner.lr: {loguniform: [1.0e-5, 3.0e-4]}\n  algorithm.clip_eps: {grid: "
               "[0.1, 0.2]}\n  run.seed: 0\n\nsweep keys: " + ", ".join(
                   k for k, *_ in all_fields() if k.startswith("sweep.")))
    sweep.add_argument("recipe", help="recipe file, or the name of a shipped recipe")
    sweep.add_argument("space", help="search-space YAML file")
    sweep.add_argument("overrides", nargs="*", metavar="key=value", help="overrides for every trial")
    sweep.add_argument("--out", default=None,
                       help="sweep directory (default: run.output_dir/sweep-<run.name>); rerun with the same one to "
                            "restore a sweep")


def _sweep(args: argparse.Namespace) -> int:
    from rlpost.app.sweep import plan_sweep, run_sweep

    summary = run_sweep(plan_sweep(args.recipe, args.space, args.overrides, args.out))
    return 0 if summary["counts"]["failed"] == 0 else 1


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rlpost.report import report

    try:
        png, md = report([Path(p) for p in args.run_dirs], Path(args.out) if args.out else None, dpi=args.dpi)
    except FileNotFoundError as err:
        print(f"rlpost: error: {err}", file=sys.stderr)
        return 2
    print(f"[rlpost] report: {png}\n[rlpost] summary: {md}")
    return 0


def rewards_listing(markdown: bool = False) -> str:
    """Every reward function a recipe can name without a path: built-ins, then installed entry points."""
    from rewards import BUILTINS, RewardPluginError, installed_plugins, load_reward, style_of

    rows = []
    for name, where in [*BUILTINS.items(), *installed_plugins().items()]:
        try:
            fn = load_reward(name)
            summary = " ".join((fn.__doc__ or "").strip().split("\n\n")[0].split())
            options = _options(fn)
            summary += f" reward.args: {options}." if options else ""
            style = style_of(fn)
            kind = "group" if style.group else f"batch <= {style.batch_size}" if style.batch_size else "batch"
        except RewardPluginError as err:
            summary, kind = f"(cannot load: {str(err).splitlines()[0]})", "?"
        rows.append((name, where, kind, summary))
    if markdown:
        return "\n".join(["| name | function | calls | what it does |", "|---|---|---|---|"]
                         + [f"| `{n}` | `{w}` | {k} | {d} |" for n, w, k, d in rows])
    return "\n".join(f"{n} ({w}, {k})\n" + textwrap.fill(d, 100, initial_indent="    ", subsequent_indent="    ")
                     for n, w, k, d in rows)


def _options(fn: Callable[..., Any]) -> str:
    """A function's reward.args: its keyword parameters with defaults, the contract's and run columns left out."""
    import inspect

    from rewards import REQUIRED_ARGS, RUN_COLUMNS
    from rewards.protocol import TRL_ARGS

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return ""
    return ", ".join(f"{p.name}={p.default!r}" for p in params if p.default is not inspect.Parameter.empty
                     and p.name not in REQUIRED_ARGS + RUN_COLUMNS + TRL_ARGS)


def _dry_run(config: RootConfig) -> None:
    """`train --dry-run`: the resolved recipe, then everything short of starting actors."""
    print(to_yaml(config), end="")
    from rlpost.app.prepare import prepare

    setup = prepare(config)
    for note in setup.notes:  # the reward plugins' check hooks, e.g. which sandbox code_tests uses
        print(f"# {note}")
    print(f"# ok: {len(setup.train)} training prompts, {len(setup.eval)} eval prompts, "
          f"model {setup.model_path}, rewards {list(config.reward.functions)}")


def _presets(markdown: bool) -> str:
    from rlpost.presets import PRESET_NOTES, PRESETS, presets_markdown

    if markdown:
        return presets_markdown()
    return "\n".join(f"{name}: {PRESET_NOTES[name]}\n  " + ", ".join(f"algorithm.{k}={v}" for k, v in values.items())
                     for name, values in PRESETS.items())


def _usage_errors() -> tuple[type[BaseException], ...]:
    """Errors that are the user's input, not a bug: one line on stderr and exit status 2, no traceback."""
    from rewards import RewardPluginError
    from rlpost.app.run import RunStopped
    from rlpost.checkpoint import ResumeError
    from rlpost.data import DataError
    from rlpost.scoring import RewardErrorRateExceeded

    errors = USAGE_ERRORS + (RewardPluginError, DataError, RewardErrorRateExceeded, ResumeError, RunStopped)
    try:
        from actors.placement import PlacementError

        errors += (PlacementError,)
    except ImportError:  # ray missing: the error surfaces when training starts
        pass
    return errors


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "keys":
        print(keys_markdown() if args.markdown else _keys_help())
        return 0
    if args.command == "presets":
        print(_presets(args.markdown))
        return 0
    if args.command == "rewards":
        print(rewards_listing(args.markdown))
        return 0
    if args.command == "report":
        return _report(args)
    usage_errors = _usage_errors()
    try:
        if args.command == "sweep":
            return _sweep(args)
        config = load_config(args.recipe, args.overrides)
        if args.command == "validate":
            from rlpost.app.commands import validate

            for line in validate(config, offline=args.offline):
                print(f"[rlpost] ok: {line}", flush=True)
            print(f"[rlpost] {args.recipe}: valid" + (" (offline: schema and plugins)" if args.offline else ""))
            return 0
        if args.command == "eval":
            from rlpost.app.evaluate import run_eval

            if min(args.k) < 1:
                raise RecipeError(f"--k must be at least 1, got {args.k}")
            run_eval(config, args.checkpoint, sorted(set(args.k)), args.samples, args.split, args.out)
            return 0
        if args.command == "submit":
            from rlpost.app.commands import default_address, submit, validate

            validate(config, offline=True)
            from actors.runtime import cache_dir

            cache = str(cache_dir().resolve()) if args.cache_dir is None else args.cache_dir
            return submit(args.recipe, args.overrides, config, args.address or default_address(), args.python,
                          args.working_dir, wait=not args.no_wait, cache_dir=cache)
        if args.dry_run:
            _dry_run(config)
            return 0
        from rlpost.app.run import train

        result = train(config)
        return 128 + 15 if result.stopped_by_signal else 0  # a run stopped by SIGTERM is not done: not success
    except usage_errors as err:
        if os.environ.get("RLPOST_DEBUG"):
            raise
        print(f"rlpost: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
