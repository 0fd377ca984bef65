"""Reward plugin loading (built-in name, entry point, dotted path, file path) and the checks run before training."""

import textwrap

import pytest

from rewards import RewardPluginError, call_kwargs, check_output, check_signature, load_reward, reward_name


def _plugin(tmp_path, body: str, name: str = "plugin") -> str:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


def test_load_by_name_dotted_path_and_file(tmp_path):
    assert load_reward("exact_match") is load_reward("rewards.synthetic:exact_match")
    path = _plugin(tmp_path, "def fn(prompts, completions, completion_ids, **kw):\n    return [0.5] * len(prompts)\n")
    assert load_reward(f"{path}:fn")(["a"], ["b"], [[1]]) == [0.5]


def test_unknown_names_and_import_errors_are_named(tmp_path):
    with pytest.raises(RewardPluginError, match="not a built-in"):
        load_reward("nosuch")
    with pytest.raises(RewardPluginError, match="no callable 'missing'"):
        load_reward("rewards.synthetic:missing")
    path = _plugin(tmp_path, "import nosuchmodule_xyz\n")
    with pytest.raises(RewardPluginError, match="nosuchmodule_xyz"):
        load_reward(f"{path}:fn")


def test_signature_check_before_training(tmp_path):
    path = _plugin(tmp_path, "def fn(prompts, completions, solution):\n    return []\n")
    with pytest.raises(RewardPluginError, match="solution"):
        check_signature("p", load_reward(f"{path}:fn"), ["answer"])
    check_signature("exact_match", load_reward("exact_match"), ["answer", "data_source"])


@pytest.mark.parametrize("values, message", [
    ([1.0], "1 values for 2"), ([1.0, float("nan")], "non-finite"), ([1.0, "x"], "non-numeric"), (3.0, "float"),
])
def test_output_checks(values, message):
    with pytest.raises(RewardPluginError, match=message):
        check_output("p", values, 2)


def test_gsm8k_final_number():
    fn = load_reward("gsm8k_final_number")
    out = fn(["q"] * 3, ["so the answer is 1,234.", "maybe 7", "no idea"], [[1]] * 3,
             answer=["... #### 1234", "#### 8", "#### 3"])
    assert out == [1.0, 0.0, 0.0]


def make_entry_point(root, name: str = "shout") -> None:
    """An installed distribution under `root` whose `rlpost.rewards` entry point `name` is `shout_plugin:score`."""
    (root / "shout_plugin.py").write_text(
        "def score(prompts, completions, completion_ids, **kw):\n"
        "    return [float(c.isupper()) for c in completions]\n")
    info = root / "shout_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shout-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[rlpost.rewards]\n{name} = shout_plugin:score\n")


