"""Datasets: local parquet and jsonl files, column renames, chat templates, and the errors for each misuse."""

import dataclasses
import json

import pytest

from rlpost.data import DataError, load_rows, to_prompts
from rlpost.embedded.tokenizer import build_tokenizer
from rlpost.recipes import load_config

ROWS = [{"question": "1+2=", "solution": "3", "level": "easy"}, {"question": "10+20=", "solution": "30",
                                                                 "level": "hard"}]


def _data(tmp_path, source, **extra):
    path = str(tmp_path / f"{{split}}.{source}")
    return dataclasses.replace(load_config("quickstart").data, source=source, path=path, prompt_key="question",
                               answer_key="answer", source_key="level", columns={"answer": "solution"}, **extra)


def test_parquet_and_jsonl_give_the_same_prompts_with_renamed_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "train.parquet")
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS))
    tokenizer = build_tokenizer()
    seen = []
    for source in ("parquet", "jsonl"):
        cfg = _data(tmp_path, source)
        prompts = to_prompts(load_rows(cfg, "train"), cfg, tokenizer, "train")
        seen.append([(p.text, p.answer, p.data_source, p.columns["answer"], p.token_ids) for p in prompts])
    assert seen[0] == seen[1]
    assert [(t, a, s) for t, a, s, _, _ in seen[0]] == [("1+2=", "3", "easy"), ("10+20=", "30", "hard")]


def test_bad_rename_and_missing_file_are_named(tmp_path):
    cfg = dataclasses.replace(_data(tmp_path, "jsonl"), columns={"answer": "sol"})
    (tmp_path / "train.jsonl").write_text(json.dumps(ROWS[0]))
    with pytest.raises(DataError, match=r"data.columns renames \['sol'\].*columns: \['level', 'question'"):
        load_rows(cfg, "train")
    with pytest.raises(DataError, match="parquet file not found"):
        load_rows(_data(tmp_path, "parquet"), "train")


def test_chat_template_wraps_prompts_with_the_system_message():
    tokenizer = build_tokenizer()
    tokenizer.chat_template = ("{% for m in messages %}{{ m.role[0] }}:{{ m.content }};{% endfor %}"
                               "{% if add_generation_prompt %}a:{% endif %}")
    cfg = dataclasses.replace(load_config("quickstart").data, system_prompt="be brief")
    rows = [{"prompt": "1+2=", "answer": "3"}, {"prompt": [{"role": "user", "content": "2+2="}], "answer": "4"}]
    wrapped = to_prompts(rows, cfg, tokenizer, "train")
    decoded = [tokenizer.decode(p.token_ids, skip_special_tokens=True) for p in wrapped]
    assert decoded == ["s:be brief;u:1+2=;a:", "s:be brief;u:2+2=;a:"]
    assert [p.text for p in wrapped] == ["1+2=", "2+2="]
    plain = to_prompts(rows[:1], dataclasses.replace(cfg, chat_template="none"), tokenizer, "train")
    assert tokenizer.decode(plain[0].token_ids, skip_special_tokens=True) == "1+2="


def test_message_prompts_need_a_chat_template():
    cfg = load_config("quickstart").data
    with pytest.raises(DataError, match="chat messages but the tokenizer has no chat template"):
        to_prompts([{"prompt": [{"role": "user", "content": "1+2="}], "answer": "3"}], cfg, build_tokenizer(), "x")


def test_empty_data_and_a_row_missing_its_answer_are_named():
    cfg = load_config("quickstart").data
    with pytest.raises(DataError, match="split 'train' of data source 'embedded' is empty"):
        to_prompts([], cfg, build_tokenizer(), "train")
    rows = [{"prompt": "1+2=", "answer": "3"}, {"prompt": "2+2="}]
    with pytest.raises(DataError, match=r"row 1 has no value in column\(s\) \['answer'\]"):
        to_prompts(rows, cfg, build_tokenizer(), "train")


def test_prompts_over_the_limit_are_reported_not_cut():
    cfg = dataclasses.replace(load_config("quickstart").data, max_prompt_tokens=6)
    rows = [{"prompt": "1+2=", "answer": "3"}, {"prompt": "123+456=", "answer": "579"}]
    with pytest.raises(DataError, match=r"1 of 2 prompts exceed data.max_prompt_tokens=6 \(longest 9 tokens, first "
                                        r"at row 1\)"):
        to_prompts(rows, cfg, build_tokenizer(), "train")


