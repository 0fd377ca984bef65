"""The driver's step loop with DAPO dynamic sampling, overlong shaping and KL-in-reward, over in-process fakes.

Only the driver's own logic is under test here (which groups are kept, how many rounds run, what is logged); the
real components run the same loop in tests/integration.
"""

from __future__ import annotations

import pytest

from rlpost.choices import DynamicSamplingMetric, OnGenRoundsExhausted, values_of
from rlpost.collect import DynamicSamplingExhausted
from rlpost.loop import Trainer
from rlpost.prepass import rif_filter
from rlpost.recipes import load_config
from rlpost.sampling import UniformSampler
from rlpost.types import Prompt, RewardResult, Sample, Workers


class FakeRollout:
    """Prompt uid u answers with completion tokens [3] * (1 + u % 4); its samples' text encodes u and the index."""

    def generate(self, requests):
        return [[Sample(r.prompt_uid, [3] * (1 + r.prompt_uid % 4), [-0.5] * (1 + r.prompt_uid % 4),
                        f"{r.prompt_uid}:{i}", "stop" if r.prompt_uid % 4 < 3 else "length")
                 for i in range(r.n)] for r in requests]


class FakeReward:
    """Prompts with an even uid get all-equal rewards (no signal); odd uids get one correct sample of n."""

    def score(self, request):
        values = []
        for text in request.completions:
            uid, index = map(int, text.split(":"))
            values.append(1.0 if uid % 2 == 1 and index == 0 else 0.0)
        return RewardResult(rewards=list(values), components={"acc": list(values)})


class FakeLearner:
    def __init__(self):
        self.trained, self.kl_calls = [], 0

    def train(self, shards, loss, micro, max_tokens_per_micro=0):
        self.trained.append(shards)
        return {"loss": 0.0, "clip_frac": 0.0}

    def submit_train(self, shards, loss, micro, max_tokens_per_micro=0):
        result = self.train(shards, loss, micro, max_tokens_per_micro)
        return lambda: result

    def reference_kl(self, sequences, prompt_lens, estimator):
        self.kl_calls += 1
        return [0.5 * (len(s) - p) for s, p in zip(sequences, prompt_lens)]


class NoSync:
    def sync(self):
        return {}

    def rejoin(self, slot):
        return {}


def _trainer(overrides):
    config = load_config("quickstart", ["algorithm.prompts_per_step=4", "rollout.samples_per_prompt=4",
                                        "learner.world_size=1", "sync.probe_sequences=0", *overrides])
    prompts = [Prompt(u, f"p{u}", [1, 5], "a", "s") for u in range(64)]
    learner = FakeLearner()
    trainer = Trainer(config, Workers(FakeRollout(), learner, FakeReward(), NoSync()),
                      UniformSampler(prompts, config.algorithm.prompts_per_step, 0))
    return trainer, learner


def test_without_dynamic_sampling_constant_groups_are_trained_with_zero_advantage():
    trainer, learner = _trainer([])
    metrics = trainer.step(1)
    assert metrics["groups/generated"] == 4 and metrics["groups/dropped"] == 0 and metrics["groups/gen_rounds"] == 1
    assert len(learner.trained) == 1


def test_dynamic_sampling_keeps_generating_until_the_batch_is_full():
    trainer, learner = _trainer(["algorithm.dynamic_sampling=true", "algorithm.max_gen_rounds=10"])
    metrics = trainer.step(1)
    assert metrics["groups/kept"] == 4
    assert metrics["groups/gen_rounds"] >= 2  # half the prompts carry no signal, so one round is never enough
    assert metrics["groups/dropped"] == metrics["groups/generated"] - 4
    rows = sum(len(s.prompt_lens) for s in learner.trained[0])
    assert rows == 4 * 4  # only kept groups reach the learner
    assert metrics["adv/zero_signal_group_frac"] == 0.0


