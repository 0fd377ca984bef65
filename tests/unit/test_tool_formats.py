"""Tool-call formats (rlpost/tool_formats.py): the tag format with the embedded character-level tokenizer, and the
Hermes / Qwen chat format with a Qwen-like tokenizer built here (offline; no real Qwen tokenizer is on the machine).

The chat tokenizer is a small byte-level BPE trained in memory on template-like text, with Qwen's control tokens
(`<|im_start|>`, `<|im_end|>` special; `<tool_call>`, `<tool_response>` and their closers added as normal tokens)
and a chat template written here after Qwen2.5's tool template. The key property checked is that the prompt ids,
the model turn's ids and the environment turn's ids put end to end are exactly the template's own tokenization of
the whole conversation. The Qwen templates TRL ships are checked the same way when the installed trl has them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rlpost.embedded.tokenizer import build_tokenizer
from rlpost.tool_formats import (
    Call,
    ChatFormat,
    Result,
    TagFormat,
    make_format,
    parse_tool_calls,
    supports_tools,
    tag_error_text,
)

QWEN_LIKE_TEMPLATE = """\
{%- if tools %}
{{- '<|im_start|>system\\n' }}
{%- if messages[0].role == 'system' %}{{- messages[0].content }}
{%- else %}{{- 'You are a helpful assistant.' }}{%- endif %}
{{- '\\n\\n# Tools\\n\\nYou may call one or more functions.\\n\\n<tools>' }}
{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}
{{- '\\n</tools>\\n\\nFor each function call, return a json object within <tool_call></tool_call> XML tags.' }}
{{- '<|im_end|>\\n' }}
{%- elif messages[0].role == 'system' %}
{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}
{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
{%- elif message.role == 'assistant' %}
{{- '<|im_start|>assistant' }}
{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}
{%- for call in message.tool_calls or [] %}
{%- set call = call.function if call.function is defined else call %}
{{- '\\n<tool_call>\\n{"name": "' + call.name + '", "arguments": ' + (call.arguments | tojson) + '}\\n</tool_call>' }}
{%- endfor %}
{{- '<|im_end|>\\n' }}
{%- elif message.role == 'tool' %}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}
{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}
"""

# The same, except that the last assistant turn gets an empty think block: appending a tool message re-renders it
# without one (Qwen3's original template does this), so the template is not prefix-preserving.
NOT_PREFIX_PRESERVING = QWEN_LIKE_TEMPLATE.replace(
    "{{- '<|im_start|>assistant' }}", "{{- '<|im_start|>assistant' + ('\\n<think></think>' if loop.last else '') }}")

ADD_TOOL: dict[str, Any] = {"type": "function", "function": {
    "name": "add", "description": "Add up the digits of a number.",
    "parameters": {"type": "object", "properties": {"digits": {"type": "string", "description": "The digits."}},
                   "required": ["digits"]}}}
MUL_TOOL: dict[str, Any] = {"type": "function", "function": {
    "name": "mul", "description": "Multiply two numbers.",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer", "description": "First."},
                                                    "b": {"type": "integer", "description": "Second."}},
                   "required": ["a", "b"]}}}
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MARKERS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]
CORPUS = [
    'You are a helpful assistant. You may call one or more functions to assist with the user query.',
    '{"name": "add", "arguments": {"digits": "35271"}} {"name": "mul", "arguments": {"a": 6, "b": 7}}',
    'What is the digit sum of 35271? The answer is 18. Multiply 6 by 7: 42. system user assistant tool',
    '{"type": "function", "function": {"name": "add", "description": "Add up the digits of a number."}}',
    '"parameters": {"type": "object", "properties": {"digits": {"type": "string"}}, "required": ["digits"]}',
] * 3


def qwen_like_tokenizer(template: str = QWEN_LIKE_TEMPLATE) -> Any:
    """A byte-level BPE tokenizer with Qwen's control tokens and a Qwen2.5-style tool template (built in memory)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, show_progress=False, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(CORPUS, trainer=trainer)
    core.add_tokens([AddedToken(m, special=False, normalized=False) for m in MARKERS])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        clean_up_tokenization_spaces=False)
    tokenizer.chat_template = template
    return tokenizer


@pytest.fixture(scope="module")
def qwen() -> Any:
    return qwen_like_tokenizer()


@pytest.fixture(scope="module")
def chars() -> Any:
    return build_tokenizer(extra="!")


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def _template_ids(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
                  **kwargs: Any) -> list[int]:
    """The template's own tokenization of a whole conversation (the reference the pieces must add up to)."""
    text = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True, **kwargs)
    return _ids(tokenizer, text)


def _block(name: str, arguments: Any) -> str:
    return f'<tool_call>\n{{"name": "{name}", "arguments": {json.dumps(arguments)}}}\n</tool_call>'


# ---------------------------------------------------------------- tag format


def test_tag_call_is_parsed_from_the_turn_ids(chars: Any) -> None:
    fmt = TagFormat(chars)
    assert fmt.stop == ["]"]
    assert fmt.calls(_ids(chars, "[add:35271]")) == [Call("add", {}, "35271")]
    assert fmt.calls(_ids(chars, "12[add:35271]") + [chars.eos_token_id]) == [Call("add", {}, "35271")]


