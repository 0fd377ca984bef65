"""Test suites as datasets store them (rewards/code_formats.py): every accepted form, every malformed one refused
with its reason, and output comparison; and the check that runs them over a dataset before training."""

import json

import pytest

from rewards.code_formats import parse_tests, same_output
from rlpost.app.cli import main


@pytest.mark.parametrize("value,kind,count", [
    (["assert f(1) == 2", "assert f(2) == 3"], "assert/script", 2),
    ("assert f(1) == 2\nassert f(2) == 3", "assert/script", 1),  # one script, one test
    ("['assert f(1) == 2', 'assert f(2) == 3']", "assert/script", 2),  # a Python list literal in a string
    ('["assert f(1) == 2"]', "assert/script", 1),  # JSON text
    ('"[\\"assert f(1) == 2\\"]"', "assert/script", 1),  # JSON text of JSON text
    ("def check(c):\n    assert c(1) == 2\ncheck(f)", "assert/script", 1),
    ({"inputs": ["1\n", "2\n"], "outputs": ["2\n", "4\n"]}, "stdin/stdout", 2),
    ({"input": [["1", "2"]], "output": [["3"]]}, "stdin/stdout", 1),  # lines given as lists
    ('{"inputs": ["1"], "outputs": ["2"]}', "stdin/stdout", 1),  # APPS's input_output column
    ({"fn_name": "f", "inputs": [[1], [2]], "outputs": [[2], [4]]}, "call", 2),
    ([{"input": "1", "output": "2", "testtype": "stdin"}], "stdin/stdout", 1),
])
def test_accepted_forms(value, kind, count):
    suite = parse_tests(value)
    assert suite.label == kind and len(suite) == count


def test_no_tests_is_none():
    assert parse_tests(None) is None


@pytest.mark.parametrize("value,reason", [
    ("", "empty string"),
    ("   \n ", "empty string"),
    ([], "empty list"),
    (["assert f(1) == 2", ""], "test 1 is empty"),
    (["assert f(1) == 2", 3], "test 1 is a int"),
    ("[assert f(1) == 2]", "looks like a list but does not parse"),
    ("['assert f(1) == 2'", "not valid Python"),
    ('"x = 1"', "cannot fail"),  # text encoded twice is decoded, then checked like any script
    ("x = 1", "cannot fail"),  # runs, asserts nothing: every compiling completion would pass
    (["1 + 1"], "cannot fail"),
    ("assert f(1) ==", "not valid Python"),
    (5, "the tests are a int"),
    ({"inputs": ["1"]}, "needs lists 'inputs' and 'outputs'"),
    ({"inputs": ["1", "2"], "outputs": ["1"]}, "as many outputs as inputs"),
    ({"inputs": [], "outputs": []}, "at least one"),
    ({"fn_name": "not a name", "inputs": [[1]], "outputs": [1]}, "fn_name must be a function name"),
    ({"inputs": [1], "outputs": ["1"]}, "input must be text"),
    ([{"input": "1"}], "needs 'input' and 'output'"),
    ([{"input": "1", "output": "2", "testtype": "functional"}], "only stdin tests"),
])
def test_malformed_tests_are_refused(value, reason):
    with pytest.raises(ValueError, match=reason):
        parse_tests(value)


def test_output_comparison():
    assert same_output("4\ndone  \n\n", "4\ndone")
    assert same_output("4\r\ndone\r\n", "4\ndone\n")
    assert not same_output("4 done", "4\ndone")
    assert same_output("4 done", "4\ndone", mode="tokens")
    assert not same_output("0.3333333", "0.333333")
    assert same_output("0.3333333", "0.333333", float_tol=1e-5)
    assert not same_output("0.34", "0.333333", float_tol=1e-5)
    assert same_output("nan", "nan", float_tol=1.0)  # equal text matches
    assert not same_output("nan", "1.0", float_tol=10.0)  # a non-finite number is close to nothing
    assert not same_output("1 2\n3", "1\n2 3", float_tol=1e-9)  # lines stay lines with a tolerance


def _recipe(tmp_path, rows):
    """A recipe over a jsonl of `rows` with code_tests; the model directory holds a tokenizer and a config."""
    from transformers import LlamaConfig

    from rlpost.embedded.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(tmp_path / "model")
    LlamaConfig(vocab_size=len(tokenizer)).save_pretrained(tmp_path / "model")
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model:\n  path: {tmp_path / 'model'}\ndata:\n  source: jsonl\n"
                      f"  path: {tmp_path / 'train.jsonl'}\n  eval_split: ''\n"
                      "algorithm:\n  prompts_per_step: 2\nreward:\n  functions: [code_tests]\n")
    return recipe


def test_validate_checks_every_row_of_the_tests_column(tmp_path, capsys):
    good = {"prompt": "1+1=", "answer": "", "tests": ["assert f(1) == 2"]}
    assert main(["validate", str(_recipe(tmp_path, [good, good]))]) == 0
    out = capsys.readouterr().out
    assert "ok: code_tests: rows 2 assert/script; sandbox bwrap" in out
    for bad, reason in (("", "row 1, column 'tests': the tests are an empty string"),
                        ("[assert f(1) == 2]", "row 1, column 'tests': the tests are a string that looks like a list"),
                        ("x = 1", "row 1, column 'tests': test 0 asserts, raises and calls nothing")):
        assert main(["validate", str(_recipe(tmp_path, [good, {**good, "tests": bad}]))]) == 2
        err = capsys.readouterr().err
        assert "reward plugin 'code_tests'" in err and reason in err, err
    no_column = [{"prompt": "1+1=", "answer": ""}] * 2
    assert main(["train", "--dry-run", str(_recipe(tmp_path, no_column))]) == 2
    assert "no column 'tests'" in capsys.readouterr().err