def test_tokenizer_larger_than_the_model_vocabulary_is_refused(tmp_path):
    from transformers import LlamaConfig

    from rlpost.app.prepare import check_vocabulary

    tokenizer = build_tokenizer()
    LlamaConfig(vocab_size=len(tokenizer)).save_pretrained(tmp_path / "ok")
    check_vocabulary(str(tmp_path / "ok"), tokenizer)
    LlamaConfig(vocab_size=len(tokenizer) - 10).save_pretrained(tmp_path / "small")
    with pytest.raises(DataError, match=f"tokenizer has {len(tokenizer)} tokens but the model's embedding has "
                                        f"{len(tokenizer) - 10} rows"):
        check_vocabulary(str(tmp_path / "small"), tokenizer)


def _jsonl(tmp_path, body: bytes):
    (tmp_path / "train.jsonl").write_bytes(body)
    return dataclasses.replace(load_config("quickstart").data, source="jsonl", path=str(tmp_path / "{split}.jsonl"))


def test_non_utf8_jsonl_names_file_and_line(tmp_path):
    cfg = _jsonl(tmp_path, b'{"prompt": "1+2=", "answer": "3"}\n{"prompt": "caf\xe9", "answer": "1"}\n')
    with pytest.raises(DataError, match=r"train.jsonl:2: not UTF-8 text \(byte 0xe9 at column 16\)"):
        load_rows(cfg, "train")


@pytest.mark.parametrize("line, kind", [(b"42", "int 42"), (b"[1, 2]", "list [1, 2]"), (b'"text"', 'str "text"'),
                                        (b"null", "NoneType null")])
def test_jsonl_line_that_is_not_an_object_is_named(tmp_path, line, kind):
    cfg = _jsonl(tmp_path, b'{"prompt": "1+2=", "answer": "3"}\n\n' + line + b"\n")
    expected = r"train.jsonl:3: a row must be a JSON object .*, got " + kind.replace("[", r"\[")
    with pytest.raises(DataError, match=expected):
        load_rows(cfg, "train")


def test_jsonl_keeps_a_bom_and_line_separators_inside_strings(tmp_path):
    rows = [{"prompt": "a\u2028b\x85c", "answer": "1"}, {"prompt": "2+2=", "answer": "4"}]
    body = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode()
    assert load_rows(_jsonl(tmp_path, b"\xef\xbb\xbf" + body + b"\r\n"), "train") == rows


@pytest.mark.parametrize("prompt, fragment", [
    ([1, 2, 3], r"row 1: column 'prompt': message 0 is 1; each message must be a \{role: str, content: str\}"),
    ([{"role": "user"}], r"row 1: column 'prompt': message 0 is \{'role': 'user'\}"),
    ([{"role": "user", "content": "hi"}, {"content": "x"}], "row 1: column 'prompt': message 1 is"),
    ([], "row 1: column 'prompt' is an empty message list"),
    ("", "split 'train': row 1: column 'prompt' is an empty prompt"),
    ("  \n", "row 1: column 'prompt' is an empty prompt"),
    ({"role": "user", "content": "2+2="}, r"row 1: column 'prompt' is a dict; .* \(wrap a single message in a list\)"),
    (42, "row 1: column 'prompt' is int 42; a prompt is a string or a list"),
])
def test_bad_prompts_name_the_row(prompt, fragment):
    tokenizer = build_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}{{ m.content }}{% endfor %}"
    rows = [{"prompt": "1+2=", "answer": "3"}, {"prompt": prompt, "answer": "4"}]
    with pytest.raises(DataError, match=fragment):
        to_prompts(rows, load_config("quickstart").data, tokenizer, "train")


def test_parquet_prompt_of_token_ids_is_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"prompt": [5, 6], "answer": "3"}]), tmp_path / "train.parquet")
    cfg = dataclasses.replace(load_config("quickstart").data, source="parquet", path=str(tmp_path / "{split}.parquet"))
    with pytest.raises(DataError, match="row 0: column 'prompt': message 0 is 5"):
        to_prompts(load_rows(cfg, "train"), cfg, build_tokenizer(), "train")


def test_non_string_answers_are_accepted_and_reach_rewards_raw():
    """Answers stay as the data has them (a number, a list of accepted answers): reward functions get the raw value
    in their column; Prompt.answer, for the built-ins, is its string."""
    rows = [{"prompt": "1+2=", "answer": 3}, {"prompt": "2+2=", "answer": ["4", "four"]}]
    prompts = to_prompts(rows, load_config("quickstart").data, build_tokenizer(), "train")
    assert [p.answer for p in prompts] == ["3", "['4', 'four']"]
    assert [p.columns["answer"] for p in prompts] == [3, ["4", "four"]]
