"""The code-running tool (rewards/tools.py) goes through the code sandbox: what a program prints comes back, a
failure is an error the episode counts, and the sandbox's isolation holds (no network, no project files)."""

from __future__ import annotations

import pytest

from rewards import sandbox
from rewards.tools import run_python

STRONG = sandbox.detect().strong


@pytest.mark.skipif(not STRONG, reason="needs bubblewrap (scripts/_env.sh installs it); the weak case is tested below")
def test_run_python_returns_what_the_program_prints_inside_the_sandbox(tmp_path):
    assert run_python("print(sum(int(c) for c in '35271'))") == "18\n"
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        run_python("1 / 0")
    secret = tmp_path / "secret.txt"
    secret.write_text("host data")
    with pytest.raises(RuntimeError):
        run_python(f"print(open({str(secret)!r}).read())")  # the host's files are not there
    with pytest.raises(RuntimeError):
        run_python("import socket; socket.create_connection(('1.1.1.1', 53), timeout=2)")


@pytest.mark.skipif(not STRONG, reason="needs bubblewrap")
def test_run_python_stops_a_program_that_runs_too_long(monkeypatch):
    import rewards.tools

    monkeypatch.setattr(rewards.tools, "WALL_S", 1.0)
    with pytest.raises(TimeoutError):
        run_python("while True: pass")


def test_run_python_refuses_without_a_kernel_sandbox(monkeypatch):
    monkeypatch.setattr(sandbox, "detect", lambda: sandbox.SandboxInfo(False, "no bwrap here"))
    with pytest.raises(RuntimeError, match="no bwrap here"):
        run_python("print(1)")
