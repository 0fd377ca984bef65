"""LoRA on the learner (actors/lora.py) with PEFT on the tiny Llama, no DeepSpeed: the merged weights the merged
sync sends equal PEFT's own merge and give the adapter model's logprobs; repeated merges never change the base
(no leak) and always hold the current adapter only; the adapter state is PEFT's saved format."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from actors.lora import adapter_config, adapter_state, merged_params, trainable_parameters, wrap
from rlpost.config import ModelConfig

SEQ = torch.tensor([[1, 5, 6, 7, 8, 16, 9, 4, 2], [1, 9, 9, 8, 16, 7, 7, 2, 0]])


def _model(seed: int = 0):
    from transformers import LlamaForCausalLM

    from rlpost.embedded.model import model_config

    torch.manual_seed(seed)
    return LlamaForCausalLM(model_config()).eval()


def _lora(rank: int = 4):
    model = wrap(_model(), ModelConfig(lora_rank=rank, lora_alpha=8))
    _train_adapter(model, 1)
    return model


def _train_adapter(model, seed: int) -> None:
    """Stand-in for optimizer steps: new values in every adapter matrix (B starts at zero)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)


def _logprobs(model) -> torch.Tensor:
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=SEQ).logits, -1)


def _plain_with(weights: dict[str, torch.Tensor]):
    plain = _model(seed=99)  # other random weights, all replaced
    missing, unexpected = plain.load_state_dict(weights, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"} | set(weights), (missing, unexpected)
    return plain


def test_only_the_adapter_trains():
    model = _lora()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert trainable_parameters(model) == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable_parameters(model) < sum(p.numel() for p in model.parameters()) / 5


def test_merged_weights_are_pefts_merge_and_give_the_adapter_models_logprobs():
    model = _lora()
    merged = dict(merged_params(model))
    reference = copy.deepcopy(model).merge_and_unload().state_dict()
    assert set(merged) == set(reference)
    for name, tensor in merged.items():
        torch.testing.assert_close(tensor, reference[name], rtol=0, atol=1e-6)
    torch.testing.assert_close(_logprobs(_plain_with(merged)), _logprobs(model), rtol=0, atol=1e-5)


def test_merging_never_leaks_into_the_base_across_syncs():
    model = _lora()
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    for step in range(2, 6):  # a sync after every update: each merge holds the current adapter only
        _train_adapter(model, step)
        merged = dict(merged_params(model))
        torch.testing.assert_close(_logprobs(_plain_with(merged)), _logprobs(model), rtol=0, atol=1e-5)
    for name, param in model.named_parameters():
        if "lora_" not in name:
            assert torch.equal(param, base[name]), name
    with model.disable_adapter():  # the reference policy is still the untouched base
        torch.testing.assert_close(_logprobs(model), _logprobs(_model()), rtol=0, atol=0)


def test_the_adapter_state_is_pefts_saved_format(tmp_path):
    from peft import PeftModel
    from safetensors.torch import save_file

    model = _lora()
    state = adapter_state(model)
    assert state and all(".lora_A.weight" in k or ".lora_B.weight" in k for k in state)
    assert not any(".default." in k for k in state)
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "adapter_model.safetensors")
    (tmp_path / "adapter_config.json").write_text(json.dumps(adapter_config(model)))
    loaded = PeftModel.from_pretrained(_model(), tmp_path).eval()
    torch.testing.assert_close(_logprobs(loaded), _logprobs(model), rtol=0, atol=1e-6)


@pytest.mark.parametrize("rank,expected", [(1, 8), (8, 8), (12, 16), (64, 64), (600, 600)])
def test_vllm_rank_is_the_smallest_it_accepts(rank, expected):
    from actors.rollout import vllm_lora_rank

    assert vllm_lora_rank(rank) == expected


@pytest.mark.parametrize("overrides,message", [
    (["model.load_in_4bit=true"], "needs model.lora_rank > 0"),
    (["model.lora_rank=8", "allocator.kind=gvm"], "LoRA leaves frozen"),
    (["model.lora_rank=8", "model.lora_target_modules=[]"], "lora_target_modules' is empty"),
    (["model.lora_rank=8", "model.load_in_4bit=true", "learner.zero_stage=3"], "cannot shard a 4-bit base"),
])
def test_lora_keys_that_cannot_work_together_are_refused(overrides, message):
    from rlpost.config import RecipeError
    from rlpost.recipes import load_config

    with pytest.raises(RecipeError, match=message):
        load_config("quickstart", overrides)


def test_qlora_on_a_machine_without_cuda_is_refused_before_any_actor_starts(monkeypatch):
    import actors.runtime
    from rlpost.app.prepare import check_qlora
    from rlpost.config import RecipeError
    from rlpost.recipes import load_config

    monkeypatch.setattr(actors.runtime, "has_cuda", lambda: False)
    with pytest.raises(RecipeError, match="needs a CUDA GPU"):
        check_qlora(load_config("quickstart", ["model.lora_rank=8", "model.load_in_4bit=true"]))
    check_qlora(load_config("quickstart", ["model.lora_rank=8"]))  # a plain LoRA run is fine anywhere
