"""GVM's batched per-sample embedding-gradient norm equals a direct per-sample autograd computation (the paper's
one-sample-at-a-time procedure) on the same model, for untied and tied embeddings; so does the lm_head proxy."""

from __future__ import annotations

import pytest
import torch

from actors.gradnorm import embedding_grad_norms, lm_head_grad_norms

SEQUENCES = [[1, 5, 7, 9, 4, 4, 2], [1, 6, 3, 8], [1, 9, 9, 9, 9, 3, 5, 5, 2, 7]]
PROMPT_LENS = [3, 2, 5]


def _model(tied: bool):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                         tie_word_embeddings=tied)
    return LlamaForCausalLM(config).double().eval()


def _direct(model, seq: list[int], prompt_len: int, weight) -> float:
    """One sample at a time: -sum of response logprobs, autograd w.r.t. one weight, its norm."""
    ids = torch.tensor([seq])
    logits = model(input_ids=ids).logits[0, :-1]
    logp = torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None])[:, 0]
    (grad,) = torch.autograd.grad(-logp[prompt_len - 1:].sum(), weight)
    return float(grad.norm())


@pytest.mark.parametrize("tied", [False, True])
def test_embedding_gradient_norm_equals_per_sample_autograd(tied):
    model = _model(tied)
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied
    expected = [_direct(model, s, p, model.model.embed_tokens.weight) for s, p in zip(SEQUENCES, PROMPT_LENS)]
    got = embedding_grad_norms(model, SEQUENCES, PROMPT_LENS)
    assert got == pytest.approx(expected, rel=1e-9)
    assert len(set(round(g, 6) for g in got)) == 3


def test_lm_head_proxy_equals_the_head_gradient_norm():
    model = _model(False)
    expected = [_direct(model, s, p, model.lm_head.weight) for s, p in zip(SEQUENCES, PROMPT_LENS)]
    assert lm_head_grad_norms(model, SEQUENCES, PROMPT_LENS) == pytest.approx(expected, rel=1e-9)
