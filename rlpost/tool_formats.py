"""Tool-call formats for multi-turn rollouts: how a finished model turn's token ids become tool calls, and how the
results of those calls become the token ids of the environment turn that follows (TRL's `tools` /
`environment_factory` contract, notes/trl_env_contract.md).

Two formats:
- `TagFormat`: the plain-text tag format of rlpost/episodes.py (`[add:3527]` -> `[=17]`, `[!error]`), for models
  without a tool-calling chat template, such as the embedded character-level model. A turn stops at `]`.
- `ChatFormat`: the Hermes / Qwen2.5 / Qwen3 chat convention. The model writes `<tool_call>{json}</tool_call>`
  blocks and ends its turn at EOS; the results go back as `tool` messages. The environment turn's ids come from
  the chat template itself by the suffix trick (render a dummy exchange without and with the tool messages and keep
  the difference), so tokens already generated are never re-tokenized and the sequence matches what the template
  would render for the whole conversation.

`make_format` picks one by name ('tag', 'chat' or 'auto').
Leaves out: response parsers of other chat conventions (Llama 3 JSON calls, GPT-OSS channels, ...), swapping in a
prefix-preserving training template by itself (pass one as `chat_template_kwargs={"chat_template": ...}`), and
multimodal tool results.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from rlpost.episodes import parse_tag_call

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"
TOOL_CALL_BLOCK = re.compile(re.escape(TOOL_CALL_OPEN) + r"(.*?)(" + re.escape(TOOL_CALL_CLOSE) + r"|$)", re.DOTALL)
TAG_ERROR_CHARS = re.compile(r"[^a-z0-9 ]+")
TAG_ERROR_MAX = 32  # characters of a tag-format error reply, so a failed call costs few tokens of a tiny context
DUMMY_USER = "dummy"


@dataclass(frozen=True)
class Call:
    """One tool call a model turn made."""

    name: str  # tool name ('' when the call could not be parsed)
    arguments: dict[str, Any]  # keyword arguments (chat format); tag format: {} and `argument` set
    argument: str | None = None  # tag format: the raw single argument string; None for chat calls
    error: str = ""  # a call that was written but cannot be parsed (bad JSON...): the reason


@dataclass(frozen=True)
class Result:
    """The outcome of one call, which the environment turn reports back to the model."""

    name: str  # the tool called
    value: str | None  # str(result) of a successful call; None when it failed
    error: str = ""  # short error message (like TRL's str(exception)) when it failed


class ToolFormat(Protocol):
    """What the rollout driver needs of a format: stop strings, the calls of a turn, the reply to them."""

    stop: list[str]  # stop strings that end a model turn besides EOS

    def calls(self, token_ids: Sequence[int]) -> list[Call]: ...

    def reply_ids(self, results: list[Result]) -> list[int]: ...


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of a text piece that sits inside a sequence: no BOS/EOS added."""
    return [int(i) for i in tokenizer.encode(text, add_special_tokens=False)]


def _ids(rendered: Any) -> list[int]:
    """The token ids of one conversation from `apply_chat_template(tokenize=True)`, which returns a BatchEncoding
    (a mapping) in transformers 5.x by default and a plain list in 4.x."""
    if isinstance(rendered, Mapping):
        rendered = rendered["input_ids"]
    if hasattr(rendered, "tolist"):
        rendered = rendered.tolist()
    ids = list(rendered)
    if ids and isinstance(ids[0], (list, tuple)):  # a batch of one
        ids = list(ids[0])
    return [int(i) for i in ids]


def _decode(tokenizer: PreTrainedTokenizerBase, token_ids: Sequence[int], skip_special_tokens: bool) -> str:
    """The text of one turn's ids."""
    text = tokenizer.decode(list(token_ids), skip_special_tokens=skip_special_tokens)
    if not isinstance(text, str):
        raise TypeError(f"tokenizer.decode returned {type(text).__name__}, not str")
    return text


# ---------------------------------------------------------------- tag format


