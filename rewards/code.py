"""Code reward: the completion's code against the row's tests, judged outside the process that runs it.

Verdicts cannot be forged by the code under test, because the expected values never enter its process:
- assert-style and call-based tests (rewards/guest/judge.py): the code runs in a *solution* process; the tests run
  in a separate *judge* process that asks the solution process for the values it needs (calls, attributes, items)
  and gets them back as plain data (rewards/guest/plain.py), then compares them itself. Patching builtins, walking
  frames, objects whose `__eq__` is always True or printing fake results change nothing the judge trusts. One
  solution process per completion, its tests fed one at a time (state carries between tests, as when they run in
  one module); one judge per completion.
- stdin/stdout tests: one process per test runs the program on the input; the parent compares its stdout.
Both kinds of process run in the kernel-level sandbox of rewards/sandbox.py (bubblewrap namespaces, read-only view,
seccomp), with CPU, memory, file-size and open-file limits and a wall-clock deadline per completion. Without a
working bubblewrap the reward refuses to run unless `allow_weak_sandbox=true` (limits, an audit hook and a network
namespace only); `rlpost validate` and the start of `rlpost train` say which sandbox this machine has, and every step
logs `reward_health/sandbox_weak`.

Identical completions of one call are run once. Leaves out: languages other than Python, special judges (outputs
with several right answers, beyond a float tolerance), per-test time limits (the deadline is per completion).
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rewards import sandbox
from rewards.code_formats import Suite, parse_tests, same_output
from rewards.protocol import completion_text, reward

_FENCE = re.compile(r"```([\w+-]*)[ \t]*\n(.*?)```", re.DOTALL)
_PYTHON_TAGS = ("python", "py", "python3")
_OUTPUT_LIMIT = 16 * 1024 * 1024


class WeakSandboxError(RuntimeError):
    """code_tests asked to run model code on a machine without kernel-level isolation."""


def extract_code(completion: str) -> str:
    """The last ```python fenced block, else the last untagged ``` block, else the whole completion."""
    blocks = _FENCE.findall(completion)
    for wanted in (_PYTHON_TAGS, ("",)):
        tagged = [body for tag, body in blocks if tag.lower() in wanted]
        if tagged:
            return tagged[-1]
    return completion


def require_sandbox(allow_weak_sandbox: bool) -> sandbox.SandboxInfo:
    """This machine's sandbox; WeakSandboxError when it is weak and weak was not allowed."""
    info = sandbox.detect()
    if not info.strong and not allow_weak_sandbox:
        raise WeakSandboxError(f"code_tests runs model-written code and needs a kernel-level sandbox, but this machine "
                               f"has none: {info.detail}. Install bubblewrap, or set "
                               "reward.args.code_tests.allow_weak_sandbox=true to run with resource limits and an "
                               "audit hook only (not a boundary against code that attacks it)")
    return info


def run_suite(code: str, suite: Suite, info: sandbox.SandboxInfo, timeout_s: float = 5.0, memory_mb: int = 512,
              io_compare: str = "lines", float_tol: float = 0.0, stop_on_failure: bool = False) -> list[bool]:
    """Whether `code` passes each test of `suite`, within `timeout_s` of wall clock for the whole suite."""
    deadline = time.monotonic() + timeout_s
    limits = sandbox.Limits(cpu_s=int(timeout_s) + 1, memory_mb=memory_mb)
    if suite.kind == "stdio":
        return _run_programs(code, suite, info, limits, deadline, io_compare, float_tol, stop_on_failure)
    return _run_judged(code, suite, info, limits, deadline, stop_on_failure)


def _run_programs(code: str, suite: Suite, info: sandbox.SandboxInfo, limits: sandbox.Limits, deadline: float,
                  io_compare: str, float_tol: float, stop_on_failure: bool) -> list[bool]:
    results = [False] * len(suite)
    for index, (given, expected) in enumerate(suite.items):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as stdout:
            stdin.write(given.encode())
            stdin.seek(0)
            process = sandbox.start(info, "rewards.guest.solution", {"mode": "program", "code": code}, limits,
                                    stdin=stdin, stdout=stdout)
            try:
                finished = process.popen.wait(timeout=remaining) == 0
            except subprocess.TimeoutExpired:
                finished = False
            finally:
                process.kill()
            stdout.seek(0)
            output = stdout.read(_OUTPUT_LIMIT).decode(errors="replace")
        results[index] = finished and same_output(output, expected, io_compare, float_tol)
        if stop_on_failure and not results[index]:
            break
    return results


def _run_judged(code: str, suite: Suite, info: sandbox.SandboxInfo, limits: sandbox.Limits, deadline: float,
                stop_on_failure: bool) -> list[bool]:
    requests_r, requests_w = os.pipe()
    replies_r, replies_w = os.pipe()
    verdicts_r, verdicts_w = os.pipe()
    open_fds = {requests_r, requests_w, replies_r, replies_w, verdicts_r, verdicts_w}
    processes = []
    try:
        processes.append(sandbox.start(info, "rewards.guest.solution", {
            "mode": "serve", "code": code, "requests_fd": requests_r, "replies_fd": replies_w}, limits,
            pass_fds=(requests_r, replies_w)))
        processes.append(sandbox.start(info, "rewards.guest.judge", {
            "tests": list(suite.items), "requests_fd": requests_w, "replies_fd": replies_r,
            "verdicts_fd": verdicts_w}, limits, pass_fds=(requests_w, replies_r, verdicts_w)))
        for fd in (requests_r, requests_w, replies_r, replies_w, verdicts_w):  # EOFs must reach the other side
            os.close(fd)
            open_fds.discard(fd)
        return _read_verdicts(verdicts_r, len(suite), deadline, stop_on_failure)
    finally:
        for process in processes:
            process.kill()
        for fd in open_fds:
            os.close(fd)


