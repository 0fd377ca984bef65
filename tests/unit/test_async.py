"""Off-sync rollouts (rlpost/pipeline.py): the schedule, the version bookkeeping, the stale-sample loss and the
checkpointed batches, over in-process fakes. The real stack runs the same code in tests/integration/test_async_stack.py
and tests/e2e (SIGKILL-resume in one_step_off, async with max_staleness 0 against sync)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rlpost.choices import RolloutMode, values_of
from rlpost.loop import Trainer
from rlpost.losses import LossSpec, aggregation_weights, policy_loss
from rlpost.metrics import PhaseTimer
from rlpost.pipeline import decode_batch, encode_batch, rollout_lag
from rlpost.recipes import load_config
from rlpost.sampling import UniformSampler
from rlpost.types import Prompt, RewardResult, Sample, Workers


def test_every_mode_has_a_lag():
    lags = {mode: rollout_lag(load_config("quickstart", [f"rollout.mode={mode}", "rollout.max_staleness=3"]))
            for mode in values_of(RolloutMode)}
    assert lags == {"sync": 0, "one_step_off": 1, "async": 3}


# --- the loss on stale samples: golden vectors -------------------------------------------------------------------
# Three tokens of one sequence: current logprobs (pi_theta), proximal (the learner before the update, pi_prox) and
# behaviour (vLLM's, older weights, mu). Per token, with rho = pi_theta / pi_prox and w = min(pi_prox / mu, cap):
#   loss_t = -min(rho A, clip(rho, 0.8, 1.2) A) * w        (token-mean over the 3 tokens)
# t1: rho = e^0.1 (inside the clip), w = e^0.4           -> -e^0.5
# t2: rho = e^0.4, A < 0: -min(-e^0.4, -1.2) = e^0.4, w = e^-0.7 -> e^-0.3
# t3: rho = 1, w = min(e^1, 2) = 2 (capped), A = 0.5     -> -1
LP = torch.tensor([[-1.0, -0.5, -2.0]], dtype=torch.float64)
PROX = torch.tensor([[-1.1, -0.9, -2.0]], dtype=torch.float64)
MU = torch.tensor([[-1.5, -0.2, -3.0]], dtype=torch.float64)
ADV = torch.tensor([[1.0, -1.0, 0.5]], dtype=torch.float64)
MASK = torch.ones(1, 3, dtype=torch.float64)


def _loss(spec: LossSpec) -> tuple[float, dict]:
    loss, metrics = policy_loss(LP, PROX, ADV, aggregation_weights(MASK, "token-mean"), MASK, spec,
                                rollout_logprobs_BT=MU)
    return float(loss), metrics


def test_stale_samples_get_the_proximal_ratio_and_the_truncated_behaviour_weight():
    spec = LossSpec(proximal=True)  # what the driver builds off sync; tis_level 'none' means 'token' then
    assert spec.behaviour_tis == "token"
    loss, metrics = _loss(spec)
    assert loss == pytest.approx((-math.exp(0.5) + math.exp(-0.3) - 1.0) / 3, abs=1e-12)
    assert float(metrics["tis_weight_mean"]) == pytest.approx((math.exp(0.4) + math.exp(-0.7) + 2.0) / 3, abs=1e-12)
    assert float(metrics["tis_capped_frac"]) == pytest.approx(1 / 3)


def test_sync_mode_applies_no_behaviour_weight_unless_asked():
    spec = LossSpec()
    assert spec.behaviour_tis == "none"
    loss, metrics = _loss(spec)
    assert loss == pytest.approx((-math.exp(0.1) + math.exp(0.4) - 0.5) / 3, abs=1e-12)
    assert "tis_weight_mean" not in metrics


def test_sequence_level_weight_off_sync_is_the_capped_product():
    # w = min(e^(0.4 - 0.7 + 1.0), 2) = 2 for every token
    loss, _ = _loss(LossSpec(proximal=True, tis_level="sequence"))
    assert loss == pytest.approx(2 * (-math.exp(0.1) + math.exp(0.4) - 0.5) / 3, abs=1e-12)


# --- the schedule and the versions, over fakes --------------------------------------------------------------------
class VersionedRollout:
    """Completions stamped with the version of the weights the fake engine holds (the weight sync sets it)."""

    def __init__(self) -> None:
        self.version = 0

    def generate(self, requests):
        return [[Sample(r.prompt_uid, np.array([3] * (1 + (r.prompt_uid + i) % 3), np.int32),
                        np.full(1 + (r.prompt_uid + i) % 3, -0.5, np.float32), f"{r.prompt_uid}:{i}", "stop",
                        version=self.version) for i in range(r.n)] for r in requests]


class Reward:
    def score(self, request):
        values = [float(int(t.split(":")[1]) == 0) for t in request.completions]
        return RewardResult(rewards=values, components={"acc": list(values)})


class Learner:
    def __init__(self) -> None:
        self.version = 0

    def submit_train(self, shards, loss, micro, max_tokens_per_micro=0):
        assert loss.proximal == (self.lag > 0)
        self.version += 1
        return lambda: {"loss": 0.0}


class Sync:
    def __init__(self, rollout: VersionedRollout, learner: Learner) -> None:
        self.rollout, self.learner = rollout, learner

    def sync(self):
        self.rollout.version = self.learner.version
        return {"sync/version": float(self.learner.version)}

    def rejoin(self, slot):
        return self.sync()


class RecordingSampler(UniformSampler):
    """Logs the order of its draws and updates."""

    def __init__(self, *args, log: list) -> None:
        super().__init__(*args)
        self.log = log

    def next_batch(self, step=None):
        self.log.append(("draw", step))
        return super().next_batch(step)

    def update(self, groups):
        self.log.append(("update", None))
        super().update(groups)


def _trainer(mode: str, k: int, steps: int, log: list) -> Trainer:
    config = load_config("quickstart", ["algorithm.prompts_per_step=2", "rollout.samples_per_prompt=3",
                                        "learner.world_size=1", "sync.probe_sequences=0", f"run.steps={steps}",
                                        f"rollout.mode={mode}", f"rollout.max_staleness={k}"])
    prompts = [Prompt(u, f"p{u}", [1, 5], "a", "s") for u in range(40)]
    rollout, learner = VersionedRollout(), Learner()
    learner.lag = rollout_lag(config)
    return Trainer(config, Workers(rollout, learner, Reward(), Sync(rollout, learner)),
                   RecordingSampler(prompts, 2, 0, log=log))


@pytest.mark.parametrize(("mode", "k", "lag"), [("sync", 5, 0), ("one_step_off", 5, 1), ("async", 2, 2),
                                                ("async", 3, 3), ("async", 0, 0)])
def test_step_s_trains_on_weights_from_step_s_minus_1_minus_lag(mode, k, lag):
    log: list = []
    trainer = _trainer(mode, k, 6, log)
    for step in range(1, 7):
        metrics = trainer.step(step)
        assert metrics["rollout/staleness_max"] == metrics["rollout/staleness_mean"] == min(step - 1, lag)
        assert metrics["rollout/policy_version"] == step - 1 and metrics["sync/version"] == step == trainer.version
    draws = [step for what, step in log if what == "draw"]
    assert draws == [1, 2, 3, 4, 5, 6]  # never past the run's last step
    # the sampler draws step s after its update from step s - max(1, lag): s-1 in sync and one_step_off
    order = [(what, step) for what, step in log]
    for s in range(1, 7):
        updates_before = sum(1 for what, _ in order[: order.index(("draw", s))] if what == "update")
        assert updates_before == max(0, s - max(1, lag)), s
    assert not trainer.pipeline.ready


def test_a_restored_pipeline_continues_exactly_like_the_uninterrupted_one():
    """What a checkpoint keeps off sync: the batches collected ahead, through JSON, with the sampler's state."""
    import json

    alone, log = _trainer("async", 2, 6, []), []
    first = [alone.step(s) for s in range(1, 7)]
    interrupted = _trainer("async", 2, 6, log)
    for s in range(1, 4):
        interrupted.step(s)
    state = json.loads(json.dumps({"pending": interrupted.pipeline.state_dict(),
                                   "sampler": interrupted.sampler.state_dict(), "version": interrupted.version}))
    assert [p["step"] for p in state["pending"]] == [4, 5]
    resumed = _trainer("async", 2, 6, [])
    resumed.sampler.load_state_dict(state["sampler"])
    resumed.pipeline.load_state_dict(state["pending"], {p.uid: p for p in resumed.sampler.prompts})
    resumed.version = resumed.workers.learner.version = resumed.workers.rollout.version = state["version"]
    for s in range(4, 7):
        assert _comparable(resumed.step(s)) == _comparable(first[s - 1]), s


