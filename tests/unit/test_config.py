"""Recipe loading: inheritance, overrides, and errors that name the key path and the file."""

import dataclasses
from pathlib import Path

import pytest

from rlpost.config import RecipeError, all_fields
from rlpost.recipes import load_config, shipped_recipes


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_shipped_recipe_loads():
    assert "quickstart" in shipped_recipes()
    for name in shipped_recipes():
        load_config(name)


def test_defaults_inheritance_and_overrides(tmp_path):
    _write(tmp_path, "base.yaml", "learner:\n  lr: 3.0e-4\n  zero_stage: 2\n")
    child = _write(tmp_path, "child.yaml", "defaults: [base.yaml]\nlearner:\n  zero_stage: 3\n")
    config = load_config(child, ["run.steps=7"])
    assert (config.learner.lr, config.learner.zero_stage, config.run.steps) == (3e-4, 3, 7)


def test_config_is_frozen():
    config = load_config("quickstart")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.run.steps = 1  # type: ignore[misc]


@pytest.mark.parametrize("text, fragments", [
    ("rollout:\n  samples_per_promt: 4\n", ["unknown key 'rollout.samples_per_promt'", "samples_per_prompt"]),
    ("learner:\n  lr: fast\n", ["'learner.lr'", "float"]),
    ("learner:\n  zero_stage: 7\n", ["'learner.zero_stage'", "allowed"]),
    ("run:\n  name: ${run.nope}\n", ["'run.name'"]),
    ("nosuchsection:\n  a: 1\n", ["unknown key 'nosuchsection'"]),
    ("defaults: [missing.yaml]\n", ["missing.yaml", "not found"]),
    ("- just\n- a list\n", ["mapping"]),
    ("reward:\n  on_error: ignore\n", ["'reward.on_error'", "'skip'"]),
    ("model:\n  path: ???\n", ["key 'model.path' is required"]),
    ("data:\n  source: jsonl\n", ["key 'data.path' is required when data.source is 'jsonl'"]),
    ("reward:\n  functions: [exact_match, x.py:exact_match]\n", ["two functions named ['exact_match']"]),
    ("reward:\n  args: {boxed_math: {mode: mix}}\n", ["'reward.args' names ['boxed_math']", "exact_match"]),
    ("reward:\n  args: {exact_match: 3}\n", ["'reward.args.exact_match' must be a mapping"]),
    ("reward:\n  max_error_rate: 2\n", ["'reward.max_error_rate'"]),
])
def test_bad_recipes_name_key_and_file(tmp_path, text, fragments):
    path = _write(tmp_path, "bad.yaml", text)
    with pytest.raises(RecipeError) as err:
        load_config(path)
    message = str(err.value)
    assert "bad.yaml" in message
    for fragment in fragments:
        assert fragment in message


def test_bad_override_names_the_command_line():
    with pytest.raises(RecipeError, match=r"command line \(run.steps=x\): key 'run.steps'"):
        load_config("quickstart", ["run.steps=x"])
    with pytest.raises(RecipeError, match="key=value"):
        load_config("quickstart", ["run.steps"])


def test_every_field_is_documented():
    for key, _, _, text in all_fields():
        assert text, f"{key} has no documentation"


def test_readme_key_table_matches_the_schema():
    from rlpost.app.cli import keys_markdown

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert keys_markdown() in readme, "README's recipe-key table is stale: paste `rlpost keys --markdown`"


def test_reward_args_and_fixed_error_score_load(tmp_path):
    path = _write(tmp_path, "ok.yaml", "reward:\n  functions: [math_accuracy, boxed_math]\n  on_error: -1\n"
                  "  args:\n    boxed_math: {mode: independent, format_penalty: -0.5}\n")
    config = load_config(path, ["reward.args.boxed_math.wrong_boxed=-0.25"])
    assert config.reward.on_error == "-1"
    assert dict(config.reward.args["boxed_math"]) == {"mode": "independent", "format_penalty": -0.5,
                                                      "wrong_boxed": -0.25}


def test_required_value_given_by_a_child_recipe(tmp_path):
    _write(tmp_path, "base.yaml", "model:\n  path: ???\nrun:\n  steps: 7\n")
    child = _write(tmp_path, "child.yaml", "defaults: [base]\nmodel:\n  path: /models/x\n")
    config = load_config(child)
    assert config.model.path == "/models/x" and config.run.steps == 7
    assert load_config(tmp_path / "base.yaml", ["model.path=/m"]).model.path == "/m"


def test_deepspeed_extra_config_merges_over_the_generated_one():
    from actors.learner import ds_config

    config = load_config("quickstart", ["learner.deepspeed={zero_optimization: {offload_optimizer: {device: cpu}}, "
                                        "gradient_clipping: 0.5}"])
    ds = ds_config(config.learner, "float32")
    assert ds["zero_optimization"] == {"stage": 1, "offload_optimizer": {"device": "cpu"}}
    assert ds["gradient_clipping"] == 0.5 and ds["train_micro_batch_size_per_gpu"] == config.learner.micro_batch_size
    with pytest.raises(RecipeError, match="learner.deepspeed' sets \\['train_batch_size'\\]"):
        load_config("quickstart", ["learner.deepspeed={train_batch_size: 8}"])
