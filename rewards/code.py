"""Code reward: run the completion's code against the sample's tests in a sandboxed child process.

Each completion runs in a fresh `python -I -B` child (this interpreter) with its own temporary working directory,
deleted afterwards, an empty environment, and a wall-clock limit enforced by killing the child. Inside, before any
model-written code runs, a small runner
- sets resource limits: CPU seconds, address space (`memory_mb`), file size (16 MB), process count (only where the
  kernel enforces it for this user: not for root);
- installs an audit hook (`sys.addaudithook`, irremovable) that refuses sockets, subprocesses, exec/spawn/fork,
  os.system, os.kill, every ctypes operation (dlopen, foreign calls, raw memory), and writes or deletions outside
  its directory. `import ctypes` itself succeeds: the runner loads it before the hook, because numpy and other
  libraries import it at load time; only its use is refused.
Where unprivileged user namespaces work, the child also runs under `unshare -rn`: a network namespace with no
interface up, so even code that slips past the hook has no network (probed once per process; skipped silently
where unavailable, e.g. some CI containers).

Results come back as lines prefixed with a random nonce the runner reads from stdin before the code runs, so text
the code prints cannot fake a pass; each test reports as it finishes, so a later timeout keeps earlier passes.

This is defence in depth for *model-written* code, whose failures are accidents (an infinite loop, a memory blow-up,
`rm` of the wrong path, a stray download), not a security boundary against hostile code: Python-level
introspection can reach the runner's state, and there is no filesystem isolation for reads. For untrusted code or
at scale, run the reward workers in containers or gVisor/Firecracker sandboxes.
Leaves out: stdin/stdout-style programs (competitive programming) and per-test time limits.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rewards.protocol import reward

_FENCE = re.compile(r"```([\w+-]*)[ \t]*\n(.*?)```", re.DOTALL)
_PYTHON_TAGS = ("python", "py", "python3")
_FILE_LIMIT_BYTES = 16 * 1024 * 1024
_MAX_PROCS = 32
_OUTPUT_TAIL_BYTES = 1024 * 1024

# The runner: read the payload, redirect stdin, set limits, install the audit hook, run the code, then each test.
_RUNNER = r"""
import builtins, json, os, resource, sys

def _main():
    payload = json.loads(sys.stdin.buffer.read())
    nonce, code, tests, limits = payload["nonce"], payload["code"], payload["tests"], payload["limits"]
    del payload
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    out = os.dup(1)
    for name, value in limits.items():
        try:
            resource.setrlimit(getattr(resource, name), (value, value))
        except (ValueError, OSError):
            pass
    import _posixsubprocess
    import ctypes  # before the hook: numpy & co. import it at load time; every ctypes call is refused below

    def denied(*args, **kwargs):
        raise PermissionError("sandbox: new processes are not allowed")

    _posixsubprocess.fork_exec = denied
    sys.addaudithook(_make_hook(os.path.realpath(os.getcwd())))

    def report(message):
        sys.stdout.flush()
        os.write(out, ("\n" + nonce + " " + message + "\n").encode())

    scope = {"__name__": "__main__", "__builtins__": builtins}
    try:
        exec(compile(code, "<solution>", "exec"), scope)
    except BaseException:
        report("code-error")
        os._exit(0)
    for index, test in enumerate(tests):
        try:
            exec(compile(test, f"<test {index}>", "exec"), scope)
        except BaseException:
            continue
        report(f"pass {index}")
    os._exit(0)

def _make_hook(root):
    import os
    denied = ("socket.", "subprocess.Popen", "os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork",
              "os.kill", "os.killpg", "signal.pthread_kill", "ctypes.")
    path_events = ("os.remove", "os.rmdir", "os.rename", "shutil.rmtree", "os.mkdir", "os.chmod", "os.chown",
                   "os.truncate", "os.symlink", "os.link", "os.utime")
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    realpath, sep = os.path.realpath, os.sep

    def outside(path):
        if isinstance(path, int):
            return False
        resolved = realpath(os.fsdecode(path))
        return resolved not in (root, os.devnull) and not resolved.startswith(root + sep)

    def hook(event, args):
        if event.startswith(denied):
            raise PermissionError(f"sandbox: {event} is not allowed")
        writing = event == "open" and isinstance(args[2], int) and args[2] & writes
        if (writing or event in path_events and args) and outside(args[0]):
            raise PermissionError(f"sandbox: {event} outside the working directory is not allowed")

    return hook