def _comparable(metrics: dict) -> dict:
    """Every key but timings, with NaN (no probe sequences here) made equal to itself."""
    return {k: "nan" if isinstance(v, float) and math.isnan(v) else v for k, v in metrics.items()
            if not k.startswith(("time/", "perf/", "rollout/idle"))}


def test_encoded_batches_round_trip_with_arrays_nan_rewards_and_kept_groups():
    trainer = _trainer("one_step_off", 1, 3, [])
    batch = trainer.pipeline.take(1, PhaseTimer())
    batch.generated[0].samples[0].reward = float("nan")  # a skipped reward
    batch.kept = batch.generated[1:]
    back = decode_batch(encode_batch(batch), {p.uid: p for p in trainer.sampler.prompts})
    assert [id(g) for g in back.kept] == [id(g) for g in back.generated[1:]]
    for a, b in zip(batch.generated, back.generated, strict=True):
        assert a.prompt is b.prompt
        for x, y in zip(a.samples, b.samples, strict=True):
            assert x.token_ids.dtype == y.token_ids.dtype and np.array_equal(x.token_ids, y.token_ids)
            assert x.logprobs.dtype == y.logprobs.dtype and np.array_equal(x.logprobs, y.logprobs)
            assert (x.text, x.finish_reason, x.version, x.reward_components) == \
                   (y.text, y.finish_reason, y.version, y.reward_components)
            assert x.reward == y.reward or (math.isnan(x.reward) and math.isnan(y.reward))
    trainer.pipeline.close()
