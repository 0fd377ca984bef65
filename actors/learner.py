"""Learner ranks: one DeepSpeed engine per Ray actor, joined in a torch.distributed group (gloo on CPU, NCCL on GPU).

The learner is algorithm-blind: it computes logprobs, applies the loss spec it is given to a batch whose
advantages and per-token weights the driver computed, and reports gradient statistics (and GVM's per-sample
gradient norms, actors/gradnorm.py). Rank 0 picks the rendezvous address; the other ranks join it. A frozen
reference model is loaded when the objective uses a KL term (a full copy on every rank: fine for the model sizes
one node trains). It writes Hugging Face checkpoints (`save_hf`) and DeepSpeed state for resume
(`save_state` / `load_state`). The trainer side of weight sync is inherited from the transports' modules:
`ObjectStoreSender` (actors/weight_sync.py) and `NativeVllmSender` (actors/weight_sync_gpu.py).
Micro-batches are padded rows, or packed rows with position ids (learner.packing, rlpost/batching.py `pack_rows`).
Leaves out: a ZeRO-3-sharded reference model.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import Any

from actors.flops import matmul_params, peak_flops
from actors.learner_io import CheckpointWriter
from actors.runtime import configure_process_env, injected_fault
from actors.weight_sync import ObjectStoreSender
from actors.weight_sync_gpu import NativeVllmSender, free_port

configure_process_env()

import torch

from rlpost.batching import expand_shard, minibatch_bounds, pad_rows, split_micro
from rlpost.config import LearnerConfig, ModelConfig
from rlpost.flops import FORWARD, FORWARD_BACKWARD, sequence_flops
from rlpost.losses import LossSpec, kl_estimate, policy_loss
from rlpost.types import CompactShard, LearnerBatch


def token_logprobs(model: Any, input_ids_BT: torch.Tensor, attention_mask_BT: torch.Tensor,
                   entropy: str = "none", position_ids_BT: torch.Tensor | None = None,
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p(token t+1 | tokens ≤ t) for every position, [B, T-1], and the entropy of each next-token distribution.

    entropy: 'none' skips it, 'metric' computes it without a graph, 'grad' keeps its graph (entropy bonus).
    position_ids_BT (packed rows): given instead of the attention mask, so each packed sequence attends to itself.
    """
    if position_ids_BT is None:
        inputs = {"attention_mask": attention_mask_BT}
    else:
        inputs = {"position_ids": position_ids_BT}
    logits = model(input_ids=input_ids_BT, use_cache=False, **inputs).logits
    log_probs = torch.log_softmax(logits[:, :-1].to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    chosen = log_probs.gather(-1, input_ids_BT[:, 1:, None]).squeeze(-1)
    if entropy == "none":
        return chosen, None
    with torch.set_grad_enabled(entropy == "grad" and torch.is_grad_enabled()):
        ent = -(log_probs.exp() * log_probs).sum(-1)
    return chosen, ent


def load_model(path: str, cfg: ModelConfig) -> Any:
    """The Hugging Face causal LM at `path` in the recipe's dtype and attention implementation (typed Any:
    transformers' own annotations reject `.to`)."""
    from transformers import AutoModelForCausalLM

    extra: dict[str, Any] = {} if cfg.attn_implementation == "auto" else {"attn_implementation":
                                                                          cfg.attn_implementation}
    dtype = torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float32
    if cfg.load_in_4bit:  # QLoRA: NF4 base (bitsandbytes, CUDA), computed in the recipe's dtype
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        extra["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                          bnb_4bit_compute_dtype=dtype, bnb_4bit_use_double_quant=True)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=cfg.trust_remote_code,
                                                     device_map={"": torch.cuda.current_device()}, **extra)
        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=cfg.trust_remote_code, **extra)