_main()
"""


def extract_code(completion: str) -> str:
    """The last ```python fenced block, else the last untagged ``` block, else the whole completion."""
    blocks = _FENCE.findall(completion)
    for wanted in (_PYTHON_TAGS, ("",)):
        tagged = [body for tag, body in blocks if tag.lower() in wanted]
        if tagged:
            return tagged[-1]
    return completion


@functools.lru_cache(maxsize=1)
def network_isolation_prefix() -> tuple[str, ...]:
    """`unshare -rn` (new user and network namespaces, no network) when it works here, else nothing."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return ()
    prefix = (unshare, "-rn")
    try:
        probe = subprocess.run([*prefix, sys.executable, "-I", "-c", "pass"], capture_output=True, timeout=10,
                               env={})
    except (OSError, subprocess.SubprocessError):
        return ()
    return prefix if probe.returncode == 0 else ()


def run_tests(code: str, tests: Sequence[str], timeout_s: float = 5.0, memory_mb: int = 512) -> list[bool]:
    """Run `code` then each test (a statement or script) in one sandboxed child; whether each test passed.

    A test passes when it runs without raising after the code ran. A timeout, crash or error in the code itself
    fails every test that had not reported a pass.
    """
    nonce = secrets.token_hex(16)
    limits = {"RLIMIT_CPU": math.ceil(timeout_s) + 1, "RLIMIT_AS": memory_mb * 1024 * 1024,
              "RLIMIT_FSIZE": _FILE_LIMIT_BYTES, "RLIMIT_NPROC": _MAX_PROCS}
    payload = json.dumps({"nonce": nonce, "code": code, "tests": list(tests), "limits": limits}).encode()
    command = [*network_isolation_prefix(), sys.executable, "-I", "-B", "-c", _RUNNER]
    with tempfile.TemporaryDirectory(prefix="rlpost-code-") as workdir, tempfile.TemporaryFile() as output:
        env = {"HOME": workdir, "TMPDIR": workdir, "LC_ALL": "C.UTF-8"}
        try:
            subprocess.run(command, input=payload, stdout=output, stderr=subprocess.DEVNULL, cwd=workdir, env=env,
                           timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            pass  # run() killed the child; the passes it reported so far still count
        output.seek(max(0, output.seek(0, os.SEEK_END) - _OUTPUT_TAIL_BYTES))
        lines = output.read().decode(errors="replace").splitlines()
    passed = {line.split()[-1] for line in lines if line.startswith(f"{nonce} pass ")}
    return [str(i) in passed for i in range(len(tests))]


@reward(batch_size=8)  # at most 8 x timeout_s / parallel per call: well inside reward.timeout_s
def code_tests(prompts: Sequence[str], completions: Sequence[str], completion_ids: Sequence[Any],
               tests_key: str = "tests", all_or_nothing: bool = False, timeout_s: float = 5.0,
               memory_mb: int = 512, parallel: int = 4, **columns: Any) -> list[float | None]:
    """Fraction of the sample's tests the completion's code passes, run in a sandbox (see the module docstring).

    Code: `extract_code(completion)`. Tests: the dataset column `tests_key`, per sample either a string (one test
    script run after the code, counting as one test) or a list of strings (independent test statements, e.g.
    `assert f(2) == 4`). `all_or_nothing` scores 1 only when every test passes. A sample without tests gets None.
    `timeout_s` and `memory_mb` limit each completion's child; `parallel` children run at once.
    """
    if tests_key not in columns:
        raise ValueError(f"code_tests: no dataset column {tests_key!r} (set reward.args tests_key to the column "
                         "holding the tests)")
    suites = [[t] if isinstance(t, str) else [] if t is None else list(t) for t in columns[tests_key]]
    if len(suites) != len(completions):
        raise ValueError(f"code_tests: {len(suites)} {tests_key!r} entries for {len(completions)} completions")

    def score(code: str, suite: list[str]) -> float | None:
        if not suite:
            return None
        results = run_tests(code, suite, timeout_s=timeout_s, memory_mb=memory_mb)
        return float(all(results)) if all_or_nothing else sum(results) / len(results)

    codes = [extract_code(c) for c in completions]
    network_isolation_prefix()  # probe once, before the threads
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(codes)))) as pool:
        return list(pool.map(score, codes, suites))
