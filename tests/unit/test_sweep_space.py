"""The sweep's search-space file (rlpost/sweep/space.py): every kind of dimension, and the errors a user can make,
each naming the key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlpost.config import RecipeError
from rlpost.recipes import load_config
from rlpost.sweep.space import load_space, overrides_for


def space(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_every_kind_is_read_and_maps_to_tune(tmp_path):
    from ray.tune.search.sample import Categorical, Float, Integer

    s = load_space(space(tmp_path, """
learner.lr: {loguniform: [1.0e-5, 1.0e-3]}
algorithm.clip_eps_low: {choice: [0.1, 0.2]}
run.seed: {grid: [0, 1, 2]}
rollout.temperature: {uniform: [0.7, 1.0]}
rollout.samples_per_prompt: {randint: [4, 9]}
rollout.max_new_tokens: 6
"""), "quickstart")
    tune = s.tune_space()
    assert isinstance(tune["learner.lr"], Float) and isinstance(tune["rollout.temperature"], Float)
    assert isinstance(tune["algorithm.clip_eps_low"], Categorical)
    assert isinstance(tune["rollout.samples_per_prompt"], Integer)
    assert tune["run.seed"] == {"grid_search": [0, 1, 2]}
    assert tune["rollout.max_new_tokens"] == 6
    assert s.grid_size() == 3
    assert s.keys()[0] == "learner.lr"


@pytest.mark.parametrize("text, needle", [
    ("learner.lrr: {grid: [1.0e-5]}", "'learner.lrr' is not a recipe key (did you mean learner.lr?)"),
    ("lr: {grid: [1.0e-5]}", "did you mean learner.lr"),
    ("learner.lr: {between: [1, 2]}", "expected a value or one of"),
    ("learner.lr: {grid: []}", "needs a non-empty list"),
    ("learner.lr: {loguniform: [0.0, 1.0]}", "needs low > 0"),
    ("learner.lr: {uniform: [2.0, 1.0]}", "needs low < high"),
    ("rollout.samples_per_prompt: {randint: [2.5, 8]}", "needs integers"),
    ("learner.lr: {grid: [1.0e-5, 1.0e-5]}", "lists a value twice"),
    ("learner.lr: {grid: [-1.0, 1.0e-5]}", "value -1.0 is not valid for the recipe"),
    ("rollout.samples_per_prompt: {choice: [4, many]}", "key 'rollout.samples_per_prompt' value 'many'"),
    ("run.name: {grid: [a, b]}", "set by the sweep itself"),
    ("sweep.threshold: {grid: [0.1, 0.2]}", "set by the sweep itself"),
    ("[1, 2]", "expected a mapping"),
])
def test_errors_name_the_key_and_the_file(tmp_path, text, needle):
    path = space(tmp_path, text)
    with pytest.raises(RecipeError) as err:
        load_space(path, "quickstart")
    assert needle in str(err.value) and str(path) in str(err.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(RecipeError, match="search space file not found"):
        load_space(tmp_path / "nope.yaml", "quickstart")


@pytest.mark.parametrize("value", [3e-05, 1e-4, 5e-05, 2.5e-7, 0.5, 1.0, 1e20, 0.0003])
def test_float_overrides_load_back_as_the_same_float(value):
    assert load_config("quickstart", overrides_for({"learner.lr": value})).learner.lr == value


def test_overrides_of_other_types():
    assert overrides_for({"run.progress_bar": False, "run.seed": 3, "run.loggers": ["tensorboard"]}) == [
        "run.loggers=[\"tensorboard\"]", "run.progress_bar=false", "run.seed=3"]
    config = load_config("quickstart", overrides_for({"run.progress_bar": False, "run.seed": 3}))
    assert config.run.progress_bar is False and config.run.seed == 3