def ds_config(cfg: LearnerConfig, dtype: str) -> dict[str, Any]:
    """DeepSpeed config: the caller owns accumulation (one `step()` per optimizer step, any number of backwards);
    learner.deepspeed is merged over it key by key."""
    base = {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": 1,
        "managed_gradient_accumulation": False,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": dtype == "bfloat16"},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    return deep_merge(base, dict(cfg.deepspeed))


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`base` with `extra`'s values over it; nested dicts merge instead of replacing each other."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class LearnerWorker(ObjectStoreSender, NativeVllmSender, CheckpointWriter):
    """One learner rank (wrapped by `ray.remote` in actors/build.py); the trainer side of weight sync is inherited
    from the two transports' senders (`named_weights`; `free_ports`, `init_weight_transfer`, `send_weights`...), and
    checkpoint writing from `CheckpointWriter` (actors/learner_io.py)."""

    def __init__(self, rank: int, world_size: int, model_cfg: ModelConfig, learner_cfg: LearnerConfig,
                 model_path: str, load_reference: bool = False) -> None:
        self.rank, self.world_size = rank, world_size
        self.model_cfg, self.cfg, self.model_path = model_cfg, learner_cfg, model_path
        self.load_reference = load_reference
        self.engine: Any = None
        self.reference: Any = None
        self.shape = (0, 0, 0)  # what sequence_flops needs: matmul parameters, layers, hidden size
        self.peak_flops = float("nan")
        self.version = 0  # policy version: train calls so far (checkpointed); weight sync stamps it on the engines

    def rendezvous(self) -> tuple[str, int]:
        """Rank 0 only: the address and a free port the group will meet at."""
        return socket.gethostbyname(socket.gethostname()), free_port()

    def init(self, master_addr: str, master_port: int, timeout_s: float) -> None:
        """Join the process group and build the DeepSpeed engine (blocks until every rank has joined)."""
        import deepspeed

        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(self.rank),
                          WORLD_SIZE=str(self.world_size), LOCAL_RANK="0")
        use_cuda = torch.cuda.is_available()
        backend = self.cfg.backend if self.cfg.backend != "auto" else ("nccl" if use_cuda else "gloo")
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group(backend=backend, rank=self.rank, world_size=self.world_size,
                                                 timeout=timedelta(seconds=timeout_s))
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)
        torch.manual_seed(self.cfg.seed)
        model = load_model(self.model_path, self.model_cfg)
        if use_cuda and not self.model_cfg.load_in_4bit:  # a 4-bit model is placed on the GPU as it loads
            model = model.cuda()
        self.shape = (matmul_params(model), int(getattr(model.config, "num_hidden_layers", 0)),
                      int(getattr(model.config, "hidden_size", 0)))
        if self.model_cfg.lora_rank:
            from actors.lora import wrap

            model = wrap(model, self.model_cfg)  # the base is frozen: the optimizer holds the adapter only
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=self.cfg.lr, betas=(self.cfg.betas[0], self.cfg.betas[1]),
                                      eps=self.cfg.adam_eps, weight_decay=self.cfg.weight_decay)
        self.engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer,
                                               config=ds_config(self.cfg, self.model_cfg.dtype))
        if self.load_reference:  # at start, so a reference that does not fit fails before the first step
            self._load_reference()

    def _load_reference(self) -> None:
        """The frozen initial policy, from the same files the learner started from; with LoRA none is loaded: the
        reference is the model with its adapter off."""
        if self.model_cfg.lora_rank:
            return
        self.reference = load_model(self.model_path, self.model_cfg).to(self.device)
        self.reference.eval().requires_grad_(False)

    def has_reference(self) -> bool:
        return self.reference is not None or bool(self.model_cfg.lora_rank)

    def _reference_logprobs(self, *args: Any) -> torch.Tensor:
        """The reference policy's token logprobs (no graph): the loaded copy, or the base with the adapter off."""
        with torch.no_grad():
            if self.model_cfg.lora_rank:
                with self.engine.module.disable_adapter():
                    return token_logprobs(self.engine, *args)[0]
            if self.reference is None:
                self._load_reference()
            return token_logprobs(self.reference, *args)[0]

    def _memory(self) -> dict[str, float]:
        """What this rank holds, as train sums: trainable parameters and process peak RSS (largest rank), optimizer
        state in MB (added over ranks)."""
        import resource

        from actors.lora import trainable_parameters

        optimizer = getattr(self.engine.optimizer, "optimizer", self.engine.optimizer)  # DeepSpeed's ZeRO wrapper
        state = [t for per_param in optimizer.state.values() if isinstance(per_param, dict)
                 for t in per_param.values() if torch.is_tensor(t)]
        return {"trainable_params_max": float(trainable_parameters(self.engine.module)),
                "optimizer_state_mb": sum(t.numel() * t.element_size() for t in state) / 2**20,
                "peak_rss_mb_max": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}

    @property
    def device(self) -> torch.device:
        return self.engine.device

    def sequence_logprobs(self, sequences: list[list[int]], base: bool = False) -> list[list[float]]:
        """Logprob of every token after the first, per sequence (all ranks run it: ZeRO-3 forwards are collective);
        `base`: a LoRA model's with its adapter off."""
        import contextlib

        ids, attn = pad_rows(sequences)
        self.engine.eval()
        off = self.engine.module.disable_adapter() if base and self.model_cfg.lora_rank else contextlib.nullcontext()
        with torch.no_grad(), off:
            lp, _ = token_logprobs(self.engine, ids.to(self.device), attn.to(self.device))
        self.engine.train()
        return [lp.cpu()[i, : len(s) - 1].tolist() for i, s in enumerate(sequences)]

    def reference_kl(self, sequences: list[list[int]], prompt_lens: list[int], estimator: str) -> list[float]:
        """Per sequence, the KL estimate to the reference summed over its completion tokens (KL-in-reward)."""
        ids, attn = pad_rows(sequences)
        ids, attn = ids.to(self.device), attn.to(self.device)
        with torch.no_grad():
            lp, _ = token_logprobs(self.engine, ids, attn)
        ref = self._reference_logprobs(ids, attn)
        kl = kl_estimate(lp, ref, estimator).cpu()
        return [float(kl[i, p - 1: len(s) - 1].sum()) for i, (s, p) in enumerate(zip(sequences, prompt_lens))]

    def grad_norms(self, sequences: list[list[int]], prompt_lens: list[int], kind: str) -> list[float]:
        """Per sample, GVM's gradient norm of its summed response log-likelihood (actors/gradnorm.py), in
        micro-batches; no weight changes."""
        from actors.gradnorm import grad_norms

        self.engine.eval()
        try:
            return grad_norms(self.engine.module, sequences, prompt_lens, kind, self.cfg.micro_batch_size, self.device)
        finally:
            self.engine.train()

    def train(self, shard: CompactShard, loss: LossSpec, micro_batches: int,
              max_tokens_per_micro: int = 0) -> dict[str, float]:
        """`loss.epochs` passes of `loss.updates_per_batch` optimizer steps over this rank's shard.

        Each mini-batch runs `micro_batches` backwards on every rank (padding with fully masked rows), because
        ZeRO-2/3 reduce gradients inside each backward; with a `max_tokens_per_micro` budget (the driver's
        learner.max_tokens_per_micro) rows are grouped by length under it (rlpost/batching.py). Old logprobs (and
        reference logprobs) come from this learner before the first update. Returns weighted sums the driver adds
        up over ranks.
        """
        injected_fault(f"learner.train.rank{self.rank}")
        padded = expand_shard(shard)  # padded here, not on the driver
        k, epochs = loss.updates_per_batch, loss.epochs
        plan = [_pad_count(split_micro(mini, self.cfg.micro_batch_size, max_tokens_per_micro, self.cfg.packing),
                           micro_batches) for mini in _minibatches(padded, k)]
        # pi_old (the proximal policy) is the weights before the first update. With one update per batch those are
        # the weights of the only forward, so its detached logprobs serve the ratio and the TIS weight: no extra
        # forward pass, the same values (the frozen pass runs the same micro-batches in the same mode).
        off_policy = k > 1 or epochs > 1
        with_ref = loss.needs_reference
        before = [[self._frozen_logprobs(m, off_policy, with_ref) for m in micros] for micros in plan]
        frozen_passes = FORWARD * (int(off_policy) + int(with_ref))
        if not self.peak_flops > 0:  # measured here, not at start-up, where vLLM may still be loading on these cores
            self.peak_flops = peak_flops(self.device, self.engine.module.dtype)
        sums = {"model_flops": sum(_flops(m, self.shape, frozen_passes) for micros in plan for m in micros),
                "peak_flops": self.peak_flops}
        entropy_mode = "grad" if loss.entropy_coef else "metric"
        for _ in range(epochs):
            for micros, frozen in zip(plan, before):
                for micro, (old_lp, ref_lp) in zip(micros, frozen):
                    batch = micro.to(self.device)
                    logprobs, entropy = token_logprobs(self.engine, batch.input_ids_BT, batch.attention_mask_BT,
                                                       entropy_mode, batch.position_ids_BT)
                    old_lp = logprobs.detach() if old_lp is None else old_lp.to(self.device)
                    value, metrics = policy_loss(
                        logprobs, old_lp, batch.advantages_BT, batch.loss_weights_BT, batch.loss_mask_BT, loss,
                        ref_logprobs_BT=None if ref_lp is None else ref_lp.to(self.device),
                        rollout_logprobs_BT=batch.rollout_logprobs_BT, entropy_BT=entropy,
                        metric_weights_BT=batch.metric_weights_BT)
                    # DeepSpeed averages gradients over ranks; the weights already hold the global mean: undo it.
                    self.engine.backward(value * self.world_size, scale_wrt_gas=False)
                    metrics["loss"] = value.detach()
                    _accumulate(sums, metrics, 1.0 / epochs)
                    _accumulate(sums, _mismatch(batch, old_lp), 1.0 / epochs)
                    _accumulate(sums, _positions(batch), 1.0 / epochs)
                    _accumulate(sums, {"model_flops": _flops(micro, self.shape, FORWARD_BACKWARD)}, 1.0)
                    gap = (batch.rollout_logprobs_BT - old_lp).abs() * batch.loss_mask_BT
                    _accumulate(sums, {"logprob_mismatch_max": gap.max()}, None)
                self.engine.step()
                grad_norm = float(self.engine.get_global_grad_norm() or 0.0)
                _accumulate(sums, {"grad_norm": grad_norm / self.world_size}, 1.0 / (k * epochs))
        sums["loss"] = sums.get("loss", 0.0) / k
        sums.update(self._memory())
        self.version += 1
        return sums

    def _frozen_logprobs(self, micro: LearnerBatch, off_policy: bool, with_ref: bool) -> tuple[Any, Any]:
        """(old logprobs or None when on-policy, reference logprobs or None) of one micro-batch, on the CPU."""
        if not off_policy and not with_ref:
            return None, None
        on = micro.to(self.device)
        args = (on.input_ids_BT, on.attention_mask_BT, "none", on.position_ids_BT)
        with torch.no_grad():
            old = token_logprobs(self.engine, *args)[0].cpu() if off_policy else None
        ref = self._reference_logprobs(*args).cpu() if with_ref else None
        return old, ref

    def ping(self) -> int:
        return self.rank


