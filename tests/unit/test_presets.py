"""Algorithm presets: each sets its paper's switches, explicit recipe keys win, and the README table is current."""

from pathlib import Path

import pytest

from rlpost.config import RecipeError
from rlpost.loop import loss_spec
from rlpost.presets import PRESETS, presets_markdown
from rlpost.recipes import load_config


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_applies_all_its_switches(name):
    config = load_config("quickstart", [f"algorithm.preset={name}"])
    for key, value in PRESETS[name].items():
        assert getattr(config.algorithm, key) == value, key


def test_preset_switches():
    grpo = load_config("quickstart", ["algorithm.preset=grpo"])
    assert loss_spec(grpo).needs_reference and grpo.algorithm.loss_aggregation == "seq-mean-token-mean"
    dr = load_config("quickstart", ["algorithm.preset=dr_grpo"])
    assert dr.algorithm.advantage_std == "none" and dr.algorithm.loss_aggregation == "constant"
    assert not loss_spec(dr).needs_reference
    dapo = load_config("quickstart", ["algorithm.preset=dapo"])
    assert dapo.algorithm.clip_eps_high == 0.28 and dapo.algorithm.dynamic_sampling
    gspo = load_config("quickstart", ["algorithm.preset=gspo"])
    assert loss_spec(gspo).ratio_level == "sequence"


def test_keys_set_in_the_recipe_or_command_line_win_over_the_preset(tmp_path):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("defaults: [quickstart]\nalgorithm:\n  preset: dapo\n  clip_eps_high: 0.3\n")
    (tmp_path / "quickstart.yaml").write_text(
        (Path(__file__).resolve().parents[2] / "recipes" / "quickstart.yaml").read_text())
    config = load_config(recipe, ["algorithm.max_gen_rounds=2"])
    assert config.algorithm.clip_eps_high == 0.3  # recipe beats preset
    assert config.algorithm.dynamic_sampling  # preset beats schema default
    assert config.algorithm.max_gen_rounds == 2
    off = load_config(recipe, ["algorithm.dynamic_sampling=false"])
    assert not off.algorithm.dynamic_sampling  # command line beats preset


def test_kl_in_reward_moves_the_kl_out_of_the_loss_but_keeps_the_reference():
    config = load_config("quickstart", ["algorithm.kl_coef=0.05", "algorithm.kl_in_reward=true"])
    assert loss_spec(config).kl_coef == 0.0 and config.algorithm.kl_coef == 0.05


@pytest.mark.parametrize("override, fragment", [
    ("algorithm.preset=ppo", "'algorithm.preset'"),
    ("algorithm.loss_aggregation=sum", "'algorithm.loss_aggregation'"),
    ("algorithm.dual_clip_c=0.5", "'algorithm.dual_clip_c'"),
    ("algorithm.tis_cap=0", "'algorithm.tis_cap'"),
    ("algorithm.updates_per_batch=0", "'algorithm.updates_per_batch'"),
    ("algorithm.kl_estimator=k4", "'algorithm.kl_estimator'"),
    ("algorithm.kl_coef=-1", "'algorithm.kl_coef'"),
])
def test_bad_algorithm_values_name_the_key(override, fragment):
    with pytest.raises(RecipeError, match=fragment):
        load_config("quickstart", [override])


def test_overlong_buffer_must_fit_the_generation_cap():
    with pytest.raises(RecipeError, match="overlong_buffer"):
        load_config("quickstart", ["algorithm.overlong_shaping=true", "algorithm.overlong_buffer=4"])


def test_readme_preset_table_matches_the_presets():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert presets_markdown() in readme, "README's preset table is stale: paste `rlpost presets --markdown`"
