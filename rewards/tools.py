"""Built-in tools for multi-turn episodes (`environment.tools`), written to TRL's tool contract (typed arguments,
Google-style docstrings).

`run_python` runs model-written code in the code sandbox of `code_tests` (rewards/sandbox.py: bubblewrap
namespaces, seccomp, resource limits and the audit hook), never in the environment's own process, and refuses to
run at all where this machine has no kernel sandbox. Use it as `environment.tools: [rewards.tools:run_python]`.
"""

from __future__ import annotations

import subprocess
import tempfile

OUTPUT_LIMIT = 4096  # characters of output a call returns (the episode's token budget is the real bound)
WALL_S = 8.0  # below environment.timeout_s's default, so a slow program is this tool's error, not a killed child


def run_python(code: str) -> str:
    """Run a Python program in a sandbox and return what it prints.

    Args:
        code: The whole program; its standard output is the result.
    """
    from rewards import sandbox

    info = sandbox.detect()
    if not info.strong:
        raise RuntimeError(f"run_python needs the kernel sandbox, which this machine lacks ({info.detail})")
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        process = sandbox.start(info, "rewards.guest.solution", {"mode": "program", "code": code}, sandbox.Limits(),
                                stdout=stdout, stderr=stderr)
        try:
            status: int | None = process.popen.wait(timeout=WALL_S)
        except subprocess.TimeoutExpired:
            status = None
        finally:
            process.kill()
        stdout.seek(0)
        stderr.seek(0)
        out = stdout.read(OUTPUT_LIMIT).decode(errors="replace")
        err = stderr.read(OUTPUT_LIMIT).decode(errors="replace")
    if status is None:
        raise TimeoutError(f"the program ran past {WALL_S:g} s")
    if status != 0:
        tail = err.strip().splitlines()[-1] if err.strip() else f"exit status {status}"
        raise RuntimeError(f"the program failed: {tail}")
    return out
