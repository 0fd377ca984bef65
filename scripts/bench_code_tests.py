"""What `code_tests` costs per completion, against running the same code unisolated.

Distinct completions (half right) of an MBPP-style function, judged three ways in this process:
1. baseline: one bare `python -c` child per completion that runs the code and then its asserts in one interpreter
   (no sandbox, no judge: the cheapest way to run model code outside the scorer's process);
2. `code_tests` on assert tests (a solution process and a judge process per completion, both sandboxed);
3. `code_tests` on stdin/stdout tests (one sandboxed process per test);
4. with `--before REV`: the `code_tests` of an earlier commit (e.g. b1b9c2e, before the judge and bubblewrap) on the
   same assert tests, loaded from git.
Prints milliseconds per completion and the ratio to the baseline, with `parallel` completions at once. Usage:
    python scripts/bench_code_tests.py [--completions 64] [--tests 3] [--parallel 4] [--before REV] [--allow-weak]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rewards.code import code_tests  # noqa: E402
from rewards.sandbox import detect  # noqa: E402


def solutions(n: int) -> list[str]:
    """n distinct function bodies; even ones square (right), odd ones double (wrong past 2)."""
    return [f"def f(x):\n    # variant {i}\n    return x * x" if i % 2 == 0 else
            f"def f(x):\n    # variant {i}\n    return x + x" for i in range(n)]


def programs(n: int) -> list[str]:
    return [f"# variant {i}\nx = int(input())\nprint(x * x if {i % 2} == 0 else x + x)" for i in range(n)]


def baseline(codes: list[str], asserts: list[str], parallel: int) -> float:
    def run(code: str) -> int:
        script = code + "\n" + "\n".join(asserts)
        return subprocess.run([sys.executable, "-I", "-S", "-c", script], capture_output=True).returncode

    start = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(run, codes))
    return time.perf_counter() - start


def scored(codes: list[str], tests: object, parallel: int, allow_weak: bool, fn=code_tests) -> tuple[float, float]:
    completions = [f"```python\n{code}\n```" for code in codes]
    extra = {"allow_weak_sandbox": allow_weak} if fn is code_tests else {}
    start = time.perf_counter()
    values = fn(prompts=["p"] * len(codes), completions=completions, completion_ids=[[0]] * len(codes),
                tests=[tests] * len(codes), parallel=parallel, **extra)
    return time.perf_counter() - start, sum(values) / len(values)


def earlier_code_tests(rev: str):
    """`code_tests` as rewards/code.py had it at git revision `rev`."""
    source = subprocess.run(["git", "show", f"{rev}:rewards/code.py"], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parent.parent).stdout
    path = Path(tempfile.mkdtemp()) / "code_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("code_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.code_tests


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--completions", type=int, default=64)
    parser.add_argument("--tests", type=int, default=3, help="tests per completion")
    parser.add_argument("--parallel", type=int, default=4, help="completions judged at once")
    parser.add_argument("--before", default="", help="also time code_tests as of this git revision")
    parser.add_argument("--allow-weak", action="store_true", help="run without bubblewrap (weak sandbox)")
    args = parser.parse_args(argv)
    n, k = args.completions, args.tests
    asserts = [f"assert f({j}) == {j * j}" for j in range(2, 2 + k)]
    stdio = {"inputs": [f"{j}\n" for j in range(2, 2 + k)], "outputs": [f"{j * j}\n" for j in range(2, 2 + k)]}
    print(f"sandbox: {detect().detail}")
    scored(solutions(2), asserts, 1, args.allow_weak)  # warm the sandbox probe and the page cache
    base = baseline(solutions(n), asserts, args.parallel)
    rows = [("bare python -c (baseline)", base, None),
            ("code_tests, assert tests", *scored(solutions(n), asserts, args.parallel, args.allow_weak)),
            ("code_tests, stdin/stdout tests", *scored(programs(n), stdio, args.parallel, args.allow_weak))]
    if args.before:
        before = earlier_code_tests(args.before)
        scored(solutions(2), asserts, 1, args.allow_weak, before)
        rows.append((f"code_tests at {args.before}, asserts", *scored(solutions(n), asserts, args.parallel,
                                                                      args.allow_weak, before)))
    print(f"{n} distinct completions, {k} tests each, parallel {args.parallel}")
    for label, seconds, mean in rows:
        extra = "" if mean is None else f"  mean score {mean:.2f}"
        print(f"  {label:32s} {1000 * seconds / n:7.1f} ms/completion  {seconds / base:5.2f}x baseline{extra}")


if __name__ == "__main__":
    main()
