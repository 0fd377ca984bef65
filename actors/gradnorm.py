"""GVM's per-sample gradient norms, batched: one forward and one backward for a whole batch of samples.

GVM (research notes §3.2) needs, for each accepted sample, the norm of the gradient of its summed response
log-likelihood with respect to the input embedding matrix E only (the paper runs one forward and backward per
sample). Samples in a batch do not interact, so one backward of the summed loss to the input *activations* gives
every sample's dL_i/dx_{i,t}; sample i's gradient on E is those rows scattered onto its token ids. When the output
head shares E (tied embeddings, as in Qwen2.5-0.5B), E also gets the head's gradient (P_i - Y_i)^T H_i; its norm
and its overlap with the scattered rows come from T x T Gram matrices, so no per-sample V x d matrix is built.

`lm_head_grad_norms` is the cheaper estimate (the head's gradient only, one forward): offered as an option and
labelled as *not* the paper's quantity.
"""

from __future__ import annotations

from typing import Any

import torch

from rlpost.batching import pad_rows


def _forward(model: Any, sequences: list[list[int]], prompt_lens: list[int], device: torch.device,
             embeds_grad: bool) -> tuple[Any, ...]:
    ids, attn = pad_rows(sequences)
    ids, attn = ids.to(device), attn.to(device)
    embed = model.get_input_embeddings()
    inputs = embed(ids).detach().requires_grad_(embeds_grad)
    out = model(inputs_embeds=inputs, attention_mask=attn, use_cache=False, output_hidden_states=True)
    dtype = torch.promote_types(out.logits.dtype, torch.float32)  # bf16 models: fp32 math; fp64 stays fp64
    logits = out.logits[:, :-1].to(dtype)
    hidden = out.hidden_states[-1][:, :-1].to(dtype)  # the head's input (after the final norm)
    targets = ids[:, 1:]
    positions = torch.arange(targets.shape[1], device=device)[None, :]
    starts = torch.tensor([p - 1 for p in prompt_lens], device=device)[:, None]
    ends = torch.tensor([len(s) - 1 for s in sequences], device=device)[:, None]
    response = ((positions >= starts) & (positions < ends)).float()  # predicts a completion token
    return ids, inputs, logits, hidden, targets, response


def _head_terms(logits: torch.Tensor, targets: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
    """d(-sum log p(y_t)) / d logits per position: (softmax - onehot) on response positions, 0 elsewhere."""
    grad = torch.softmax(logits, dim=-1)
    grad.scatter_add_(-1, targets[..., None], -torch.ones_like(targets, dtype=grad.dtype)[..., None])
    return grad * response[..., None]


def embedding_grad_norms(model: Any, sequences: list[list[int]], prompt_lens: list[int],
                         device: torch.device | str = "cpu") -> list[float]:
    """||d(-sum_{t in response} log pi(y_t | y_<t)) / dE||_2 per sample, E the input embedding matrix."""
    device = torch.device(device)
    ids, inputs, logits, hidden, targets, response = _forward(model, sequences, prompt_lens, device, True)
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None]).squeeze(-1)
    loss = -(logp * response).sum()
    (x_grad,) = torch.autograd.grad(loss, inputs)  # [B, T, d]: dL_i / dx_{i,t}
    tied = model.get_output_embeddings() is not None and \
        model.get_output_embeddings().weight is model.get_input_embeddings().weight
    norms = []
    for i, seq in enumerate(sequences):
        row_ids, rows = ids[i, : len(seq)], x_grad[i, : len(seq)].to(logits.dtype)
        unique, inverse = torch.unique(row_ids, return_inverse=True)
        scattered = torch.zeros(len(unique), rows.shape[-1], dtype=rows.dtype, device=device).index_add_(
            0, inverse, rows)
        if not tied:
            norms.append(float(scattered.norm()))
            continue
        d_logits = _head_terms(logits[i].detach(), targets[i], response[i])  # [T-1, V]
        h = hidden[i].detach()                                                 # [T-1, d]
        head_sq = ((d_logits @ d_logits.T) * (h @ h.T)).sum()                  # ||D^T H||_F^2
        head_rows = d_logits[:, unique].T @ h                                  # rows of D^T H at the ids present
        total = head_sq + ((scattered + head_rows) ** 2).sum() - (head_rows ** 2).sum()
        norms.append(float(total.clamp_min(0).sqrt()))
    return norms


def lm_head_grad_norms(model: Any, sequences: list[list[int]], prompt_lens: list[int],
                       device: torch.device | str = "cpu") -> list[float]:
    """||d(-sum log pi) / dW_head||_F per sample from one forward (not GVM's quantity: a cheaper proxy)."""
    device = torch.device(device)
    with torch.no_grad():
        _, _, logits, hidden, targets, response = _forward(model, sequences, prompt_lens, device, False)
        d_logits = _head_terms(logits, targets, response)
        gram = torch.einsum("btv,bsv->bts", d_logits, d_logits) * torch.einsum("btd,bsd->bts", hidden, hidden)
    return [float(v) for v in gram.sum(dim=(1, 2)).clamp_min(0).sqrt()]


def grad_norms(model: Any, sequences: list[list[int]], prompt_lens: list[int], kind: str, micro_batch_size: int,
               device: torch.device) -> list[float]:
    """Per sample, the gradient norm w.r.t. the input embedding ('embedding') or the output head ('lm_head', a
    cheaper proxy), `micro_batch_size` sequences per forward."""
    fns = {"embedding": embedding_grad_norms, "lm_head": lm_head_grad_norms}
    if kind not in fns:
        raise ValueError(f"grad_norms: unknown kind {kind!r}; rlpost/choices.py GradNorm lists {sorted(fns)}")
    norms: list[float] = []
    for lo in range(0, len(sequences), micro_batch_size):
        norms += fns[kind](model, sequences[lo: lo + micro_batch_size], prompt_lens[lo: lo + micro_batch_size],
                           device)
    return norms