def _read_verdicts(fd: int, count: int, deadline: float, stop_on_failure: bool) -> list[bool]:
    """`pass N` / `fail N ...` lines from the judge until it ends, the deadline passes or (optionally) a failure."""
    results, buffer = [False] * count, b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            return results
        chunk = os.read(fd, 65536)
        if not chunk:
            return results
        *lines, buffer = (buffer + chunk).split(b"\n")
        for line in lines:
            verdict, _, rest = line.decode(errors="replace").partition(" ")
            index = int(rest.split(" ", 1)[0])
            if 0 <= index < count:
                results[index] = verdict == "pass"
            if stop_on_failure and verdict != "pass":
                return results


def check_code_tests(columns: Mapping[str, Sequence[Any]], tests_key: str = "tests",
                     allow_weak_sandbox: bool = False, **_: Any) -> str:
    """Before training: every row's tests parse (rows with none are allowed: they get no score), and this machine
    has a sandbox code_tests may use. Returns the line `rlpost validate` prints."""
    if tests_key not in columns:
        raise ValueError(f"the data has no column {tests_key!r} (set reward.args.code_tests.tests_key to the column "
                         f"holding the tests); columns: {sorted(columns)}")
    kinds: dict[str, int] = {}
    for row, value in enumerate(columns[tests_key]):
        try:
            suite = parse_tests(value)
        except ValueError as err:
            raise ValueError(f"row {row}, column {tests_key!r}: {err}") from None
        label = "no tests" if suite is None else suite.label
        kinds[label] = kinds.get(label, 0) + 1
    info = require_sandbox(allow_weak_sandbox)
    counts = ", ".join(f"{n} {label}" for label, n in sorted(kinds.items()))
    if not info.strong:
        return (f"WARNING: code_tests will run model code WITHOUT kernel isolation (allow_weak_sandbox=true; "
                f"reward_health/sandbox_weak=1): sandbox {info.detail}; rows {counts}")
    return f"code_tests: rows {counts}; sandbox {info.detail}"


def sandbox_health(**_: Any) -> dict[str, float]:
    """Logged every step as reward_health/sandbox_weak: 1 when code runs without kernel isolation."""
    return {"sandbox_weak": 0.0 if sandbox.detect().strong else 1.0}


# at most 8 x timeout_s / parallel per call: well inside reward.timeout_s
@reward(batch_size=8, check=check_code_tests, health=sandbox_health)
def code_tests(prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Sequence[Any],
               tests_key: str = "tests", all_or_nothing: bool = False, timeout_s: float = 5.0,
               memory_mb: int = 512, parallel: int = 4, allow_weak_sandbox: bool = False, io_compare: str = "lines",
               float_tol: float = 0.0, **columns: Any) -> list[float | None]:
    """Fraction of the row's tests the completion's code passes (see the module docstring for how it is judged).

    Code: `extract_code` of the completion. Tests: the dataset column `tests_key` (formats: rewards/code_formats.py);
    a row without tests (None) gets None. `all_or_nothing` scores 1 only when every test passes (and stops at the
    first failure). `timeout_s` is the wall clock for one completion's tests, `memory_mb` each process's address
    space; `parallel` completions run at once. stdin/stdout tests compare output by `io_compare` ('lines' or
    'tokens') with `float_tol`.
    """
    info = require_sandbox(allow_weak_sandbox)
    if tests_key not in columns:
        raise ValueError(f"code_tests: no dataset column {tests_key!r} (set reward.args tests_key to the column "
                         "holding the tests)")
    if io_compare not in ("lines", "tokens"):
        raise ValueError(f"code_tests: io_compare must be 'lines' or 'tokens', got {io_compare!r}")
    suites = [parse_tests(value) for value in columns[tests_key]]
    if len(suites) != len(completions):
        raise ValueError(f"code_tests: {len(suites)} {tests_key!r} entries for {len(completions)} completions")
    # one key per completion: its code and the first sample with the same tests (a prompt's samples share them)
    keys = [(extract_code(completion_text(c)), _first_equal(suites, i)) for i, c in enumerate(completions)]

    def score(key: tuple[str, int]) -> float | None:
        code, i = key
        suite = suites[i]
        if suite is None:
            return None
        results = run_suite(code, suite, info, timeout_s, memory_mb, io_compare, float_tol, all_or_nothing)
        return float(all(results)) if all_or_nothing else sum(results) / len(results)

    unique = list(dict.fromkeys(keys))
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(unique)))) as pool:
        scores = dict(zip(unique, pool.map(score, unique)))
    return [scores[key] for key in keys]


def _first_equal(suites: list[Suite | None], i: int) -> int:
    """The first index whose suite equals suite i (samples of one prompt share their tests)."""
    for j in range(i + 1):
        if suites[j] == suites[i]:
            return j
    return i