def tag_error_text(error: str) -> str:
    """A failed call's error as the tag format can write it: lowercase, only `a-z0-9 ` (the embedded tokenizer's
    alphabet has no other letters), single spaces, at most TAG_ERROR_MAX characters; 'error' when nothing is left."""
    text = " ".join(TAG_ERROR_CHARS.sub(" ", error.lower()).split())
    if len(text) > TAG_ERROR_MAX:
        cut = text[:TAG_ERROR_MAX]
        text = cut.rsplit(" ", 1)[0] if " " in cut else cut
    return text or "error"


class TagFormat:
    """`[name:argument]` calls answered by `[=value]` or `[!error]`: one call per turn, which ends at `]`."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.stop: list[str] = ["]"]

    def calls(self, token_ids: Sequence[int]) -> list[Call]:
        """The call a turn ends with, or [] (no call: the episode ends)."""
        text = _decode(self.tokenizer, token_ids, skip_special_tokens=True)
        found = parse_tag_call(text)
        return [Call(found.name, {}, found.argument)] if found else []

    def reply_ids(self, results: list[Result]) -> list[int]:
        """The environment turn: `[=value]` per successful call, `[!short error]` per failed one, in call order."""
        ids: list[int] = []
        for result in results:
            text = f"[={result.value}]" if result.value is not None else f"[!{tag_error_text(result.error)}]"
            ids += _encode(self.tokenizer, text)
        return ids


# ---------------------------------------------------------------- chat format


def parse_tool_call_block(block: str) -> Call:
    """One `<tool_call>` block's JSON as a call; a block that cannot be read gives a call with `error` set, so the
    environment can answer it (and the run count it) instead of the episode ending silently."""
    try:
        data = json.loads(block)
    except json.JSONDecodeError as err:
        return Call("", {}, None, error=f"tool call is not valid JSON: {err}")
    if not isinstance(data, dict):
        return Call("", {}, None, error=f"tool call must be a JSON object, got {type(data).__name__}")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        return Call("", {}, None, error="tool call has no 'name' string")
    arguments = data.get("arguments", {})
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as err:
            return Call(name, {}, None, error=f"arguments of {name!r} are not valid JSON: {err}")
    if not isinstance(arguments, dict):
        return Call(name, {}, None, error=f"arguments of {name!r} must be a JSON object, got "
                                          f"{type(arguments).__name__}")
    return Call(name, arguments)


def parse_tool_calls(text: str) -> list[Call]:
    """Every `<tool_call>...</tool_call>` block of a decoded turn, in order. A block left open at the end of the
    turn is read too (as vLLM's Hermes parser does); if it does not parse, its error says it was not closed."""
    calls = []
    for found in TOOL_CALL_BLOCK.finditer(text):
        call = parse_tool_call_block(found.group(1).strip())
        if call.error and not found.group(2):
            call = Call(call.name, {}, None, error=f"{TOOL_CALL_OPEN} not closed by {TOOL_CALL_CLOSE}; {call.error}")
        calls.append(call)
    return calls


def tool_message(result: Result) -> dict[str, Any]:
    """The `tool` message of a result: its value, or TRL's `str({"error": ...})` for a failed call."""
    content = result.value if result.value is not None else str({"error": result.error})
    return {"role": "tool", "name": result.name, "content": content}


def _dummy_exchange(names: Sequence[str], arguments: Sequence[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """A user message and an assistant message calling the named tools (the suffix trick's fixed prefix)."""
    args = arguments if arguments is not None else [{} for _ in names]
    tool_calls = [{"type": "function", "function": {"name": name, "arguments": arg}} for name, arg in zip(names, args)]
    return [{"role": "user", "content": DUMMY_USER}, {"role": "assistant", "content": "", "tool_calls": tool_calls}]


class ChatFormat:
    """Hermes / Qwen tool calls in a chat template: `<tool_call>{"name", "arguments"}</tool_call>` blocks, results
    as `tool` messages. A turn ends at EOS (vLLM keeps it in the ids), so there are no stop strings."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, tools: list[dict[str, Any]] | None = None,
                 chat_template_kwargs: dict[str, Any] | None = None) -> None:
        if not tokenizer.eos_token:
            raise ValueError("the chat format needs a tokenizer with an eos_token (the end of a model turn)")
        self.tokenizer = tokenizer
        self.tools: list[dict[Any, Any] | Callable[..., Any]] | None = list(tools) if tools else None
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.stop: list[str] = []
        self._prefixes: dict[tuple[str, ...], str] = {}

    def _render(self, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
        text = self.tokenizer.apply_chat_template(messages, tools=self.tools, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt,
                                                  **self.chat_template_kwargs)
        if not isinstance(text, str):
            raise TypeError(f"apply_chat_template(tokenize=False) returned {type(text).__name__}, not str")
        return text

    def render_prompt(self, messages: list[dict[str, Any]]) -> list[int]:
        """The prompt's ids, with the tools listed and the assistant header after it."""
        rendered = self.tokenizer.apply_chat_template(messages, tools=self.tools, add_generation_prompt=True,
                                                      tokenize=True, **self.chat_template_kwargs)
        return _ids(rendered)

    def calls(self, token_ids: Sequence[int]) -> list[Call]:
        """The calls of a finished turn, in order ([] = none: the episode ends). Decoded with special tokens kept,
        since a tokenizer may make the tool-call markers special; the closing EOS is cut so that a block left open
        at the end of the turn can still be read."""
        text = _decode(self.tokenizer, token_ids, skip_special_tokens=False)
        eos = str(self.tokenizer.eos_token)
        return parse_tool_calls(text[: -len(eos)] if text.endswith(eos) else text)

    def _prefix(self, names: tuple[str, ...]) -> str:
        """The dummy exchange rendered up to and including the assistant's end-of-turn (the last EOS text): what the
        model's turn already holds. Text the template writes after EOS (Qwen's newline) belongs to the suffix."""
        if names not in self._prefixes:
            text = self._render(_dummy_exchange(names), add_generation_prompt=False)
            eos = str(self.tokenizer.eos_token)
            end = text.rfind(eos)
            if end < 0:
                raise ValueError(f"the chat template does not end an assistant turn with the eos token {eos!r}; the "
                                 "chat format cannot tell where the model's turn ends")
            self._prefixes[names] = text[: end + len(eos)]
        return self._prefixes[names]

    def reply_ids(self, results: list[Result]) -> list[int]:
        """The environment turn answering a turn's calls (results in call order): the template's text after the
        assistant's EOS (its end-of-turn is not repeated) through the next assistant header. [] when no results."""
        if not results:
            return []
        names = tuple(result.name for result in results)
        prefix = self._prefix(names)
        full = self._render(_dummy_exchange(names) + [tool_message(r) for r in results], add_generation_prompt=True)
        if not full.startswith(prefix):
            raise ValueError("the chat template is not prefix-preserving: appending tool messages changes how the "
                             "earlier assistant turn renders, so the environment turn cannot be appended to the "
                             "generated tokens; use a training template that keeps earlier turns unchanged (e.g. "
                             "TRL's get_training_chat_template) via chat_template_kwargs={'chat_template': ...}")
        return _encode(self.tokenizer, full[len(prefix):])


def supports_tools(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the tokenizer's chat template renders a tool exchange keeping the tool's name, its arguments and the
    tool's reply (a template without tool support drops some of them)."""
    if not getattr(tokenizer, "chat_template", None):
        return False
    name, arg, content = "probe_tool_name", "probe_argument_value", "probe_tool_reply"
    messages = _dummy_exchange([name], [{"x": arg}]) + [{"role": "tool", "name": name, "content": content}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # a template may raise on roles or fields it does not know (jinja's raise_exception)
        return False
    return isinstance(text, str) and all(part in text for part in (name, arg, content))


def make_format(kind: str, tokenizer: PreTrainedTokenizerBase, tools: list[dict[str, Any]] | None,
                chat_template_kwargs: dict[str, Any] | None = None) -> ToolFormat:
    """The format named `kind`: 'tag', 'chat', or 'auto' (chat when the tokenizer has a chat template that supports
    tools, else tag)."""
    if kind == "auto":
        kind = "chat" if supports_tools(tokenizer) else "tag"
    if kind == "tag":
        return TagFormat(tokenizer)
    if kind == "chat":
        return ChatFormat(tokenizer, tools, chat_template_kwargs)
    raise ValueError(f"unknown tool format {kind!r}; choose 'tag', 'chat' or 'auto'")