def test_dynamic_sampling_bound_trains_on_what_it_has_with_a_warning(capsys):
    trainer, learner = _trainer(["algorithm.dynamic_sampling=true", "algorithm.max_gen_rounds=1"])
    metrics = trainer.step(1)
    assert metrics["groups/gen_rounds"] == 1 and metrics["groups/kept"] < 4
    err = capsys.readouterr().err
    assert "dynamic sampling: step 1 kept" in err and "max_gen_rounds=1" in err
    assert len(learner.trained) == 1


def test_dynamic_sampling_bound_can_be_an_error():
    trainer, _ = _trainer(["algorithm.dynamic_sampling=true", "algorithm.max_gen_rounds=1",
                           "algorithm.on_gen_rounds_exhausted=error"])
    with pytest.raises(DynamicSamplingExhausted, match="max_gen_rounds"):
        trainer.step(1)


def test_overlong_shaping_and_kl_in_reward_change_rewards_and_are_logged():
    trainer, learner = _trainer(["algorithm.overlong_shaping=true", "algorithm.overlong_buffer=2",
                                 "algorithm.kl_coef=0.1", "algorithm.kl_in_reward=true"])
    metrics = trainer.step(1)
    # max_new_tokens 4, buffer 2: lengths 1, 2 → 0; 3 → -0.5; 4 → -1. Mean over uid % 4 in the batch.
    assert metrics["reward/overlong"] < 0
    assert metrics["reward/kl_penalty"] < 0 and learner.kl_calls == 1
    assert metrics["reward/mean"] == pytest.approx(
        metrics["reward/acc"] + metrics["reward/overlong"] + metrics["reward/kl_penalty"])


def test_step_line_reports_dropped_groups_and_survives_a_step_with_nothing_to_train():
    from rlpost.app.run import _step_line

    trainer, _ = _trainer(["algorithm.dynamic_sampling=true", "algorithm.max_gen_rounds=10"])
    line = _step_line(1, trainer.step(1))
    assert "groups 4 (" in line and "dropped)" in line
    bare = _step_line(2, {"reward/mean": 0.0, "groups/kept": 0.0, "groups/dropped": 8.0})
    assert "groups 0 (8 dropped)" in bare and "clip nan" in bare


def test_length_budget_reaches_reward_functions_and_caps_the_rollout():
    trainer, _ = _trainer(["sampler.budget_initial=8", "sampler.budget_decay=0.5", "sampler.budget_interval=1",
                           "sampler.budget_caps_rollout=true"])
    seen = {}
    rollout, reward = trainer.workers.rollout, trainer.workers.reward
    generate, score = rollout.generate, reward.score
    rollout.generate = lambda requests: seen.setdefault("caps", {r.max_new_tokens for r in requests}) and \
        generate(requests)
    reward.score = lambda request: seen.setdefault("budget", {request.run["length_budget"]}) and \
        score(request)
    metrics = trainer.step(2)
    assert metrics["curriculum/length_budget"] == 2.0 and seen == {"caps": {2}, "budget": {2.0}}


def test_rif_filter_drops_prompts_without_a_successful_rollout():
    trainer, _ = _trainer([])
    prompts = [Prompt(u, f"p{u}", [1, 5], "a", "s" if u < 5 else "t") for u in range(10)]
    run = {"step": 0, "max_new_tokens": 4}
    kept, metrics = rif_filter(trainer.rollouts, prompts, run, 4, threshold=1.0, chunk=3)
    assert [p.uid for p in kept] == [1, 3, 5, 7, 9]  # FakeReward: only odd uids ever succeed
    assert metrics == {"rif/kept_frac/s": 2 / 5, "rif/kept_frac/t": 3 / 5}
    kept_all_right, _ = rif_filter(trainer.rollouts, prompts, run, 1, threshold=1.0, drop_all_correct=True)
    assert kept_all_right == []  # one rollout that succeeds is "all correct"


def test_sampler_section_errors_name_the_key():
    from rlpost.config import RecipeError

    with pytest.raises(RecipeError, match="sampler.mixture_weights"):
        load_config("quickstart", ["sampler.kind=mixture"])
    with pytest.raises(RecipeError, match="sampler.staged_sources"):
        load_config("quickstart", ["sampler.kind=staged"])