def test_load_by_entry_point(tmp_path, monkeypatch):
    make_entry_point(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    fn = load_reward("shout")
    assert fn(prompts=["p", "p"], completions=["YES", "no"], completion_ids=[[1], [2]]) == [1.0, 0.0]
    with pytest.raises(RewardPluginError, match="(?s)not an installed 'rlpost.rewards' entry point.*shout"):
        load_reward("shoutt")


def test_entry_point_plugin_runs_in_the_worker_child(tmp_path, monkeypatch):
    from actors.reward import RewardSettings, RewardWorker
    from rlpost.types import RewardRequest

    make_entry_point(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    settings = RewardSettings(["shout", "exact_match"], weights=[], timeout_s=60.0, args={}, on_error="raise",
                              max_error_rate=1.0, memory_mb=0)
    worker = RewardWorker(settings)
    result = worker.score(RewardRequest(["p", "p"], ["YES", "no"], [[1], [2]], {"answer": ["YES", "yes"]}))
    assert result.components == {"shout": [1.0, 0.0], "exact_match": [1.0, 0.0]} and result.rewards == [2.0, 0.0]


def test_trl_reward_functions_load_unchanged(tmp_path):
    """The TRL docs' example (completions + **kwargs only) and TRL's own soft overlong punishment, from a file."""
    path = _plugin(tmp_path, """
        from trl.rewards import get_soft_overlong_punishment

        def reward_len(completions, **kwargs):
            return [-abs(20 - len(completion)) for completion in completions]

        overlong = get_soft_overlong_punishment(max_completion_len=10, soft_punish_cache=4)
    """)
    for name in ("reward_len", "overlong"):
        check_signature(name, load_reward(f"{path}:{name}"), ["answer"])
    assert load_reward(f"{path}:reward_len")(prompts=["p"], completions=["x" * 5], completion_ids=[[1]]) == [-15]
    out = load_reward(f"{path}:overlong")(prompts=["p"] * 2, completions=["a", "b"], completion_ids=[[1] * 5, [1] * 8])
    assert out == [0.0, -0.5]


def test_reward_names_and_call_kwargs():
    assert reward_name("exact_match") == "exact_match"
    assert reward_name("pkg.mod:fn") == "fn" and reward_name("a/b.py:score") == "score"

    def strict(prompts, completions, completion_ids, answer):
        return []

    def loose(completions, **kwargs):
        return []

    kwargs = {"prompts": [], "completions": [], "completion_ids": [], "answer": [], "step": 3}
    assert set(call_kwargs(strict, kwargs)) == {"prompts", "completions", "completion_ids", "answer"}
    assert call_kwargs(loose, kwargs) == kwargs


def test_args_are_checked_against_the_signature(tmp_path):
    path = _plugin(tmp_path, "def fn(prompts, completions, completion_ids, scale=1.0):\n    return []\n")
    fn = load_reward(f"{path}:fn")
    check_signature("p", fn, [], {"scale": 2.0})
    with pytest.raises(RewardPluginError, match=r"reward.args.fn sets \['sclae'\]"):
        check_signature("p:fn", fn, [], {"sclae": 2.0})
    with pytest.raises(RewardPluginError, match="threshhold.*did you mean 'threshold'"):
        check_signature("kimi_length_penalty", load_reward("kimi_length_penalty"), [], {"threshhold": 1})
    with pytest.raises(RewardPluginError, match="also dataset columns"):
        check_signature("p:fn", load_reward("exact_match"), ["answer"], {"answer": "x"})


def test_length_budget_is_checked_against_the_run(tmp_path):
    path = _plugin(tmp_path, "def fn(prompts, completions, completion_ids, length_budget):\n    return []\n")
    fn = load_reward(f"{path}:fn")
    check_signature("p", fn, [])
    with pytest.raises(RewardPluginError, match="length_budget"):
        check_signature("p", fn, [], None, ["step", "max_new_tokens", "components"])


def test_readme_plugin_example_works_as_written(tmp_path):
    """The README's ten-line plugin and its recipe snippet, copied out of the README and run."""
    import re
    from pathlib import Path

    from rlpost.recipes import load_config

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("### Reward plugins"):]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    recipe = re.search(r"```yaml\n(.*?)```", section, re.DOTALL).group(1)
    assert len(code.strip().splitlines()) <= 10
    (tmp_path / "my_rewards.py").write_text(code)
    (tmp_path / "recipe.yaml").write_text(recipe)
    config = load_config(tmp_path / "recipe.yaml")
    spec = str(tmp_path / config.reward.functions[0])
    fn = load_reward(spec)
    check_signature(spec, fn, ["answer", "data_source"])
    assert fn(prompts=["q"] * 3, completions=["so 41 then 42", "7", "x"], completion_ids=[[1]] * 3,
              answer=["42", "8", "none"]) == [1.0, 0.0, None]
    assert config.reward.args["think_answer_format"]["think_prefilled"] is True


def test_rewards_command_lists_builtins_styles_options_and_installed_plugins(tmp_path, monkeypatch):
    from rewards import BUILTINS
    from rlpost.app.cli import rewards_listing

    make_entry_point(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    text = rewards_listing()
    for name in [*BUILTINS, "shout"]:
        assert f"\n{name} (" in f"\n{text}"
    assert "kimi_length_penalty (rewards.length:kimi_length_penalty, group)" in text
    assert "code_tests (rewards.code:code_tests, batch <= 8)" in text
    assert "mode='mix'" in text and "shout (shout_plugin:score, batch)" in text
    assert rewards_listing(markdown=True).startswith("| name | function | calls | what it does |")


def test_positional_only_signature_is_refused(tmp_path):
    """F13: `fn(prompts, completions, completion_ids, /, **kw)` used to pass and then fail on every call."""
    path = _plugin(tmp_path, "def fn(prompts, completions, completion_ids, /, **kw):\n    return []\n")
    with pytest.raises(RewardPluginError, match=r"\['prompts', 'completions', 'completion_ids'\] are positional-only"):
        check_signature("p", load_reward(f"{path}:fn"), ["answer"])
    path = _plugin(tmp_path, "def fn2(x=1, /, *, prompts, completions, completion_ids, **kw):\n    return []\n", "p2")
    check_signature("p", load_reward(f"{path}:fn2"), ["answer"])  # an optional one never needs filling


def test_trl_arguments_count_as_provided(tmp_path):
    path = _plugin(tmp_path, "def fn(completions, trainer_state, log_metric, log_extra):\n    return []\n")
    with pytest.raises(RewardPluginError, match="must accept"):  # prompts/completion_ids missing, nothing else
        check_signature("p", load_reward(f"{path}:fn"), ["answer"])
    body = "def fn(prompts, completions, completion_ids, trainer_state, log_metric):\n    return []\n"
    path = _plugin(tmp_path, body, "p2")
    check_signature("p", load_reward(f"{path}:fn"), ["answer"])


def test_sys_exit_at_import_is_a_named_error(tmp_path):
    path = _plugin(tmp_path, "import sys\nsys.exit(0)\n")
    with pytest.raises(RewardPluginError, match="(?s)plugin.py:fn': importing .* failed.*SystemExit: 0"):
        load_reward(f"{path}:fn")


def test_completion_text_reads_both_forms():
    from rewards import completion_text

    assert completion_text("plain") == "plain"
    assert completion_text([{"role": "assistant", "content": "hi"}]) == "hi"
    parts = [{"type": "text", "text": "a"}, {"type": "image"}, {"type": "text", "text": "b"}]
    assert completion_text([{"role": "assistant", "content": parts}]) == "ab"
    assert completion_text([{"role": "assistant", "content": "x"}, {"role": "tool", "content": "out"},
                            {"role": "assistant", "content": "y"}]) == "x\ny"
    with pytest.raises(TypeError, match="string or a list of messages"):
        completion_text(3)


def test_check_and_health_hooks(tmp_path):
    from rewards import read_health, reward, run_check

    def check(columns, limit=2):
        for row, tests in enumerate(columns["tests"]):
            if not isinstance(tests, list):
                raise ValueError(f"row {row}: column 'tests' is {type(tests).__name__}, not a list")
        return f"checked {len(columns['tests'])} rows, limit {limit}"

    @reward(check=check, health=lambda limit=2: {"limit": limit})
    def fn(prompts, completions, completion_ids, limit=2, **kw):
        return []

    good = {"train": {"tests": [["a"], ["b"]]}, "test": {"tests": [["c"]]}}
    assert run_check("p:fn", fn, good, {"limit": 5}) == ["checked 2 rows, limit 5", "checked 1 rows, limit 5"]
    with pytest.raises(RewardPluginError, match="'p:fn' refuses split 'test': row 1: column 'tests' is str"):
        run_check("p:fn", fn, {"train": good["train"], "test": {"tests": [["c"], "['d']"]}})
    assert read_health("p:fn", fn, {"limit": 3}) == {"limit": 3.0}
    assert run_check("exact_match", load_reward("exact_match"), good) == []  # no hook, nothing to say
    with pytest.raises(TypeError, match=r"check=\.\.\.\) must be callable"):
        reward(check="no")
