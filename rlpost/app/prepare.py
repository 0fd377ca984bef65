"""Everything a run checks before any actor starts: the model's files and tokenizer, the data, the reward plugins
(loaded and checked in a child process) and the sampler's sources, so a mistake costs seconds, not a cluster start.
Used by `rlpost train`, `rlpost validate` and `rlpost train --dry-run`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from rlpost.app.environments import EnvPlan, check_environments
from rlpost.config import RecipeError, RootConfig
from rlpost.data import DataError, load_rows, per_source, to_prompts
from rlpost.recipe_checks import check_against_data
from rlpost.sampling import make_sampler
from rlpost.types import Prompt


def resolve_model_path(config: RootConfig) -> str:
    """'embedded' builds (or reuses) the tiny base model in the cache, 'embedded_trace' the trace task's,
    'embedded_tool' the tool task's; anything else is passed through."""
    if config.model.path not in ("embedded", "embedded_trace", "embedded_tool"):
        return config.model.path
    from actors.runtime import cache_dir
    from rlpost.embedded.model import ensure_base_model, tool_settings, trace_settings

    if config.model.path == "embedded_trace":
        return str(ensure_base_model(cache_dir() / "base_model_trace", trace_settings()))
    if config.model.path == "embedded_tool":
        return str(ensure_base_model(cache_dir() / "base_model_tool", tool_settings()))
    return str(ensure_base_model(cache_dir() / "base_model"))


def check_memory_embedder(config: RootConfig) -> None:
    """Memory-R+ with a sentence-transformers embedder needs that package, said before any actor starts."""
    memory = config.memory
    if not (memory.exploit_weight or memory.explore_weight) or memory.embedder.split(":")[0] == "hashed":
        return
    import importlib.util

    if importlib.util.find_spec("sentence_transformers") is None:
        raise RecipeError(f"key 'memory.embedder' is {memory.embedder!r}, a sentence-transformers model, but that "
                          "package is not installed (pip install sentence-transformers), or use 'hashed'")


def check_qlora(config: RootConfig) -> None:
    """QLoRA's 4-bit base needs CUDA and bitsandbytes on the learner: said before any actor starts (on a machine
    whose learners are elsewhere, resources.address, the check is left to them)."""
    if not config.model.load_in_4bit or config.resources.address:
        return
    import importlib.util

    from actors.runtime import has_cuda

    if not has_cuda():
        raise RecipeError("key 'model.load_in_4bit' needs a CUDA GPU on the learner (bitsandbytes' 4-bit base); "
                          "this machine has none: train the LoRA adapter on the full-precision base instead "
                          "(model.load_in_4bit=false)")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise RecipeError("key 'model.load_in_4bit' needs the bitsandbytes package (pip install bitsandbytes)")


@dataclass
class Setup:
    """What `prepare` found: the model's files, its tokenizer, the prompts and the reward plugins' notes."""

    model_path: str
    tokenizer: Any
    train: list[Prompt]
    eval: list[Prompt]
    notes: list[str]
    env: EnvPlan | None = None  # the environment section, checked (multi-turn recipes)


def prepare(config: RootConfig) -> Setup:
    """Everything short of starting actors: model files, tokenizer, data, reward plugins (loaded and checked in a
    child process, with a time limit: plugin code never runs in the driver). `notes` holds the plugins' check-hook
    notes, for `rlpost validate` and the start of `train`."""
    from transformers import AutoTokenizer

    from rlpost.trackers import check_loggers

    check_loggers(config.run.loggers)  # a tracker that cannot run fails before the model is built
    check_memory_embedder(config)
    check_qlora(config)
    model_path = resolve_model_path(config)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=config.model.trust_remote_code)
    except (OSError, ValueError) as err:
        raise DataError(f"model.path {model_path!r}: cannot load its tokenizer: {str(err).splitlines()[0]}") from None
    check_vocabulary(model_path, tokenizer, config.model.trust_remote_code)
    env = check_environments(config, tokenizer)
    tools = env.schemas() if env is not None and env.format == "chat" else None
    train = to_prompts(load_rows(config.data, config.data.train_split), config.data, tokenizer, "train", tools)
    evaluation = []
    if config.data.eval_split:
        rows = load_rows(config.data, config.data.eval_split)
        evaluation = per_source(to_prompts(rows, config.data, tokenizer, config.data.eval_split, tools),
                                config.data.n_eval_per_source)
    check_prompt_forms([(config.data.train_split, train), (config.data.eval_split, evaluation)])
    for warning in check_against_data(config, train, evaluation):  # what cannot work raises RecipeError
        print(f"[rlpost] warning: {warning}", file=sys.stderr, flush=True)
    splits = {config.data.train_split: prompt_columns(train)}
    if evaluation and config.data.eval_split != config.data.train_split:
        splits[config.data.eval_split] = prompt_columns(evaluation)
    notes = check_reward_plugins(config, splits)
    try:
        # a mixture or stage naming a missing source fails here
        make_sampler(config.sampler, train, config.algorithm.prompts_per_step, config.run.seed)
    except ValueError as err:
        raise RecipeError(f"sampler section: {err}") from None
    return Setup(model_path, tokenizer, train, evaluation, notes, env)


def run_column_names(config: RootConfig) -> list[str]:
    """The run columns this recipe gives reward functions (length_budget only with a length-budget curriculum)."""
    from rewards import RUN_COLUMNS

    return [c for c in RUN_COLUMNS if c != "length_budget" or config.sampler.budget_initial]


def check_reward_plugins(config: RootConfig, splits: dict[str, dict[str, list[Any]]] | None) -> list[str]:
    """Load and check the recipe's reward plugins in a child process (actors/plugin_process.py) against these
    splits' columns (None: not known, offline); returns their check hooks' notes. The child gets no
    reward.memory_mb limit: it holds every row of the data, which a limit sized for scoring calls need not fit."""
    from actors import plugin_process

    args = {name: dict(value) for name, value in dict(config.reward.args).items()}
    return plugin_process.check_plugins(list(config.reward.functions), args, splits, run_column_names(config),
                                        timeout_s=max(config.reward.timeout_s, plugin_process.LOAD_TIMEOUT_S))


def prompt_columns(prompts: list[Prompt]) -> dict[str, list[Any]]:
    """A split's dataset columns as reward functions see them: column -> one value per row, every row."""
    return {key: [p.columns.get(key) for p in prompts] for key in prompts[0].columns} if prompts else {}


def check_prompt_forms(splits: list[tuple[str, list[Prompt]]]) -> None:
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