def test_gvm_prepass_allocates_per_prompt_n_and_counts_its_rollouts_apart():
    trainer, learner = _trainer(["allocator.kind=gvm", "allocator.prepass_samples=8"])
    learner.grad_norms = lambda sequences, prompt_lens, kind: [1.0] * len(sequences)
    metrics = trainer.step(1)
    assert metrics["prepass/completions"] == 4 * 8 and metrics["prepass/prompts"] == 4
    # FakeReward: odd uids accept 1 of n, even uids never; GVM gives even prompts nothing and odd ones the budget
    sizes = sorted(len(s.prompt_lens) for s in learner.trained[0])
    odd = metrics["groups/generated"]  # prompts with an accepted pre-pass sample
    assert sum(sizes) == 16 and 1 <= odd <= 4
    assert metrics["alloc/zero_frac"] == 1 - odd / 4 and metrics["alloc/n_max"] == 16 // odd
    assert metrics["tokens/generated"] > 0 and metrics["prepass/tokens"] > 0


@pytest.mark.parametrize("metric", values_of(DynamicSamplingMetric))
@pytest.mark.parametrize("policy", values_of(OnGenRoundsExhausted))
def test_every_listed_filter_metric_and_exhaustion_policy_has_a_handler(metric, policy):
    """A value added to rlpost/choices.py without code in rlpost/collect.py fails here, not mid-run."""
    trainer, _ = _trainer(["algorithm.dynamic_sampling=true", "algorithm.max_gen_rounds=1",
                           f"algorithm.dynamic_sampling_metric={metric}",
                           f"algorithm.on_gen_rounds_exhausted={policy}"])
    if policy == "error":
        with pytest.raises(DynamicSamplingExhausted):
            trainer.step(1)
    else:
        assert trainer.step(1)["groups/gen_rounds"] == 1


def test_step_reports_wall_clock_overhead_and_throughput():
    trainer, _ = _trainer([])
    m = trainer.step(1)
    assert m["time/wall"] >= m["time/step"] > 0 and m["time/overhead"] >= 0
    assert m["time/overhead"] == pytest.approx(m["time/wall"] - m["time/step"], abs=1e-9)
    assert m["perf/tokens_per_s"] == pytest.approx(m["tokens/generated"] / m["time/wall"])


def test_gvm_iteration_schedule_runs_one_prepass_for_several_steps():
    """GVM's code: one pre-pass per iteration over the prompts of its steps (drawn together), whose n_i then hold
    for those steps under their joint budget; the pre-pass is counted at the iteration's first step only. The plan
    survives a checkpoint (JSON) and a restored collector continues it exactly."""
    import json

    def trainer_with(schedule: str):
        trainer, learner = _trainer(["allocator.kind=gvm", "allocator.prepass_samples=4", "run.steps=7",
                                     f"allocator.schedule={schedule}", "allocator.iteration_steps=3"])
        learner.grad_norms = lambda sequences, prompt_lens, kind: [1.0] * len(sequences)
        return trainer, learner

    trainer, learner = trainer_with("iteration")
    first = [trainer.step(step) for step in (1, 2)]
    assert first[0]["prepass/prompts"] == 3 * 4 and "prepass/prompts" not in first[1]  # 3 steps x 4 prompts
    state = json.loads(json.dumps(trainer.collector.plan_state()))
    assert [r["step"] for r in state] == [3]
    # joint budget: 3 steps x 4 prompts x 4 samples, spread over the prompts with an accepted pre-pass sample
    assert sum(sum(len(s.prompt_lens) for s in shards) for shards in learner.trained) <= 3 * 4 * 4
    again, _ = trainer_with("iteration")
    again.sampler.load_state_dict(trainer.sampler.state_dict())
    again.collector.load_plan(state, {p.uid: p for p in again.sampler.prompts})
    again.version = trainer.version

    def same(metrics: dict) -> dict:
        return {k: repr(v) for k, v in metrics.items() if not k.startswith(("time/", "perf/", "rollout/idle"))}

    for step in range(3, 8):  # step 3 from the plan, then a new iteration (4-6) and a last one cut at the run (7)
        a, b = trainer.step(step), again.step(step)
        assert same(a) == same(b), step
        assert ("prepass/prompts" in a) == (step in (4, 7))
    per_step, _ = trainer_with("step")
    assert per_step.step(1)["prepass/prompts"] == 4 and per_step.step(2)["prepass/prompts"] == 4


