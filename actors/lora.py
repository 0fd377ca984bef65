"""LoRA on the learner (PEFT): wrapping the model, the adapter as PEFT saves it, and the merged weights computed on
the fly for engines that get full weights.

The base weights are never changed: `merged_params` yields base + delta as new tensors, so no merge leaks into the
next sync or into training (the failure users of other systems report: an adapter merged in place, then merged again).
Under ZeRO-3 each LoRA layer's base weight and adapter are gathered together, one layer at a time.
Leaves out: several adapters per model, DoRA and other PEFT tuners.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import torch

from rlpost.config import ModelConfig

ADAPTER = "default"  # PEFT's adapter name
PREFIX = "base_model.model."  # what a PeftModel puts before the wrapped model's parameter names


def wrap(model: Any, cfg: ModelConfig) -> Any:
    """The model with trainable LoRA adapters on `cfg.lora_target_modules` (everything else frozen)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                        target_modules=list(cfg.lora_target_modules), task_type="CAUSAL_LM", bias="none")
    return get_peft_model(model, config)


def is_peft(module: Any) -> bool:
    return hasattr(module, "peft_config") and hasattr(module, "disable_adapter")


def gathered(params: list[Any]) -> Any:
    """A context in which ZeRO-3 partitions of `params` are whole (a no-op for ordinary parameters)."""
    import contextlib

    import deepspeed

    if any(hasattr(p, "ds_id") for p in params):
        return deepspeed.zero.GatheredParameters(params, modifier_rank=None)
    return contextlib.nullcontext()


def adapter_state(module: Any) -> dict[str, torch.Tensor]:
    """The adapter's tensors as PEFT saves them (`...q_proj.lora_A.weight`), full and on the CPU."""
    from peft import get_peft_model_state_dict

    full = {}
    for name, param in module.named_parameters():
        if "lora_" in name:
            with gathered([param]):
                full[name] = param.detach().to("cpu", copy=True)
    return get_peft_model_state_dict(module, state_dict=full, adapter_name=ADAPTER)


def adapter_config(module: Any) -> dict[str, Any]:
    """The adapter's PEFT config as JSON-ready data (adapter_config.json)."""
    config = module.peft_config[ADAPTER].to_dict()
    return json.loads(json.dumps(config, default=lambda v: sorted(v) if isinstance(v, set) else str(v)))


def merged_params(module: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """(Hugging Face name, tensor) of every base parameter with the adapter merged in (W + scale * B @ A), as new
    CPU tensors; the adapter's own parameters are left out and nothing in `module` changes."""
    for name, param in module.named_parameters():
        if "lora_" in name:
            continue
        hf_name = name.removeprefix(PREFIX).replace(".base_layer.", ".")
        if ".base_layer." in name and name.endswith(".weight"):
            layer = module.get_submodule(name.rsplit(".base_layer.", 1)[0])
            adapters = [layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight]
            with gathered([param, *adapters]), torch.no_grad():
                merged = param.detach().to("cpu", copy=True)
                merged += layer.get_delta_weight(ADAPTER).detach().to("cpu", merged.dtype)
            yield hf_name, merged
        else:
            with gathered([param]):
                yield hf_name, param.detach().to("cpu", copy=True)


def trainable_parameters(module: Any) -> int:
    """Parameters the optimizer updates (ZeRO-3 partitions counted whole)."""
    return sum(int(getattr(p, "ds_numel", p.numel())) for p in module.parameters() if p.requires_grad)
