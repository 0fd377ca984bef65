"""The code_tests reward: scores for each test format, limits (time, memory, output), and weak-sandbox refusal.
Forgery attempts are in test_code_forgery.py, escape attempts against the kernel layer in test_code_escapes.py."""

import time

import pytest

from rewards import sandbox
from rewards.code import WeakSandboxError, check_code_tests, code_tests, extract_code, sandbox_health


def _score(code, tests, **args):
    """The reward of one completion holding `code` in a fenced block."""
    completion = f"Here you go:\n```python\n{code}\n```\n"
    return code_tests(prompts=["p"], completions=[completion], completion_ids=[[0]], tests=[tests], **args)[0]


def test_the_kernel_sandbox_is_available():
    # scripts/test.sh installs bubblewrap; without it every code test below would run in weak mode
    info = sandbox.detect()
    assert info.strong, f"no kernel-level sandbox here ({info.detail}); install bubblewrap (scripts/_env.sh does)"
    assert info.seccomp


def test_assert_tests_score_the_fraction_passed():
    completions = ["```python\ndef f(x):\n    return x * x\n```", "```python\ndef f(x):\n    return x + x\n```",
                   "def f(x):\n    return x * x", "no code here"]
    tests = [["assert f(2) == 4", "assert f(3) == 9", "assert f(0) == 0"]] * 4
    assert code_tests(prompts=["p"] * 4, completions=completions, completion_ids=[[0]] * 4,
                      tests=tests) == pytest.approx([1.0, 2 / 3, 1.0, 0.0])
    assert _score("def f(x):\n    return x + x", tests[0], all_or_nothing=True) == 0.0
    assert _score("def f(x):\n    return x * x", "assert f(2) == 4\nassert f(3) == 9") == 1.0  # a script: one test
    assert _score("def f(x):\n    return x * x", None) is None  # a row without tests has no score
    assert code_tests(prompts=["p"], completions=["def g(): return 1"], completion_ids=[[0]],
                      unit_tests=[["assert g() == 1"]], tests_key="unit_tests") == [1.0]
    with pytest.raises(ValueError, match="'tests'"):
        code_tests(prompts=["p"], completions=["x = 1"], completion_ids=[[0]])


def test_trl_conversational_completions_are_read_from_their_messages():
    completion = [{"role": "assistant", "content": "```python\ndef f(x):\n    return x * x\n```"}]
    assert code_tests(prompts=[[{"role": "user", "content": "square"}]], completions=[completion],
                      completion_ids=[[0]], tests=[["assert f(3) == 9"]]) == [1.0]


@pytest.mark.parametrize("code,tests,expected", [
    ("class Solution:\n    def two_sum(self, xs, t):\n        return [0, 1]",
     ["assert Solution().two_sum([2, 7], 9) == [0, 1]"], 1.0),  # LeetCode style: an object method, remotely
    ("def f(n):\n    yield from range(n)", ["assert list(f(3)) == [0, 1, 2]"], 1.0),
    ("def f():\n    return (1, 2)", ["assert f() == (1, 2)", "assert f() != [1, 2]"], 1.0),
    ("def f(x):\n    raise ValueError('negative')", ["try:\n    f(-1)\n    raise AssertionError\nexcept ValueError:\n"
                                                     "    pass"], 1.0),
    ("def f():\n    return {'a': {1, 2}, 'b': b'x', 'c': 1.5j}", ["assert f() == {'a': {1, 2}, 'b': b'x', 'c': 1.5j}"],
     1.0),
    ("import math\ndef f(x):\n    return math.sqrt(x)", ["assert abs(f(2) - 2 ** 0.5) < 1e-12"], 1.0),
    ("def candidate(x):\n    return x + 1",
     ["def check(c):\n    assert c(1) == 2\n    assert c(5) == 6\ncheck(candidate)"], 1.0),  # HumanEval's check
    ("class Node:\n    def __init__(self, v, nxt=None):\n        self.v, self.nxt = v, nxt\n"
     "def rev(h):\n    p = None\n    while h:\n        h.nxt, p, h = p, h, h.nxt\n    return p",
     ["h = Node(1, Node(2, Node(3)))\nr = rev(h)\nout = []\nwhile r is not None:\n    out.append(r.v)\n"
      "    r = r.nxt\nassert out == [3, 2, 1]"], 1.0),  # objects built by the test from the solution's class
], ids=["leetcode-class", "generator", "tuple", "raises", "containers", "module", "humaneval", "linked-list"])
def test_assert_tests_work_on_remote_values(code, tests, expected):
    assert _score(code, tests) == expected


def test_call_based_tests_apps_style():
    tests = {"fn_name": "add", "inputs": [[1, 2], [3, 4], [[1], [2]]], "outputs": [[3], 7, [[1, 2]]]}
    assert _score("def add(a, b):\n    return a + b", tests) == 1.0
    assert _score("def add(a, b):\n    return 3", tests) == pytest.approx(1 / 3)
    assert _score("def plus(a, b):\n    return a + b", tests) == 0.0  # the named function is missing


