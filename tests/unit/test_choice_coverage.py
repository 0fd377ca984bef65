"""Every value of every closed choice that a math module, a sampler or an allocator implements runs its
implementation on a tiny input. A value added to a `Literal` in rlpost/choices.py without an implementation passes
the recipe checks and would fail only at run time; here it fails a test that names the choice and the value.

Also: no two values of a math choice compute the same thing on a generic input (a value that silently falls through
to another value's branch is caught), and the sampler and allocator registries hold exactly the kinds the schema
lists. Leaves out the choices implemented in the driver and the learner (dynamic sampling, grad-norm kind).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from typing import Any, Literal

import pytest
import torch

from rlpost.advantages import batch_advantages
from rlpost.allocators import ALLOCATORS, make_allocator
from rlpost.choices import (
    AdvantageStd,
    AllocatorKind,
    Baseline,
    KlEstimator,
    LossAggregation,
    PolicyLoss,
    RatioLevel,
    SamplerKind,
    SingletonRule,
    TisLevel,
    values_of,
)
from rlpost.config import AllocatorConfig, SamplerConfig
from rlpost.losses import LossSpec, aggregation_weights, kl_estimate, policy_loss
from rlpost.sampling import SAMPLERS, make_sampler
from rlpost.types import Prompt, PromptStats


@contextlib.contextmanager
def implemented(choice: str, value: object, where: str) -> Iterator[None]:
    """Turn any error of the implementation into a failure that names the choice value lacking one."""
    try:
        yield
    except Exception as err:  # whatever breaks, the report is the same
        pytest.fail(f"{choice} value {value!r} is listed in rlpost/choices.py but {where} does not implement it: "
                    f"{type(err).__name__}: {err}", pytrace=False)


# ---- losses ------------------------------------------------------------------------------------------------------

MASK = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
LOGPROBS = torch.tensor([[-1.0, -0.5, -2.0, -1.0], [-0.3, -1.2, -1.0, -1.0], [-0.8, -0.1, -1.5, -0.6]],
                        dtype=torch.float64)
OLD = LOGPROBS + torch.tensor([[0.3, -0.2, 0.1, 0.0], [-0.4, 0.25, 0.0, 0.0], [0.05, -0.3, 0.2, -0.1]],
                              dtype=torch.float64)
REF = LOGPROBS + torch.tensor([[0.2, 0.1, -0.3, 0.0], [0.1, -0.2, 0.0, 0.0], [-0.1, 0.3, 0.1, 0.2]],
                              dtype=torch.float64)
ROLLOUT = OLD + torch.tensor([[0.5, -0.1, 0.2, 0.0], [-0.3, 0.4, 0.0, 0.0], [0.1, 0.2, -0.5, 0.3]],
                             dtype=torch.float64)
ADVANTAGES = torch.tensor([[1.0], [-0.5], [0.7]], dtype=torch.float64).expand_as(MASK)
CONSTANT = 4.0  # the 'constant' aggregation's normaliser (the generation cap)


def _loss(spec: LossSpec, aggregation: str = "token-mean") -> tuple[float, dict[str, torch.Tensor]]:
    logprobs = LOGPROBS.clone().requires_grad_(True)
    loss, metrics = policy_loss(logprobs, OLD, ADVANTAGES, aggregation_weights(MASK, aggregation, CONSTANT), MASK,
                                spec, ref_logprobs_BT=REF, rollout_logprobs_BT=ROLLOUT)
    loss.backward()
    assert logprobs.grad is not None and torch.isfinite(logprobs.grad).all()
    assert torch.isfinite(loss) and all(torch.isfinite(m) for m in metrics.values())
    return float(loss.detach()), metrics


def _aggregation(value: str) -> float:
    weights = aggregation_weights(MASK, value, CONSTANT)
    assert weights.shape == MASK.shape and (weights >= 0).all() and (weights[MASK == 0] == 0).all()
    return _loss(LossSpec(), value)[0]


def _kl_estimator(value: str) -> float:
    per_token = kl_estimate(LOGPROBS, REF, value)
    assert per_token.shape == LOGPROBS.shape and torch.isfinite(per_token).all()
    _, metrics = _loss(LossSpec(kl_coef=0.1, kl_estimator=value))
    return float(metrics["kl_ref"])


def _ratio_level(value: str) -> float:
    return _loss(LossSpec(ratio_level=value))[0]


def _tis_level(value: str) -> float:
    return _loss(LossSpec(tis_level=value, tis_cap=1.3))[0]


def _policy_loss(value: str) -> float:
    return _loss(LossSpec(policy_loss=value))[0]


# ---- advantages --------------------------------------------------------------------------------------------------

GROUPS = [[1.0, 0.0, 0.0, 1.0], [0.5, 0.2, 0.9], [0.7], [0.3, 0.3]]


def _advantages(**conventions: Any) -> list[list[float] | None]:
    advantages, metrics = batch_advantages(GROUPS, **conventions)
    assert len(advantages) == len(GROUPS) and all(isinstance(v, float) for v in metrics.values())
    return advantages


def _baseline(value: str) -> list[list[float] | None]:
    return _advantages(baseline=value, std_normalize="none")


def _std_mode(value: str) -> list[list[float] | None]:
    return _advantages(std_normalize=value)


def _singleton_rule(value: str) -> list[list[float] | None]:
    return _advantages(singleton_rule=value)


# (name, Literal, where it is implemented, function of one value returning a result that differs between values)
MATH_CHOICES: list[tuple[str, Any, str, Callable[[Any], object]]] = [
    ("LossAggregation", LossAggregation, "rlpost.losses.aggregation_weights", _aggregation),
    ("KlEstimator", KlEstimator, "rlpost.losses.kl_estimate", _kl_estimator),
    ("RatioLevel", RatioLevel, "rlpost.losses.policy_loss", _ratio_level),
    ("TisLevel", TisLevel, "rlpost.losses.policy_loss", _tis_level),
    ("PolicyLoss", PolicyLoss, "rlpost.losses.policy_loss", _policy_loss),
    ("Baseline", Baseline, "rlpost.advantages.batch_advantages", _baseline),
    ("AdvantageStd", AdvantageStd, "rlpost.advantages.batch_advantages", _std_mode),
    ("SingletonRule", SingletonRule, "rlpost.advantages.batch_advantages", _singleton_rule),
]
MATH_CASES = [pytest.param(name, where, run, value, id=f"{name}={value}")
              for name, choice, where, run in MATH_CHOICES for value in values_of(choice)]


@pytest.mark.parametrize("name, where, run, value", MATH_CASES)
def test_every_math_choice_value_runs(name, where, run, value):
    with implemented(name, value, where):
        run(value)


@pytest.mark.parametrize("name, choice, where, run", [pytest.param(*c, id=c[0]) for c in MATH_CHOICES])
def test_no_two_values_of_a_math_choice_compute_the_same(name, choice, where, run):
    results = {}
    for value in values_of(choice):
        with implemented(name, value, where):
            results[value] = run(value)
    for a, b in itertools.combinations(results, 2):
        assert results[a] != results[b], (f"{name} values {a!r} and {b!r} give the same result in {where}: one of "
                                          f"them probably falls through to the other's branch")


# ---- samplers and allocators -------------------------------------------------------------------------------------

PROMPTS = [Prompt(uid=i, text=f"p{i}", token_ids=[1], answer="", data_source=s)
           for i, s in enumerate(["a", "b", "c"] * 3)]
# The settings a kind cannot run without; any other kind runs on the schema's defaults.
SAMPLER_SETTINGS: dict[str, dict[str, Any]] = {
    "mixture": {"mixture_weights": {"a": 1.0, "b": 2.0}},
    "staged": {"staged_sources": ["b"], "staged_from_step": 1},
}


@pytest.mark.parametrize("kind", values_of(SamplerKind))
def test_every_sampler_kind_builds_and_draws(kind):
    with implemented("SamplerKind", kind, "rlpost.sampling.make_sampler"):
        sampler = make_sampler(SamplerConfig(kind=kind, **SAMPLER_SETTINGS.get(kind, {})), PROMPTS, 4, 0)
        assert sampler.kind == kind
        for step in range(3):
            batch = sampler.next_batch(step)
            assert len(batch) == 4 and all(p in PROMPTS for p in batch)
        sampler.metrics()
        sampler.state_dict()


@pytest.mark.parametrize("kind", values_of(AllocatorKind))
def test_every_allocator_kind_builds_and_allocates(kind):
    with implemented("AllocatorKind", kind, "rlpost.allocators.make_allocator"):
        allocator = make_allocator(AllocatorConfig(kind=kind), 4)
        assert allocator.kind == kind
        stats = [PromptStats(p, g) for p, g in zip([0.25, 0.5, 1.0], [1.0, 2.0, 0.5])]
        counts = allocator.allocate(PROMPTS[:3], stats if allocator.needs_prepass else None)
        assert len(counts) == 3 and sum(counts) == 4 * 3 and min(counts) >= 0
        allocator.update(PROMPTS[:3], stats, counts)
        allocator.load_state_dict(allocator.state_dict())


@pytest.mark.parametrize("registry, choice", [pytest.param(SAMPLERS, SamplerKind, id="SAMPLERS-SamplerKind"),
                                              pytest.param(ALLOCATORS, AllocatorKind, id="ALLOCATORS-AllocatorKind")])
def test_registries_hold_exactly_the_schema_kinds(registry, choice):
    listed, registered = set(values_of(choice)), set(registry)
    unregistered, unlisted = sorted(listed - registered), sorted(registered - listed)
    assert not unregistered and not unlisted, (f"kinds listed in rlpost/choices.py but not registered: {unregistered}; "
                                               f"registered but not listed: {unlisted}")
    assert all(cls.kind == kind for kind, cls in registry.items())


# Where every other choice's values are exercised, or which library takes the value as it is. A new Literal in
# rlpost/choices.py fails the test below until it is named here or in MATH_CHOICES.
COVERED_ELSEWHERE = {
    "SamplerKind": "test_every_sampler_kind_builds_and_draws",
    "AllocatorKind": "test_every_allocator_kind_builds_and_allocates",
    "DynamicSamplingMetric": "tests/unit/test_dynamic_sampling.py (every metric and policy)",
    "OnGenRoundsExhausted": "tests/unit/test_dynamic_sampling.py (every metric and policy)",
    "OnErrorPolicy": "tests/unit/test_reward_worker.py and test_scoring.py (raise and skip)",
    "GradNorm": "actors/gradnorm.py grad_norms refuses an unknown kind; both run in tests/unit/test_gradnorm.py",
    "AttnImplementation": "passed to transformers by actors/learner.py (auto: not passed); sdpa and eager run in "
                          "tests/unit/test_packing.py, flash_attention_2 needs a GPU and the flash-attn package",
    "Preset": "tests/unit/test_presets.py (every preset name is a key of rlpost.presets.PRESETS)",
    "Dtype": "passed to torch / vLLM as the dtype name",
    "DataSource": "rlpost/data.py load_rows (tests/unit/test_data.py)",
    "ChatTemplate": "rlpost/data.py to_prompts (tests/unit/test_data.py)",
    "StdDdof": "a number, passed to batch_advantages as ddof",
    "ZeroStage": "passed to DeepSpeed as zero_optimization.stage",
    "Backend": "passed to torch.distributed (auto resolved in actors/learner.py)",
    "Transport": "actors/weight_sync.py make_weight_sync (auto resolved in actors/build.py)",
    "PlacementStrategy": "passed to Ray's placement_group",
    "SweepScheduler": "rlpost/sweep/scheduler.py make_scheduler; tests/unit/test_sweep_scheduler.py builds each",
    "RolloutMode": "rlpost/pipeline.py rollout_lag (tests/unit/test_async.py: every mode has a lag)",
    "PartialLoss": "rlpost/loop.py (latest_segment_only); tests/unit/test_partial.py trains both",
    "AllocatorSchedule": "rlpost/collect.py (by_iteration); tests/unit/test_dynamic_sampling.py runs both",
    "MemoryExtract": "rlpost/episodic.py extract; tests/unit/test_episodic.py runs each",
    "LoraSync": "actors/weight_sync.py make_weight_sync; tests/e2e/test_lora.py syncs both ways",
    "ToolFormatKind": "rlpost/tool_formats.py make_format; tests/unit/test_tool_formats.py runs each",
    "Logger": "rlpost/trackers.py open_trackers; tests/unit/test_trackers.py runs each (wandb, mlflow offline)",
}


def test_every_choice_literal_has_a_named_home():
    import rlpost.choices as choices

    literals = {name for name, value in vars(choices).items()
                if getattr(value, "__origin__", None) is Literal and not name.startswith("_")}
    homes = {name for name, *_ in MATH_CHOICES} | set(COVERED_ELSEWHERE)
    assert literals - homes == set(), (f"choices without a test or consumer named in test_choice_coverage.py: "
                                       f"{sorted(literals - homes)}")
    assert homes - literals == set(), f"named here but not in rlpost/choices.py: {sorted(homes - literals)}"