def _flops(micro: LearnerBatch, shape: tuple[int, int, int], passes: int) -> float:
    """Model FLOPs of `passes` forward-equivalents over the micro-batch's trained rows (rlpost/flops.py); `shape`:
    matmul parameters, layers, hidden size."""
    if not passes:
        return 0.0
    trained = (micro.loss_mask_BT.sum(dim=1) > 0).tolist()
    if micro.position_ids_BT is None:
        lengths = [n for n, keep in zip(micro.sequence_lengths(), trained) if keep]
    else:  # one packed row
        lengths = micro.sequence_lengths() if any(trained) else []
    return sequence_flops(lengths, *shape, passes)


def _minibatches(shard: LearnerBatch, count: int) -> list[LearnerBatch]:
    """The shard cut into `count` mini-batches (minibatch_bounds); an empty one is a fully masked row."""
    return [shard.rows(lo, hi) if hi > lo else shard.masked_row()
            for lo, hi in minibatch_bounds(shard.input_ids_BT.shape[0], count)]


def _pad_count(batches: list[LearnerBatch], count: int) -> list[LearnerBatch]:
    """Append fully masked one-row batches until there are `count` of them."""
    if len(batches) > count:
        raise ValueError(f"shard needs {len(batches)} micro-batches but the step plans {count}")
    return batches + [batches[-1].masked_row() for _ in range(count - len(batches))]


