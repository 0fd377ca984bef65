"""The reward-function protocol: how rlpost calls a plugin, and the decorator that declares its calling style and hooks.

A reward function is called with keyword arguments only, the contract of TRL's GRPOTrainer (1.16), so TRL reward
functions work unchanged:

    fn(prompts=[...], completions=[...], completion_ids=[[...]], **columns) -> list[float | None]

one value per completion (None: "no score from this function"; if every function says None the sample is skipped).

Plain-text data gives strings: `prompts[i]` is the prompt text, `completions[i]` the completion text. Chat data (the
dataset's prompt is a list of `{role, content}` messages) gives what TRL gives: `prompts[i]` is that message list as
the dataset holds it (data.system_prompt is not added to it), and `completions[i]` is
`[{"role": "assistant", "content": text}]`. `completion_text` reads either form, for functions that serve both.

`columns` holds every dataset column (one entry per completion, e.g. `answer`, `data_source`); the run columns
`step`, `max_new_tokens` and (with a length-budget curriculum) `length_budget`; `components` (the values of the
functions listed before this one, by name); this function's `reward.args` entry; and TRL's three extras:
- `trainer_state`: a `TrainerState` with `global_step`, the optimizer steps done before this one (TRL's meaning:
  0 while the first step scores), the only field of TRL's state that the reward worker knows;
- `log_metric(name, value)`: a scalar, averaged over the step and logged as `reward_log/<name>`;
- `log_extra(column, values)`: accepted and dropped (TRL fills a completions table with it; rlpost has none).
A function without **kwargs receives only the arguments it names.

Calling styles, declared with `@reward(...)` (undecorated functions are batched, like TRL's):
- batched (default): one call per chunk of completions; `batch_size` caps the chunk (e.g. a model-based verifier);
- group: one call per prompt group (all samples of one prompt together), e.g. Kimi's length penalty;
- async: `async def` functions are awaited in the worker; nothing to declare.

Hooks, also declared with `@reward(...)`; both receive the function's `reward.args` entry as keyword arguments:
- `check(columns, **args) -> str | None` runs before any actor starts (`rlpost validate`, `train --dry-run` and
  `train`, in the isolated process that loads the plugins), once per split the run uses (training, then evaluation)
  with that split's dataset columns: `columns[name][row]`, every row the run uses, the same columns reward calls
  get. Raise ValueError naming the row and column to refuse the data (the run stops before it starts, the plugin
  named); return a one-line note to show (`rlpost validate` prints it as an `ok:` line, `train` at start), or None.
- `health(**args) -> dict[str, float]` runs in each reward worker's process after the plugins load (and again
  whenever that process is replaced); its gauges travel with every scoring result and are logged each step as
  `reward_health/<key>`: a gauge, not a count (several workers: the largest value), e.g. `sandbox_weak` 1.0 or 0.0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
Completion = str | Sequence[Mapping[str, Any]]  # text, or (chat data) a list of messages
CheckHook = Callable[..., "str | None"]  # (columns: Mapping[str, Sequence[Any]], **args) -> note or None
HealthHook = Callable[..., "dict[str, float]"]  # (**args) -> gauges

RUN_COLUMNS = ("step", "max_new_tokens", "length_budget", "components")
TRL_ARGS = ("trainer_state", "log_metric", "log_extra")  # TRL's per-call extras, built in the worker's process
# `reward_health/<name>` counts the driver keeps itself (rlpost/scoring.py): no health gauge may take these names
HEALTH_COUNTS = ("completions", "errors", "skipped", "unscored", "retries", "timeouts", "crashes",
                 "replaced_workers", "error_rate")


@dataclass(frozen=True)
class RewardStyle:
    """How the worker calls one function (per prompt group or in batches of at most `batch_size` completions), and
    its optional hooks."""

    group: bool = False
    batch_size: int | None = None
    check: CheckHook | None = None
    health: HealthHook | None = None


def reward(*, group: bool = False, batch_size: int | None = None, check: CheckHook | None = None,
           health: HealthHook | None = None) -> Callable[[F], F]:
    """Declare a reward function's calling style and hooks (see the module docstring); the function is unchanged."""
    if batch_size is not None and batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    for name, hook in (("check", check), ("health", health)):
        if hook is not None and not callable(hook):
            raise TypeError(f"reward({name}=...) must be callable, got {type(hook).__name__}")

    def mark(fn: F) -> F:
        fn.__rlpost_reward__ = RewardStyle(group, batch_size, check, health)  # type: ignore[attr-defined]
        return fn

    return mark


def style_of(fn: Callable[..., Any]) -> RewardStyle:
    """The declared calling style, or the batched default."""
    style = getattr(fn, "__rlpost_reward__", None)
    return style if isinstance(style, RewardStyle) else RewardStyle()


@dataclass(frozen=True)
class TrainerState:
    """The part of TRL's `TrainerState` a reward function can rely on here: optimizer steps done before this one."""

    global_step: int


def completion_text(completion: Completion) -> str:
    """A completion's text in either form of the contract: a string as is; a message list (chat data) as its
    assistant messages' contents joined by newlines (rlpost sends one message). Content given as typed parts
    (`[{"type": "text", "text": ...}]`) keeps its text parts."""
    if isinstance(completion, str):
        return completion
    messages: object = completion  # checked as a value, not trusted as annotated: plugins hand in anything
    if not isinstance(messages, Sequence) or not all(isinstance(m, Mapping) for m in messages):
        raise TypeError(f"a completion is a string or a list of messages, got {type(completion).__name__}")
    return "\n".join(_content_text(m.get("content")) for m in messages if m.get("role", "assistant") == "assistant")


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping)
                   and part.get("type", "text") == "text")