@pytest.mark.parametrize("schedule", ["step", "iteration"])
def test_train_prepass_joins_each_prompts_prepass_samples_to_its_group(schedule):
    """allocator.train_prepass: a prompt given n_i > 0 trains on its n_i new samples plus its N' pre-pass samples
    (rewarded already, not scored again); a prompt given none drops its pre-pass; off by default (GVM's code)."""
    rows = {}
    for train in (False, True):
        trainer, learner = _trainer(["allocator.kind=gvm", "allocator.prepass_samples=4", "run.steps=2",
                                     f"allocator.schedule={schedule}", "allocator.iteration_steps=2",
                                     f"allocator.train_prepass={str(train).lower()}"])
        learner.grad_norms = lambda sequences, prompt_lens, kind: [1.0] * len(sequences)
        scored = []
        score = trainer.workers.reward.score
        def counted(request, scored=scored, score=score):
            scored.append(len(request.completions))
            return score(request)

        trainer.workers.reward.score = counted
        metrics = [trainer.step(step) for step in (1, 2)]
        rows[train] = [sum(len(s.prompt_lens) for s in shards) for shards in learner.trained]
        kept = [m["groups/generated"] for m in metrics]  # prompts given samples (an accepted pre-pass sample)
        if train:
            assert rows[True] == [r + 4 * k for r, k in zip(rows[False], kept)]
            assert sum(scored) == sum(m.get("prepass/completions", 0) + m["rollout/completions"] for m in metrics)
    assert rows[False] and all(r > 0 for r in rows[False])


class RecordingMemory:
    """The real memory (actors/memory.py MemoryWorker, in process), recording what the driver asked."""

    def __init__(self, config):
        from actors.memory import MemoryWorker

        self.worker, self.calls = MemoryWorker(config.memory), []

    def score(self, questions, reasonings, correct):
        self.calls.append((list(questions), list(reasonings), list(correct)))
        return self.worker.score(questions, reasonings, correct)

    def sizes(self):
        return self.worker.sizes()

    def state_dict(self):
        return self.worker.state_dict()

    def load_state_dict(self, state):
        self.worker.load_state_dict(state)


def test_memory_rewards_add_weighted_terms_in_sample_order_and_are_logged():
    from rlpost.metrics import PhaseTimer

    overrides = ["memory.exploit_weight=0.5", "memory.explore_weight=2", "memory.explore_phase=1",
                 "memory.extract=all"]
    trainer, _ = _trainer(overrides)
    memory = RecordingMemory(trainer.config)
    trainer.collector.memory = memory
    batch = trainer.collector.collect(1, PhaseTimer())
    pairs = [(g.prompt, s) for g in batch.generated for s in g.samples]
    (questions, texts, correct), = memory.calls  # one call per round, every sample in order
    assert questions == [p.text for p, _ in pairs] and texts == [s.text for _, s in pairs]
    assert correct == [s.reward_components["acc"] == 1.0 for _, s in pairs]
    for _, s in pairs:
        terms = s.reward_components["memory_exploit"] + s.reward_components["memory_explore"]
        assert s.reward == pytest.approx(s.reward_components["acc"] + terms)
        assert 0 <= s.reward_components["memory_exploit"] <= 0.5 and 0 <= s.reward_components["memory_explore"] <= 2
    assert any(s.reward_components["memory_explore"] > 0 for _, s in pairs)
    odd = {p.uid for p, _ in pairs if p.uid % 2}
    assert batch.metrics["memory/exploit_keys"] == len(odd) and batch.metrics["memory/explore_keys"] == 4
    metrics = trainer.step(2)
    assert metrics["reward/memory_explore"] > 0 and "reward/memory_exploit" in metrics
    assert len(memory.calls) == 2
