"""One source for every closed choice: the schema's Literal types. The math modules accept exactly those values,
the recipe checks refuse anything else for every choice key, the presets name exactly the preset choices, and the
schema, the loader and the checks import each other in one direction only."""

import subprocess
import sys
import typing

import pytest

from rlpost import advantages, losses
from rlpost.choices import Preset, is_choice, values_of
from rlpost.config import SECTIONS, RecipeError, RootConfig, choice_fields, leaf_types
from rlpost.presets import PRESETS
from rlpost.recipe_checks import CHOICES
from rlpost.recipes import load_config

# Each tuple a math module accepts, and the schema key whose type lists the same values.
MATH_TUPLES = [
    (losses.AGGREGATIONS, "algorithm.loss_aggregation"),
    (losses.KL_ESTIMATORS, "algorithm.kl_estimator"),
    (losses.RATIO_LEVELS, "algorithm.ratio_level"),
    (losses.TIS_LEVELS, "algorithm.tis_level"),
    (advantages.STD_MODES, "algorithm.advantage_std"),
    (advantages.BASELINES, "algorithm.baseline"),
    (advantages.SINGLETON_RULES, "algorithm.singleton_rule"),
]


@pytest.mark.parametrize("accepted, key", MATH_TUPLES)
def test_math_modules_accept_exactly_the_schema_choices(accepted, key):
    section, name = key.split(".")
    assert accepted == values_of(leaf_types(section)[name])


def test_checked_choices_are_the_schema_literals():
    literal_keys = {f"{section}.{name}" for section in SECTIONS
                    for name, kind in leaf_types(section).items() if is_choice(kind)}
    assert set(CHOICES) == literal_keys == set(choice_fields())
    assert all(CHOICES[key] == choice_fields()[key] for key in CHOICES)
    assert len(literal_keys) >= 21  # every choice that the hand-written table listed before


@pytest.mark.parametrize("key", sorted(choice_fields()))
def test_every_choice_key_refuses_other_values(key):
    allowed = choice_fields()[key]
    bad = 99 if isinstance(allowed[0], int) else "not-a-choice"
    with pytest.raises(RecipeError, match=f"key '{key}' is .*; allowed: "):
        load_config("quickstart", [f"{key}={bad}"])


def test_every_choice_default_is_allowed():
    config = RootConfig()
    for key, allowed in choice_fields().items():
        section, name = key.split(".")
        assert getattr(getattr(config, section), name) in allowed, key


def test_presets_are_the_preset_choices_and_set_allowed_values():
    assert ("", *PRESETS) == values_of(Preset)
    for switches in PRESETS.values():
        for name, value in switches.items():
            kind = leaf_types("algorithm")[name]
            assert not is_choice(kind) or value in values_of(kind), name


def test_values_of_refuses_a_type_that_is_not_a_choice():
    with pytest.raises(TypeError):
        values_of(str)
    assert values_of(typing.Literal["a", "b"]) == ("a", "b")


def test_schema_loader_and_checks_import_in_one_direction():
    """config imports neither the loader, the checks nor OmegaConf; the math modules import no config package."""
    code = ("import sys, rlpost.config, rlpost.losses, rlpost.advantages; "
            "bad = [m for m in ('rlpost.recipes', 'rlpost.recipe_checks', 'rlpost.presets', 'omegaconf', 'rewards') "
            "if m in sys.modules]; assert not bad, bad; "
            "import rlpost.recipe_checks; assert 'rlpost.recipes' not in sys.modules and 'rewards' not in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    code = "import sys, rlpost.losses, rlpost.advantages; assert 'rlpost.config' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
