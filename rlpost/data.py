"""Prompt datasets: the embedded synthetic suite, local jsonl or parquet files, or Hugging Face datasets, as
`Prompt` lists.

Every problem is reported, never silently fixed: a missing column names the column and the ones that exist, and
prompts over the token limit are counted and shown. Columns can be renamed (data.columns) and prompts wrapped in
the tokenizer's chat template (data.chat_template, data.system_prompt).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlpost.config import DataConfig
from rlpost.types import Prompt


class DataError(ValueError):
    """A dataset (or the model's tokenizer that reads it) that cannot be used as configured."""


def load_rows(cfg: DataConfig, split: str) -> list[dict[str, Any]]:
    """Rows of one split, with data.columns renames applied."""
    rows = _raw_rows(cfg, split)
    if cfg.columns and rows:
        absent = sorted(old for old in cfg.columns.values() if old not in rows[0])
        if absent:
            raise DataError(f"data.columns renames {absent}, which split {split!r} does not have; columns: "
                            f"{sorted(rows[0])}")
        renamed = {old: new for new, old in cfg.columns.items()}
        rows = [{renamed.get(k, k): v for k, v in row.items()} for row in rows]
    return rows


def _raw_rows(cfg: DataConfig, split: str) -> list[dict[str, Any]]:
    if cfg.source == "embedded":
        from rlpost.embedded.tasks import make_suite

        suite = make_suite(cfg.n_train_per_source, cfg.n_eval_per_source, seed=cfg.seed,
                           sources=tuple(cfg.embedded_sources))
        if split not in suite:
            raise DataError(f"data.train_split/eval_split {split!r}: the embedded suite has {sorted(suite)}")
        return suite[split]
    if cfg.source == "jsonl":
        path = Path(cfg.path.format(split=split))
        if not path.is_file():
            raise DataError(f"data.path: jsonl file not found: {path}")
        return _jsonl_rows(path)
    if cfg.source == "parquet":
        path = Path(cfg.path.format(split=split))
        if not path.is_file():
            raise DataError(f"data.path: parquet file not found: {path}")
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except Exception as err:
            raise DataError(f"{path}: not a readable parquet file ({type(err).__name__}: {err})") from None
    from datasets import load_dataset

    try:
        dataset = load_dataset(cfg.path, cfg.name or None, split=split)
    except Exception as err:  # hub, network, missing split: one line naming the dataset, not a stack of frames
        raise DataError(f"data.path {cfg.path!r} (name {cfg.name!r}, split {split!r}): cannot load the Hugging "
                        f"Face dataset: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
    if cfg.n_eval_per_source and split == cfg.eval_split:
        dataset = dataset.select(range(min(len(dataset), cfg.n_eval_per_source)))
    return [dict(row) for row in dataset]


def _jsonl_rows(path: Path) -> list[dict[str, Any]]:
    """One JSON object per line; a UTF-8 byte-order mark is allowed. Lines are split on newlines only: str.splitlines
    would also split inside JSON strings holding U+2028 or U+0085, which JSON allows unescaped."""
    data = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    rows = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{path}:{number}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column "
                            f"{err.start + 1}); jsonl files must be UTF-8") from None
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number}: not valid JSON ({err})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{number}: a row must be a JSON object ({{\"column\": value, ...}}), got "
                            f"{type(row).__name__} {line.strip()[:40]}")
        rows.append(row)
    return rows


def to_prompts(rows: list[dict[str, Any]], cfg: DataConfig, tokenizer: Any, split: str,
               tools: dict[str, list[dict[str, Any]]] | None = None) -> list[Prompt]:
    """Tokenize rows into Prompts; fail with a clear message on empty data, missing columns or over-long prompts.
    `tools`: the tool schemas a chat template lists, per environment name (a row's 'environment' column, else
    'default'), for multi-turn recipes in the chat tool format."""
    if not rows:
        raise DataError(f"split {split!r} of data source {cfg.source!r} is empty")
    for key in (cfg.prompt_key, cfg.answer_key):
        if key not in rows[0]:
            raise DataError(f"split {split!r}: column {key!r} (data.{_which(cfg, key)}) not found; "
                            f"columns: {sorted(rows[0])}")
    prompts, too_long = [], []
    for uid, row in enumerate(rows):
        absent = [k for k in (cfg.prompt_key, cfg.answer_key) if k not in row or row[k] is None]
        if absent:
            raise DataError(f"split {split!r}: row {uid} has no value in column(s) {absent}; every row needs "
                            f"data.prompt_key and data.answer_key")
        _check_prompt(row[cfg.prompt_key], f"split {split!r}: row {uid}: column {cfg.prompt_key!r}")
        listed = None if tools is None else tools.get(str(row.get("environment", "default")))
        text, ids = encode_prompt(row[cfg.prompt_key], cfg, tokenizer, listed)
        if len(ids) > cfg.max_prompt_tokens:
            too_long.append((uid, len(ids)))
        columns = {k: v for k, v in row.items() if k != cfg.prompt_key}
        columns.setdefault("answer", row[cfg.answer_key])
        source = str(row.get(cfg.source_key, "default"))
        columns["data_source"] = source
        messages = list(row[cfg.prompt_key]) if isinstance(row[cfg.prompt_key], list) else None
        prompts.append(Prompt(uid=uid, text=text, token_ids=list(ids), answer=str(row[cfg.answer_key]),
                              data_source=source, columns=columns, messages=messages))
    if too_long:
        worst = max(n for _, n in too_long)
        raise DataError(f"split {split!r}: {len(too_long)} of {len(rows)} prompts exceed data.max_prompt_tokens="
                        f"{cfg.max_prompt_tokens} (longest {worst} tokens, first at row {too_long[0][0]}); "
                        "raise the limit or filter the data — prompts are never cut silently")
    return prompts


def _check_prompt(prompt: Any, where: str) -> None:
    """A prompt is a non-empty string or a non-empty list of chat messages, each {role: str, content: str}.

    Anything else is refused rather than stringified: a number, a dict or a list of ids in the prompt column is
    almost always the wrong column (data.prompt_key) or a serialisation slip, and an empty prompt gives the policy
    nothing to answer. A single message given as a dict is refused too, with the fix (wrap it in a list).
    """
    if isinstance(prompt, str):
        if not prompt.strip():
            raise DataError(f"{where} is an empty prompt")
        return
    if isinstance(prompt, dict):
        raise DataError(f"{where} is a dict; a prompt is a string or a list of {{role, content}} messages (wrap "
                        "a single message in a list)")
    if not isinstance(prompt, list):
        raise DataError(f"{where} is {type(prompt).__name__} {str(prompt)[:40]}; a prompt is a string or a list "
                        "of {role, content} messages (is data.prompt_key the right column?)")
    if not prompt:
        raise DataError(f"{where} is an empty message list")
    for index, message in enumerate(prompt):
        if not (isinstance(message, dict) and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)):
            raise DataError(f"{where}: message {index} is {str(message)[:60]}; each message must be a "
                            "{role: str, content: str} mapping")


def encode_prompt(prompt: Any, cfg: DataConfig, tokenizer: Any, tools: list[dict[str, Any]] | None = None
                  ) -> tuple[str, list[int]]:
    """(text reward functions see, token ids vLLM continues). A prompt is a string or a list of chat messages
    ({role, content}); it goes through the tokenizer's chat template when data.chat_template is 'auto' and the
    tokenizer has one (message lists need one), with data.system_prompt first."""
    messages = prompt if isinstance(prompt, list) else None
    text = str(prompt) if messages is None else "\n".join(str(m.get("content", "")) for m in messages)
    templated = cfg.chat_template == "auto" and getattr(tokenizer, "chat_template", None)
    if messages is not None and not templated:
        raise DataError(f"data.{cfg.prompt_key!r} holds chat messages but the tokenizer has no chat template "
                        f"(data.chat_template={cfg.chat_template!r}); give plain-text prompts or a chat model")
    if not templated:
        return text, list(tokenizer(text)["input_ids"])
    chat = list(messages) if messages is not None else [{"role": "user", "content": text}]
    if cfg.system_prompt and not any(m.get("role") == "system" for m in chat):
        chat.insert(0, {"role": "system", "content": cfg.system_prompt})
    ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True,
                                        **({"tools": tools} if tools else {}))
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # newer transformers return a BatchEncoding
        ids = ids["input_ids"]
    return text, list(ids)


def _which(cfg: DataConfig, key: str) -> str:
    return "prompt_key" if key == cfg.prompt_key else "answer_key"


def per_source(prompts: list[Prompt], limit: int) -> list[Prompt]:
    """At most `limit` prompts of each data_source (0 = all), keeping order."""
    if limit <= 0:
        return prompts
    counts: dict[str, int] = {}
    kept = []
    for prompt in prompts:
        if counts.get(prompt.data_source, 0) < limit:
            counts[prompt.data_source] = counts.get(prompt.data_source, 0) + 1
            kept.append(prompt)
    return kept