def test_stdin_stdout_tests():
    program = "n = int(input())\nprint(n * n)\nprint('done')   "
    tests = {"inputs": ["2\n", "3\n"], "outputs": ["4\ndone\n", "9\ndone"]}
    assert _score(program, tests) == 1.0
    assert _score(program.replace("n * n", "n + n"), tests) == 0.5
    records = [{"input": "2\n", "output": "4\ndone"}, {"input": "3\n", "output": "10\ndone"}]
    assert _score(program, records) == 0.5
    assert _score(program, '{"inputs": ["2\\n"], "outputs": ["4\\ndone\\n"]}') == 1.0  # APPS stores JSON text
    crash = "n = int(input())\nprint(n * n)\nprint('done')\nraise SystemExit(3)"
    assert _score(crash, tests) == 0.0  # right output, but the program failed
    floats = {"inputs": [""], "outputs": ["0.3333333"]}
    assert _score("print(1 / 3)", floats) == 0.0
    assert _score("print(1 / 3)", floats, float_tol=1e-6) == 1.0
    assert _score("print(' 1  2 ')", {"inputs": [""], "outputs": ["1 2"]}, io_compare="tokens") == 1.0


def test_extract_code_prefers_the_last_python_block():
    completion = "```python\nold\n```\ntext\n```python\nnew\n```\n```\nplain\n```\n```bash\nrun\n```"
    assert extract_code(completion) == "new\n"
    assert extract_code("```\nplain\n```\n```bash\nrun\n```") == "plain\n"
    assert extract_code("x = 1") == "x = 1"


def test_time_limit_kills_the_processes_and_keeps_earlier_passes():
    start = time.monotonic()
    assert _score("def f():\n    return 1\nwhile True:\n    pass", ["assert f() == 1"], timeout_s=1) == 0.0
    slow = "def f():\n    return 1\ndef hang():\n    while True:\n        pass"
    assert _score(slow, ["assert f() == 1", "hang()"], timeout_s=1) == 0.5
    assert _score("while True:\n    pass", {"inputs": ["1"], "outputs": ["1"]}, timeout_s=1) == 0.0
    assert time.monotonic() - start < 15


def test_memory_and_output_limits():
    assert _score("def f():\n    return len(bytearray(2 * 1024 ** 3))", ["assert f() > 0"], memory_mb=256) == 0.0
    assert _score("def f():\n    return len(bytearray(16 * 1024 ** 2))", ["assert f() > 0"], memory_mb=256) == 1.0
    # an answer too large for the pipe protocol (16 MiB) fails its test; the judge goes on with the others
    assert _score("def f():\n    return 'x' * (40 * 1024 ** 2)", ["assert len(f()) > 0", "assert 1 + 1 == 2"],
                  memory_mb=1024) == 0.5
    assert _score("def f():\n    return 'x' * 1000", ["assert len(f()) == 1000"]) == 1.0


def test_identical_completions_are_run_once_and_scored_alike():
    body = "```python\nimport random\ndef f():\n    return random.random()\n```"
    values = code_tests(prompts=["p"] * 4, completions=[body] * 4, completion_ids=[[0]] * 4,
                        tests=[["assert f() < 0.5"]] * 4)
    assert len(set(values)) == 1


def test_weak_sandbox_is_refused_unless_allowed(monkeypatch):
    weak = sandbox.SandboxInfo(False, "weak: bubblewrap (bwrap) is not installed")
    monkeypatch.setattr(sandbox, "detect", lambda *args: weak)
    with pytest.raises(WeakSandboxError, match="allow_weak_sandbox=true"):
        _score("def f():\n    return 1", ["assert f() == 1"])
    with pytest.raises(WeakSandboxError, match="not installed"):
        check_code_tests({"tests": [["assert f() == 1"]]})
    assert sandbox_health() == {"sandbox_weak": 1.0}
    # allowed: the same judge/solution split runs without namespaces (limits, audit hook, network namespace)
    assert _score("def f():\n    return 1", ["assert f() == 1"], allow_weak_sandbox=True) == 1.0
    assert _score("def f():\n    return 2", ["assert f() == 1"], allow_weak_sandbox=True) == 0.0
    note = check_code_tests({"tests": [["assert f() == 1"]]}, allow_weak_sandbox=True)
    assert note.startswith("WARNING") and "sandbox weak: bubblewrap" in note


def test_sandbox_health_reports_strong_here():
    assert sandbox_health() == {"sandbox_weak": 0.0}


def test_a_python_installation_under_tmp_is_visible_in_the_sandbox(tmp_path):
    # the sandbox's own /tmp is a tmpfs: an environment living under the host's /tmp (a CI checkout there) must be
    # bound on top of it, not hidden by it
    import subprocess
    import sys
    from pathlib import Path

    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
    repo = Path(__file__).resolve().parents[2]
    code = (f"import sys; sys.path.insert(0, {str(repo)!r}); from rewards import sandbox; "
            "info = sandbox.detect(); print(info.strong, info.detail)")
    out = subprocess.run([str(env / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=120)
    assert str(tmp_path).startswith("/tmp/") and out.stdout.startswith("True"), out.stdout + out.stderr
