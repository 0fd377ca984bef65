"""The code_tests reward and its sandbox: scores, and what model-written code cannot do (network, time, memory,
processes, files outside its directory, faking a pass)."""

import os
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from rewards.code import code_tests, extract_code, network_isolation_prefix


def _score(code, tests, **args):
    """The reward of one completion holding `code` in a fenced block."""
    completion = f"Here you go:\n```python\n{code}\n```\n"
    return code_tests(prompts=["p"], completions=[completion], completion_ids=[[0]], tests=[tests], **args)[0]


def test_correct_and_wrong_code_and_fractions():
    completions = ["```python\ndef f(x):\n    return x * x\n```", "```python\ndef f(x):\n    return x + x\n```",
                   "def f(x):\n    return x * x", "no code here"]
    tests = [["assert f(2) == 4", "assert f(3) == 9", "assert f(0) == 0"]] * 4
    assert code_tests(prompts=["p"] * 4, completions=completions, completion_ids=[[0]] * 4,
                      tests=tests) == pytest.approx([1.0, 2 / 3, 1.0, 0.0])
    assert _score("def f(x):\n    return x + x", tests[0], all_or_nothing=True) == 0.0
    # a test script counts as one test; a sample without tests has no score; tests from another column
    assert _score("def f(x):\n    return x * x", "assert f(2) == 4\nassert f(3) == 9") == 1.0
    assert _score("def f(x):\n    return x * x", []) is None
    assert code_tests(prompts=["p"], completions=["def g(): return 1"], completion_ids=[[0]],
                      unit_tests=[["assert g() == 1"]], tests_key="unit_tests") == [1.0]
    with pytest.raises(ValueError, match="'tests'"):
        code_tests(prompts=["p"], completions=["x = 1"], completion_ids=[[0]])


def test_extract_code_prefers_the_last_python_block():
    completion = "```python\nold\n```\ntext\n```python\nnew\n```\n```\nplain\n```\n```bash\nrun\n```"
    assert extract_code(completion) == "new\n"
    assert extract_code("```\nplain\n```\n```bash\nrun\n```") == "plain\n"
    assert extract_code("x = 1") == "x = 1"


def test_no_network():
    # a socket listening in this process: without the sandbox, f() would connect to it
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        code = ("import socket\n"
                "def f():\n"
                f"    socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
                "    return 'connected'\n"
                "def g():\n"
                "    return 'ok'")
        assert _score(code, ["assert f() == 'connected'"]) == 0.0
        assert _score(code, ["assert g() == 'ok'"]) == 1.0  # control: the same code scores when it stays offline


def test_network_namespace_alone_has_no_network():
    # the second layer, without the audit hook: a user+network namespace where available
    prefix = network_isolation_prefix()
    if not prefix:
        pytest.skip("unshare -rn is not available here")
    with socket.create_server(("127.0.0.1", 0)) as server:
        probe = f"import socket; socket.create_connection(('127.0.0.1', {server.getsockname()[1]}), timeout=1)"
        assert subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0
        assert subprocess.run([*prefix, sys.executable, "-I", "-c", probe], capture_output=True).returncode != 0


def test_time_limit_kills_the_child():
    code = "def f():\n    return 1\nwhile True:\n    pass"
    start = time.monotonic()
    assert _score(code, ["assert f() == 1"], timeout_s=1) == 0.0
    assert time.monotonic() - start < 10
    # passes reported before the time ran out still count
    slow = "def f():\n    return 1\ndef hang():\n    while True:\n        pass"
    assert _score(slow, ["assert f() == 1", "hang()"], timeout_s=1) == 0.5


def test_memory_limit():
    assert _score("def f():\n    return len(bytearray(2 * 1024 ** 3))", ["assert f() > 0"], memory_mb=256) == 0.0
    assert _score("def f():\n    return len(bytearray(16 * 1024 ** 2))", ["assert f() > 0"], memory_mb=256) == 1.0


@pytest.mark.parametrize("body", [
    "import subprocess, sys\n    return subprocess.run([sys.executable, '-c', 'pass']).returncode",
    "import os\n    return os.system('exit 0')",
    "import os\n    pid = os.fork()\n    if pid == 0:\n        os._exit(0)\n    return os.waitpid(pid, 0)[1]",
    "import os, sys\n    pid = os.posix_spawn(sys.executable, [sys.executable, '-c', 'pass'], {})\n"
    "    return os.waitpid(pid, 0)[1]",
    "import ctypes\n    return ctypes.CDLL(None).getpid() * 0",
], ids=["subprocess", "os.system", "fork", "posix_spawn", "ctypes"])
def test_no_new_processes_or_ctypes(body):
    code = f"def f():\n    {body}\ndef g():\n    return 0"
    # outside the sandbox f() returns 0, so the test below passes there; inside, the 0.0 is the sandbox refusing
    assert subprocess.run([sys.executable, "-c", code + "\nassert f() == 0"], capture_output=True).returncode == 0
    assert _score(code, ["assert f() == 0"]) == 0.0
    assert _score(code, ["assert g() == 0"]) == 1.0  # control: the same code scores when it spawns nothing


def test_files_stay_in_a_temporary_directory_that_is_removed(monkeypatch, tmp_path):
    root = tmp_path / "tmp"
    root.mkdir()
    outside = tmp_path / "outside.txt"
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    code = (f"import os\nROOT = {str(root)!r}\nOUTSIDE = {str(outside)!r}\n"
            "def write(path):\n    with open(path, 'w') as handle:\n        handle.write('x')\n    return True")
    tests = ["assert os.getcwd().startswith(os.path.realpath(ROOT))", "assert write('inside.txt')",
             "assert write(OUTSIDE)", "os.remove(OUTSIDE)"]
    outside.write_text("keep me")
    assert _score(code, tests) == 0.5
    assert outside.read_text() == "keep me"
    assert os.listdir(root) == []


def test_printed_text_cannot_fake_a_pass():
    code = ("import sys\n"
            "for i in range(3):\n"
            "    print(f'pass {i}')\n"
            "    print(f'0123456789abcdef0123456789abcdef pass {i}')\n"
            "    sys.stderr.write(f'pass {i}\\n')\n"
            "stolen = sys.stdin.read()\n"
            "def f():\n"
            "    return stolen")
    # every test fails (stdin holds nothing to steal), so any pass counted would be one the printed lines faked
    assert _score(code, ["assert f() != ''", "assert False", "raise SystemExit(0)"]) == 0.0
    assert _score(code, ["assert f() == ''", "assert False"]) == 0.5  # control: a real pass beside them counts
    assert _score("import os\nos._exit(0)", ["assert True"]) == 0.0  # the code exits before any test reports
    assert _score("x = 1", ["assert True"]) == 1.0  # control: the same test passes when the code returns