def test_tag_turn_without_a_call_ends_the_episode(chars: Any) -> None:
    fmt = TagFormat(chars)
    assert fmt.calls(_ids(chars, "17")) == []
    assert fmt.calls(_ids(chars, "[add:35271] 17")) == []


def test_tag_reply_to_a_successful_call(chars: Any) -> None:
    reply = TagFormat(chars).reply_ids([Result("add", "18")])
    assert chars.decode(reply, skip_special_tokens=True) == "[=18]"
    assert chars.bos_token_id not in reply
    assert TagFormat(chars).reply_ids([]) == []


def test_tag_error_reply_stays_in_the_alphabet(chars: Any) -> None:
    fmt = TagFormat(chars)
    results = [Result("add", None, "ValueError: add takes digits only, got 'x1' (see <docs>)"), Result("add", "3")]
    reply = fmt.reply_ids(results)
    text = chars.decode(reply, skip_special_tokens=True)
    assert text.startswith("[!") and text.endswith("][=3]")
    vocab = chars.get_vocab()
    assert all(ch in vocab for ch in text), text
    assert chars.unk_token_id not in reply and chars.pad_token_id not in reply
    assert _ids(chars, text) == reply


def test_tag_error_text_is_short_lowercase_and_never_empty() -> None:
    assert tag_error_text("ValueError") == "valueerror"
    assert tag_error_text("Tool Add not found.") == "tool add not found"
    assert tag_error_text("!!!") == "error"
    long = tag_error_text("x" * 10 + " " + "word " * 20)
    assert len(long) <= 32 and not long.endswith(" ")


# ---------------------------------------------------------------- chat format: parsing


def test_chat_one_call(qwen: Any) -> None:
    fmt = ChatFormat(qwen, [ADD_TOOL])
    assert fmt.stop == []
    turn = _ids(qwen, _block("add", {"digits": "35271"}) + "<|im_end|>")
    assert fmt.calls(turn) == [Call("add", {"digits": "35271"})]


def test_chat_two_calls_and_text_around_them(qwen: Any) -> None:
    text = f"Let me compute.\n{_block('add', {'digits': '35'})}\n{_block('mul', {'a': 6, 'b': 7})}<|im_end|>"
    assert ChatFormat(qwen).calls(_ids(qwen, text)) == [Call("add", {"digits": "35"}), Call("mul", {"a": 6, "b": 7})]


def test_chat_arguments_as_a_json_string(qwen: Any) -> None:
    turn = _ids(qwen, _block("mul", json.dumps({"a": 2, "b": 3})) + "<|im_end|>")
    assert ChatFormat(qwen).calls(turn) == [Call("mul", {"a": 2, "b": 3})]


def test_chat_turn_without_calls(qwen: Any) -> None:
    assert ChatFormat(qwen).calls(_ids(qwen, "The answer is 18.<|im_end|>")) == []


@pytest.mark.parametrize("block, reason", [
    ('<tool_call>\n{"name": "add", "arguments": {"digits": </tool_call>', "not valid JSON"),
    ('<tool_call>\n["add"]\n</tool_call>', "JSON object"),
    ('<tool_call>\n{"arguments": {}}\n</tool_call>', "'name'"),
    ('<tool_call>\n{"name": "add", "arguments": [1]}\n</tool_call>', "must be a JSON object"),
    ('<tool_call>\n{"name": "add", "arguments": "{bad"}\n</tool_call>', "not valid JSON"),
    ('<tool_call>\n{"name": "add", "arguments": {"digits": "3"}', "not closed"),
])
def test_chat_malformed_block_gives_an_error_call(qwen: Any, block: str, reason: str) -> None:
    calls = ChatFormat(qwen).calls(_ids(qwen, block + "<|im_end|>"))
    assert len(calls) == 1 and calls[0].arguments == {} and calls[0].argument is None
    assert reason in calls[0].error, calls[0].error


def test_chat_unclosed_block_that_parses_is_a_call(qwen: Any) -> None:
    assert parse_tool_calls('<tool_call>\n{"name": "add", "arguments": {}}\n') == [Call("add", {})]
    turn = _ids(qwen, '<tool_call>\n{"name": "add", "arguments": {"digits": "3"}}<|im_end|>')
    assert ChatFormat(qwen).calls(turn) == [Call("add", {"digits": "3"})]


def test_chat_malformed_block_does_not_hide_the_good_ones(qwen: Any) -> None:
    text = f"<tool_call>oops</tool_call>{_block('add', {'digits': '1'})}<|im_end|>"
    calls = ChatFormat(qwen).calls(_ids(qwen, text))
    assert [c.name for c in calls] == ["", "add"] and calls[0].error and not calls[1].error


# ---------------------------------------------------------------- chat format: environment turns


