"""A character-level tokenizer saved in Hugging Face format, so transformers and vLLM load it unchanged.

Leaves out: byte fallback and unknown-character recovery; the embedded tasks use a closed alphabet.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
SPECIALS = [PAD, BOS, EOS]
ALPHABET = "0123456789+-*=?:;,. abcdefghijklmnopqrstuvwxyzTF()[]"
TRACE_CHARS = "#"  # the trace task's answer mark: only its tokenizer has it, so the digit-sum model's is unchanged
VOCAB_SIZE = 64  # padded past len(SPECIALS) + len(ALPHABET) so embedding rows stay aligned


def vocab(extra: str = "") -> dict[str, int]:
    """The fixed token → id map: specials first, then one id per character; `extra` characters after the alphabet
    (every other id stays)."""
    table = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in ALPHABET + extra:
        table[ch] = len(table)
    assert len(table) <= VOCAB_SIZE
    return table


def build_tokenizer(extra: str = "") -> PreTrainedTokenizerFast:
    """A `PreTrainedTokenizerFast` that splits text into single characters and adds BOS (`extra`: see `vocab`)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    table = vocab(extra)
    core = Tokenizer(models.WordLevel(vocab=table, unk_token=PAD))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, table[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=PAD,
        model_max_length=128,
        clean_up_tokenization_spaces=False,
    )


def save_tokenizer(path: Path, extra: str = "") -> None:
    """Write tokenizer files into `path` (a model directory)."""
    build_tokenizer(extra).save_pretrained(str(path))
