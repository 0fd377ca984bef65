"""Recipe values out of range, empty and null overrides, YAML mistakes and data-dependent checks: each is one line
naming the key (or the file's line) and the recipe or command line, before any actor starts; through the CLI, exit 2
and no traceback."""

import dataclasses
import typing
from pathlib import Path

import pytest

from rlpost.app.cli import main
from rlpost.choices import is_choice
from rlpost.config import RecipeError, RootConfig, all_fields, doc
from rlpost.recipe_checks import CHOICES, ENTRY_RANGES, RANGES, check_against_data, in_interval
from rlpost.recipes import load_config
from rlpost.types import Prompt


def _write(tmp_path: Path, text: str, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _refused(overrides: list[str]) -> str:
    with pytest.raises(RecipeError) as err:
        load_config("quickstart", overrides)
    return str(err.value)


@pytest.mark.parametrize("override, fragment", [
    ("run.steps=0", "'run.steps' is 0; allowed: an integer in [1, 10000000]"),
    ("run.steps=-1", "'run.steps' is -1"),
    ("run.steps=100000000000000000000", "'run.steps' is 100000000000000000000"),
    ("learner.lr=nan", "'learner.lr' is nan; allowed: a finite number in (0, inf)"),
    ("learner.lr=-1.0", "'learner.lr' is -1.0"),
    ("learner.lr=inf", "'learner.lr' is inf"),
    ("learner.lr=1e999", "'learner.lr' is inf"),
    ("rollout.temperature=-1", "'rollout.temperature' is -1.0"),
    ("rollout.temperature=0", "'rollout.temperature' is 0.0"),
    ("rollout.top_p=2", "'rollout.top_p' is 2.0; allowed: a finite number in (0, 1]"),
    ("rollout.top_p=0", "'rollout.top_p' is 0.0"),
    ("rollout.max_new_tokens=0", "'rollout.max_new_tokens' is 0"),
    ("rollout.max_new_tokens=5000", "'rollout.max_new_tokens' is 5000; it must be below rollout.max_model_len=64"),
    ("data.max_prompt_tokens=64", "'data.max_prompt_tokens' is 64; it must be below rollout.max_model_len=64"),
    ("rollout.samples_per_prompt=100000000000000000000000000000", "'rollout.samples_per_prompt' is 1000000000"),
    ("learner.world_size=0", "'learner.world_size' is 0"),
    ("rollout.num_engines=100000", "'rollout.num_engines' is 100000; allowed: an integer in [1, 4096]"),
    ("learner.betas=[0.9,1.0]", "'learner.betas' has 1.0 at 1; allowed: finite numbers in [0, 1)"),
    ("learner.betas=[0.9]", "'learner.betas' must hold two numbers"),
    ("learner.adam_eps=0", "'learner.adam_eps' is 0.0"),
    ("learner.grad_clip=-1", "'learner.grad_clip' is -1.0"),
    ("algorithm.clip_eps_low=-0.1", "'algorithm.clip_eps_low' is -0.1"),
    ("algorithm.clip_eps_high=nan", "'algorithm.clip_eps_high' is nan"),
    ("algorithm.advantage_eps=0", "'algorithm.advantage_eps' must be positive when algorithm.advantage_std is 'group'"),
    ("algorithm.advantage_std_ddof=2", "'algorithm.advantage_std_ddof' is 2; allowed: 0, 1"),
    ("reward.timeout_s=inf", "'reward.timeout_s' is inf"),
    ("resources.call_timeout_s=0", "'resources.call_timeout_s' is 0.0"),
    ("reward.on_error=nan", "'reward.on_error' is 'nan'; allowed: 'raise', 'skip' or a finite number"),
    ("reward.weights=[nan]", "'reward.weights' has nan at 0"),
    ("sampler.mixture_weights.sum5=nan", "'sampler.mixture_weights' has nan at 'sum5'"),
    ("resources.rollout_custom.node=-1", "'resources.rollout_custom' has -1.0 at 'node'"),
    ("allocator.prior_a=0", "'allocator.prior_a' is 0.0"),
    ("data.embedded_sources=[sum3,sum19]", "'data.embedded_sources': unknown embedded data_source 'sum19'"),
    ("data.embedded_sources=[sum3,add4]", "unknown embedded data_source 'add4': sources are 'sumK'"),
    ("data.embedded_sources=[]", "'data.embedded_sources' is empty"),
    ("data.embedded_sources=[sum3,sum5,sum3]", "'data.embedded_sources' lists ['sum3'] more than once"),
    ("run.eval_samples=0", "'run.eval_samples' is 0"),
    ("data.embedded_sources=[sum3,trace4]", "mixes 'sumK' and 'traceK' sources"),
    ("data.embedded_sources=[trace4]", "key 'model.path' is 'embedded' but data.embedded_sources are trace "
                                       "sources; use model.path=embedded_trace"),
    ("data.embedded_sources=[trace9]", "sources are 'traceK' with K from 1 to 8"),
    ("model.path=embedded_trace", "key 'model.path' is 'embedded_trace' but data.embedded_sources are digit-sum "
                                  "sources; use model.path=embedded"),
    ("memory.k=0", "'memory.k' is 0"),
    ("memory.exploit_weight=-1", "'memory.exploit_weight' is -1.0"),
    ("memory.extract=first", "'memory.extract' is 'first'; allowed: 'trace', 'tag', 'all'"),
])
def test_out_of_range_overrides_name_the_key_and_the_command_line(override, fragment):
    message = _refused([override])
    assert "quickstart with command-line overrides: key " in message and fragment in message, message


def test_more_completions_per_step_than_memory_allows_is_refused():
    message = _refused(["algorithm.prompts_per_step=1000000", "rollout.samples_per_prompt=1000"])
    assert "ask for 1000000000 completions per step" in message


def test_advantage_eps_may_be_zero_without_std_normalisation():
    config = load_config("quickstart", ["algorithm.preset=dr_grpo", "algorithm.advantage_eps=0"])
    assert config.algorithm.advantage_std == "none" and config.algorithm.advantage_eps == 0


@pytest.mark.parametrize("text, fragment", [
    ("learner:\n  lr: .nan\n", "key 'learner.lr' is nan"),
    ("learner:\n  lr: -.inf\n", "key 'learner.lr' is -inf"),
    ("run:\n  steps: 0\n", "key 'run.steps' is 0"),
    ("rollout:\n  temperature: -1\n  top_p: 2\n", "key 'rollout.temperature' is -1.0"),
])
def test_out_of_range_recipe_values_name_the_file(tmp_path, text, fragment):
    with pytest.raises(RecipeError, match="bad.yaml: " + fragment.replace(".", r"\.")):
        load_config(_write(tmp_path, text))


def test_realistic_large_runs_are_accepted():
    config = load_config("quickstart", ["run.steps=100000", "algorithm.prompts_per_step=1024",
                                        "rollout.samples_per_prompt=64", "rollout.max_model_len=32768",
                                        "rollout.max_new_tokens=16384", "learner.world_size=64",
                                        "resources.call_timeout_s=86400", "learner.lr=1e-6"])
    assert config.rollout.samples_per_prompt == 64


def _interval_problems(section: str, section_type: type) -> list[str]:
    """What is wrong with the intervals a section's fields declare: a number without `range=`, a list or mapping of
    numbers without `entries=`, an interval on anything else, or one that does not parse."""
    problems, types = [], typing.get_type_hints(section_type)
    for leaf in dataclasses.fields(section_type):
        key, kind = f"{section}.{leaf.name}", types[leaf.name]
        numeric = kind in (int, float) and not is_choice(kind)
        holds_numbers = not numeric and bool({int, float} & set(typing.get_args(kind)))  # list[float], dict[str, float]
        for name, wanted in (("range", numeric), ("entries", holds_numbers)):
            if wanted and name not in leaf.metadata:
                problems.append(f"{key} has no allowed interval: give its doc(...) in rlpost/config.py "
                                f'{name}="[low, high]" (see MAX_* there)')
            elif name in leaf.metadata and not wanted:
                problems.append(f"{key} is not {'a number' if name == 'range' else 'a list or mapping of numbers'} "
                                f"but declares {name}=")
            elif name in leaf.metadata:
                interval = leaf.metadata[name]
                try:
                    low, high = (float(bound) for bound in interval[1:-1].split(","))
                    valid = interval[0] in "[(" and interval[-1] in "])" and low < high
                except ValueError:
                    valid = False
                if not valid:
                    problems.append(f"{key} declares {name}={interval!r}, not an interval like '[0, 1)'")
    return problems


def test_every_numeric_key_has_a_range():
    problems = [p for section, kind in typing.get_type_hints(RootConfig).items()
                for p in _interval_problems(section, kind)]
    assert not problems, "\n".join(problems)
    assert set(RANGES) | set(ENTRY_RANGES) <= {key for key, *_ in all_fields()} and not set(RANGES) & set(CHOICES)
    assert RANGES["run.steps"] == "[1, 10000000]" and ENTRY_RANGES["learner.betas"] == "[0, 1)"


def test_a_numeric_field_added_without_a_range_is_named():
    @dataclasses.dataclass(frozen=True)
    class NewSection:
        ranged: int = doc("an int with its interval", 1, range="[0, 10]")
        knob: float = doc("a new knob someone forgot to bound", 0.5)
        weights: dict[str, float] = doc("new weights, unbounded", factory=dict)
        name: str = doc("no interval wanted", "", range="[0, 1]")
        rate: float = doc("a typo in its interval", 0.5, range="[0; 1]")

    assert _interval_problems("new", NewSection) == [
        'new.knob has no allowed interval: give its doc(...) in rlpost/config.py range="[low, high]" (see MAX_* there)',
        'new.weights has no allowed interval: give its doc(...) in rlpost/config.py entries="[low, high]" (see MAX_* '
        'there)',
        "new.name is not a number but declares range=",
        "new.rate declares range='[0; 1]', not an interval like '[0, 1)'"]


def test_intervals_respect_open_and_closed_ends():
    assert [in_interval(v, "(0, 1]") for v in (0, 1e-12, 1, 1.0001)] == [False, True, True, False]
    assert [in_interval(v, "[0, 1)") for v in (0, 1)] == [True, False]
    assert not in_interval(float("nan"), "(-inf, inf)") and not in_interval(float("inf"), "[0, inf)")


def test_empty_value_is_the_empty_string_for_str_keys_only():
    config = load_config("quickstart", ["data.eval_split=", "resume="])
    assert (config.data.eval_split, config.checkpoint.resume) == ("", "")
    assert "key 'run.steps' has no value after '=' (expected int" in _refused(["run.steps="])
    assert "key 'reward.weights' has no value after '=' (expected list[float]" in _refused(["reward.weights="])
    assert "key 'run.steps'" in _refused(["run.steps=null"])  # null is no int either
    assert "key 'data.eval_split'" in _refused(["data.eval_split=null"])  # nor a str: `key=` is the empty one
    assert "override '=3' has no key" in _refused(["=3"])
    args = load_config("quickstart", ["reward.args.exact_match.x="]).reward.args  # free-form values stay null
    assert args["exact_match"]["x"] is None


def test_malformed_override_is_named_not_a_traceback():
    message = _refused(["reward.functions=[a,b"])
    assert message == ("command line (reward.functions=[a,b): cannot parse the value '[a,b': while parsing a flow "
                       "sequence: did not find expected ',' or ']'")
    assert "command line (run.name=${oops)" in _refused(["run.name=${oops"])


@pytest.mark.parametrize("text, fragments", [
    ("run:\n  steps: 3\nrollout:\n  seed: 1\nrun:\n  steps: 4\n",
     ["not valid YAML at line 5, column 1", "found duplicate key run"]),
    ("run:\n\tsteps: 3\n", ["at line 2, column 1 (a tab: YAML indents with spaces)", "cannot start any token"]),
    ("reward:\n  functions: [a, b\nrun:\n  steps: 2\n",
     ["in the block from line 2", "while parsing a flow sequence: did not find expected ',' or ']'"]),
    ("model: {path: ???}\n", ["at line 1, column 15 (in {...} flow style write '???' in quotes)"]),
    ("", ["the recipe is empty"]),
    ("# nothing but a comment\n", ["the recipe is empty"]),
    ("run: 3\n", ["key 'run' is a section (a mapping of keys), got 3"]),
])
def test_yaml_mistakes_keep_the_problem_and_its_line(tmp_path, text, fragments):
    with pytest.raises(RecipeError) as err:
        load_config(_write(tmp_path, text))
    message = str(err.value)
    assert "bad.yaml" in message and "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_quoted_required_marker_in_flow_style_is_the_required_error(tmp_path):
    with pytest.raises(RecipeError, match="key 'model.path' is required"):
        load_config(_write(tmp_path, "model: {path: '???'}\n"))


@pytest.mark.parametrize("recipe_text, overrides, fragment", [
    ("run:\n  steps: 2\nrun:\n  steps: 3\n", [], "found duplicate key run"),
    ("", [], "the recipe is empty"),
    ("run:\n  steps: 2\n", ["reward.functions=[a,b"], "command line (reward.functions=[a,b)"),
    ("run:\n  steps: 2\n", ["learner.lr=nan"], "key 'learner.lr' is nan"),
])
def test_cli_prints_one_line_and_exits_2(tmp_path, capsys, recipe_text, overrides, fragment):
    path = _write(tmp_path, recipe_text)
    assert main(["validate", "--offline", str(path), *overrides]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlpost: error: ") and fragment in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def _prompts(lengths: list[int], sources: list[str] | None = None) -> list[Prompt]:
    sources = sources or ["s"] * len(lengths)
    return [Prompt(uid, "p", [1] * n, "a", source) for uid, (n, source) in enumerate(zip(lengths, sources))]


def test_prompts_per_step_above_the_training_prompts_is_a_warning():
    config = load_config("quickstart", ["algorithm.prompts_per_step=1000"])
    assert check_against_data(config, _prompts([4, 4, 4])) == [
        "key 'algorithm.prompts_per_step' is 1000 but the training split has 3 prompts, so each step repeats prompts "
        "about 333 times; set it to at most 3 and raise rollout.samples_per_prompt for more completions per prompt"]
    assert check_against_data(load_config("quickstart", ["algorithm.prompts_per_step=3"]), _prompts([4, 4, 4])) == []


def test_staged_sources_too_few_for_a_step_is_a_warning():
    config = load_config("quickstart", ["algorithm.prompts_per_step=3", "sampler.kind=staged",
                                        "sampler.staged_sources=[hard]"])
    (warning,) = check_against_data(config, _prompts([4, 4, 4], ["easy", "easy", "hard"]))
    assert "but sampler.staged_sources (from step 0) has 1 prompts" in warning


def test_prompt_plus_generation_cap_must_fit_the_context():
    config = load_config("quickstart", ["algorithm.prompts_per_step=2"])  # max_model_len 64, max_new_tokens 4
    assert check_against_data(config, _prompts([60, 3])) == []
    with pytest.raises(RecipeError, match="row 0 of split 'train' has 61 prompt tokens and rollout.max_new_tokens "
                                          "is 4"):
        check_against_data(config, _prompts([61, 3]))
    config = dataclasses.replace(config, run=dataclasses.replace(config.run, eval_max_new_tokens=20))
    with pytest.raises(RecipeError, match="row 1 of split 'test' has 50 prompt tokens and run.eval_max_new_tokens"):
        check_against_data(config, _prompts([10, 3]), _prompts([10, 50]))


def test_cli_data_error_is_one_line_and_exit_2(tmp_path, capsys):
    """A non-UTF-8 jsonl through `rlpost validate`: the model directory holds only a tokenizer and a config."""
    from transformers import LlamaConfig

    from rlpost.embedded.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(tmp_path / "model")
    LlamaConfig(vocab_size=len(tokenizer)).save_pretrained(tmp_path / "model")
    (tmp_path / "train.jsonl").write_bytes(b'{"prompt": "1+2=", "answer": "3"}\n{"prompt": "\xff", "answer": "1"}\n')
    recipe = _write(tmp_path, f"model:\n  path: {tmp_path / 'model'}\ndata:\n  source: jsonl\n"
                              f"  path: {tmp_path / 'train.jsonl'}\n  eval_split: ''\n")
    assert main(["validate", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert err.strip().endswith("train.jsonl:2: not UTF-8 text (byte 0xff at column 13); jsonl files must be UTF-8")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_prepare_runs_the_data_checks(tmp_path, capsys):
    """`rlpost validate` (and train) runs check_against_data: a prompt plus its cap past max_model_len is an error,
    prompts_per_step above the data a warning."""
    from transformers import LlamaConfig

    from rlpost.embedded.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(tmp_path / "model")
    LlamaConfig(vocab_size=len(tokenizer)).save_pretrained(tmp_path / "model")
    (tmp_path / "train.jsonl").write_text('{"prompt": "1+2=", "answer": "3"}\n'
                                          '{"prompt": "12345678+1=", "answer": "1"}\n')
    recipe = _write(tmp_path, f"model:\n  path: {tmp_path / 'model'}\ndata:\n  source: jsonl\n"
                              f"  path: {tmp_path / 'train.jsonl'}\n  eval_split: ''\n")
    assert main(["validate", "--offline", str(recipe)]) == 0
    assert main(["validate", str(recipe), "rollout.max_model_len=16", "rollout.max_new_tokens=8",
                 "data.max_prompt_tokens=12"]) == 2
    assert "row 1 of split 'train'" in capsys.readouterr().err
    assert main(["train", "--dry-run", str(recipe)]) == 0
    assert "warning: " in capsys.readouterr().err