def _assistant(calls: list[Call], content: str = "") -> dict[str, Any]:
    return {"role": "assistant", "content": content,
            "tool_calls": [{"type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                           for c in calls]}


def _reassemble(tokenizer: Any, tools: list[dict[str, Any]], kwargs: dict[str, Any] | None = None) -> None:
    """Two tool rounds (one call, then two calls of which one fails) and a final answer: prompt ids + each model
    turn's ids + each environment turn's ids must equal the template's rendering of the whole conversation."""
    fmt = ChatFormat(tokenizer, tools, kwargs)
    messages: list[dict[str, Any]] = [{"role": "user", "content": "What is the digit sum of 35271, times 7?"}]
    sequence = fmt.render_prompt(messages)
    assert sequence == _template_ids(tokenizer, messages, tools, **(kwargs or {}))
    rounds: list[list[tuple[str, dict[str, Any], Result]]] = [[("add", {"digits": "35271"}, Result("add", "18"))],
              [("mul", {"a": 18, "b": 7}, Result("mul", "126")),
               ("nope", {}, Result("nope", None, "Tool nope not found."))]]
    for round_ in rounds:
        turn = _ids(tokenizer, "\n".join(_block(name, args) for name, args, _ in round_) + "<|im_end|>")
        calls = fmt.calls(turn)
        assert calls == [Call(name, args) for name, args, _ in round_]
        results = [result for _, _, result in round_]
        reply = fmt.reply_ids(results)
        assert reply[0] != tokenizer.eos_token_id
        messages += [_assistant(calls)] + [{"role": "tool", "name": r.name,
                                            "content": r.value if r.value is not None else str({"error": r.error})}
                                           for r in results]
        expected = _template_ids(tokenizer, messages, tools, **(kwargs or {}))
        assert expected[: len(sequence) + len(turn)] == sequence + turn  # the model's turn, EOS included
        assert reply == expected[len(sequence) + len(turn):]  # the environment turn: everything after it
        sequence = expected


def test_chat_reply_ids_reassemble_the_template_rendering(qwen: Any) -> None:
    _reassemble(qwen, [ADD_TOOL, MUL_TOOL])


def test_chat_reply_text(qwen: Any) -> None:
    fmt = ChatFormat(qwen, [ADD_TOOL])
    one = qwen.decode(fmt.reply_ids([Result("add", "18")]))
    assert one == "\n<|im_start|>user\n<tool_response>\n18\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    two = qwen.decode(fmt.reply_ids([Result("add", "18"), Result("add", None, "boom")]))
    assert two.count("<|im_start|>user") == 1 and two.count("<tool_response>") == 2
    assert "{'error': 'boom'}" in two


def test_chat_template_that_is_not_prefix_preserving_is_refused() -> None:
    fmt = ChatFormat(qwen_like_tokenizer(NOT_PREFIX_PRESERVING), [ADD_TOOL])
    with pytest.raises(ValueError, match="not prefix-preserving"):
        fmt.reply_ids([Result("add", "18")])


def test_chat_render_prompt_lists_the_tools(qwen: Any) -> None:
    ids = ChatFormat(qwen, [ADD_TOOL]).render_prompt([{"role": "user", "content": "35271?"}])
    text = qwen.decode(ids)
    assert "<tools>" in text and '"name": "add"' in text and text.endswith("<|im_start|>assistant\n")
    assert "<tools>" not in qwen.decode(ChatFormat(qwen).render_prompt([{"role": "user", "content": "35271?"}]))


def _trl_template(name: str) -> str:
    trl = pytest.importorskip("trl")
    path = Path(trl.__file__).parent / "chat_templates" / name
    if not path.is_file():
        pytest.skip(f"trl {trl.__version__} ships no {name}")
    return path.read_text()


@pytest.mark.parametrize("name, kwargs", [("qwen2_5.jinja", {}), ("qwen3_training.jinja", {"enable_thinking": False})])
def test_chat_real_qwen_templates_reassemble(name: str, kwargs: dict[str, Any]) -> None:
    _reassemble(qwen_like_tokenizer(_trl_template(name)), [ADD_TOOL, MUL_TOOL], kwargs)


def test_chat_original_qwen3_template_is_refused() -> None:
    fmt = ChatFormat(qwen_like_tokenizer(_trl_template("qwen3.jinja")), [ADD_TOOL], {"enable_thinking": False})
    with pytest.raises(ValueError, match="not prefix-preserving"):
        fmt.reply_ids([Result("add", "18")])


# ---------------------------------------------------------------- choosing a format


def test_supports_tools(qwen: Any, chars: Any) -> None:
    assert supports_tools(qwen)
    assert not supports_tools(chars)
    plain = qwen_like_tokenizer("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}")
    assert not supports_tools(plain)


def test_make_format(qwen: Any, chars: Any) -> None:
    assert isinstance(make_format("auto", qwen, [ADD_TOOL]), ChatFormat)
    assert isinstance(make_format("auto", chars, None), TagFormat)
    assert isinstance(make_format("tag", qwen, None), TagFormat)
    chat = make_format("chat", qwen, [ADD_TOOL], {"enable_thinking": False})
    assert isinstance(chat, ChatFormat) and chat.tools == [ADD_TOOL]
    with pytest.raises(ValueError, match="'nope'"):
        make_format("nope", qwen, None)
