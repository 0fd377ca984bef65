"""Reward plugins are loaded and checked in a child process before any actor starts (actors/plugin_process.py):
a plugin that exits, hangs or is interrupted at import is a named error, never a silent exit 0 or a hang (security
review F8), and a plugin's `check` hook sees every row of each split the run uses. Through `rlpost validate`,
`train --dry-run` and `train` too (in this process; each fails before Ray would start)."""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path

import pytest

from actors.plugin_process import check_plugins
from rewards import RUN_COLUMNS, RewardPluginError

HOOKS = '''
from rewards import reward

def _check(columns, strict=False):
    for row, tests in enumerate(columns["tests"]):
        if not isinstance(tests, list) or not tests:
            raise ValueError(f"row {row}: column 'tests' holds {tests!r}, expected a non-empty list")
    return f"tests: {len(columns['tests'])} rows look fine (strict={strict})"

@reward(check=_check)
def graded(prompts, completions, completion_ids, tests, strict=False, **kw):
    return [float(bool(t)) for t in tests]
'''


def _write(tmp_path, name: str, body: str) -> str:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


@pytest.mark.parametrize("body, message", [
    ("import sys\nsys.exit(0)\n", r"importing .* failed:.*SystemExit: 0"),
    ("import os\nos._exit(0)\n", r"its process exited with code 0 while importing"),
    ("raise KeyboardInterrupt\n", r"importing it raised:.*KeyboardInterrupt"),
])
def test_a_plugin_that_ends_its_import_is_named(tmp_path, body, message):
    path = _write(tmp_path, "ender", body)
    with pytest.raises(RewardPluginError, match=f"(?s)reward plugin '{path}:fn'.*{message}"):
        check_plugins(["exact_match", f"{path}:fn"], {}, None, RUN_COLUMNS)
    assert all(getattr(m, "__file__", None) != path for m in list(sys.modules.values()))  # never ran in this process


def test_a_plugin_that_hangs_at_import_is_named_within_the_limit(tmp_path):
    spec = _write(tmp_path, "hangs", "import time\nwhile True:\n    time.sleep(1)\n") + ":fn"
    start = time.monotonic()
    with pytest.raises(RewardPluginError, match=f"reward plugin '{spec}' did not finish importing within 2 s"):
        check_plugins([spec], {}, None, RUN_COLUMNS, timeout_s=2)
    assert time.monotonic() - start < 15


def test_signatures_are_checked_in_the_child_against_every_split(tmp_path):
    spec = _write(tmp_path, "positional", "def fn(prompts, completions, completion_ids, /, **kw):\n    return []\n")
    with pytest.raises(RewardPluginError, match="are positional-only"):
        check_plugins([f"{spec}:fn"], {}, None, RUN_COLUMNS)
    splits = {"train": {"answer": ["1"], "solution": ["1"]}, "test": {"answer": ["2"]}}
    with pytest.raises(RewardPluginError, match=r"needs argument\(s\) \['solution'\].*dataset columns: \['answer'\]"):
        check_plugins(["trl.rewards:accuracy_reward"], {}, splits, RUN_COLUMNS)


def test_check_hook_sees_every_row_and_args_and_its_note_comes_back(tmp_path):
    spec = _write(tmp_path, "hooks", HOOKS) + ":graded"
    rows = [["assert f() == 1"]] * 300
    splits = {"train": {"tests": rows, "answer": ["a"] * 300}, "test": {"tests": rows[:2], "answer": ["b"] * 2}}
    notes = check_plugins([spec, "exact_match"], {"graded": {"strict": True}}, splits, RUN_COLUMNS)
    assert notes == ["tests: 300 rows look fine (strict=True)", "tests: 2 rows look fine (strict=True)"]
    bad = {"train": {"tests": rows[:5] + ["['assert f() == 1']"], "answer": ["a"] * 6}}
    with pytest.raises(RewardPluginError, match=rf"reward plugin '{spec}' refuses split 'train': row 5: column 'tests' "
                                                r"holds \"\['assert"):
        check_plugins([spec], {}, bad, RUN_COLUMNS)
    assert check_plugins([spec], {}, None, RUN_COLUMNS) == []  # offline: no data, no hook


# ---- through the CLI ------------------------------------------------------------------------------------------------
@pytest.fixture
def recipe(tmp_path):
    """A recipe on a two-row jsonl dataset and a tiny model directory (config and tokenizer only: nothing loads
    weights before actors start)."""
    from rlpost.embedded.model import model_config
    from rlpost.embedded.tokenizer import save_tokenizer

    model = tmp_path / "model"
    model_config().save_pretrained(model)
    save_tokenizer(model)
    rows = [{"prompt": "1+1=", "answer": "2", "tests": ["assert 1"]}, {"prompt": "2+2=", "answer": "4", "tests": "x"}]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    path = tmp_path / "recipe.yaml"
    quickstart = Path(__file__).resolve().parents[2] / "recipes" / "quickstart.yaml"
    path.write_text(f"defaults: [{quickstart}]\nmodel: {{path: {model}}}\n"
                    f"data: {{source: jsonl, path: {tmp_path / 'train.jsonl'}, eval_split: ''}}\n")
    return str(path)


@pytest.mark.parametrize("command", [["validate", "--offline"], ["validate"], ["train", "--dry-run"], ["train"]])
def test_cli_names_a_plugin_that_exits_at_import(tmp_path, recipe, capsys, command):
    from rlpost.app.cli import main

    spec = _write(tmp_path, "exits", "import os\nos._exit(0)\n") + ":fn"
    assert main([command[0], recipe, f"reward.functions=[{spec}]", *command[1:]]) == 2
    err = capsys.readouterr().err
    assert f"rlpost: error: reward plugin '{spec}': its process exited with code 0 while importing" in err


def test_validate_prints_the_check_hooks_note_and_refuses_bad_rows(tmp_path, recipe, capsys):
    from rlpost.app.cli import main

    spec = _write(tmp_path, "hooks", HOOKS) + ":graded"
    assert main(["validate", recipe, f"reward.functions=[{spec}]"]) == 2
    assert "refuses split 'train': row 1: column 'tests' holds 'x'" in capsys.readouterr().err
    data = tmp_path / "train.jsonl"
    data.write_text(data.read_text().replace('"tests": "x"', '"tests": ["assert 2"]'))
    assert main(["validate", recipe, f"reward.functions=[{spec}]", "reward.args={graded: {strict: true}}"]) == 0
    assert "[rlpost] ok: tests: 2 rows look fine (strict=True)" in capsys.readouterr().out