def _mismatch(batch: LearnerBatch, old_lp: torch.Tensor) -> dict[str, torch.Tensor]:
    """How far vLLM's sampling logprobs are from the learner's (before the update), as weighted sums."""
    # float64: the gap is ~1e-7 in fp32, and exp(-x) + x - 1 would round to exactly 0.
    log_ratio = ((batch.rollout_logprobs_BT - old_lp) * batch.loss_mask_BT).double()  # log pi_vllm / pi_learner
    w = batch.metric_weights_BT.double()
    return {
        "logprob_mismatch_mean": (log_ratio.abs() * w).sum(),
        "mismatch_kl_k3": ((torch.exp(-log_ratio) + log_ratio - 1.0) * w).sum(),  # KL(vllm || learner), k3
    }


def _positions(batch: LearnerBatch) -> dict[str, float]:
    """Token positions one forward computes, and those that belong to rows carrying loss (the rest is padding, or a
    filler row that keeps the ranks' collective counts equal)."""
    attention = batch.attention_mask_BT
    trained_rows = batch.loss_mask_BT.sum(dim=1) > 0
    return {"positions": float(attention.numel()), "trained_positions": float(attention[trained_rows].sum())}


def _accumulate(sums: dict[str, float], metrics: dict[str, Any], scale: float | None) -> None:
    """Add weighted metrics (scale) or keep the max (scale None)."""
    for key, value in metrics.items():
        v = float(value)
        if scale is None:
            sums[key] = max(sums.get(key, float("-inf")), v)
        else:
            sums[key] = sums.get(key, 0.0) + v * scale
