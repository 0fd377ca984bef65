"""The code sandbox: start a Python process that runs model-written code (or judges it) under kernel isolation.

Strong mode (bubblewrap, `bwrap`, found and working): each process gets new user, PID, network, mount, IPC, UTS and
cgroup namespaces, so it sees no other process (nothing to signal, trace or read in /proc), has no network (a
loopback of its own), and sees a file system of its own: /usr, the Python installation and this environment's
site-packages read-only, a fresh /proc and minimal /dev, and a private size-capped tmpfs at /tmp as its working
directory; nothing else of the host (no home, no project, no datasets, no /etc beyond the loader cache). All
capabilities are dropped, the environment is emptied, it dies with its parent, and the seccomp filter of
rewards/seccomp.py refuses new processes, non-Unix sockets and the kernel's wider surface. Inside, resource limits
(CPU seconds, address space, file size, open files, no core files) are set before any code runs, and
rewards/guest/confine.py's audit hook adds a Python-level layer for model code.

Weak mode (no working bwrap): the same processes without namespaces, with the limits, the audit hook, an empty
environment, a temporary working directory and, where `unshare -rn` works, a network namespace. `detect()` says
which mode this machine gives and why; callers refuse weak mode unless told otherwise.

A process is started with its entry module (rewards/guest/*) and arguments in a payload on an inherited fd; the
guest modules' source travels in the payload too, so nothing of the project needs to be visible inside.
"""

from __future__ import annotations

import functools
import marshal
import os
import shutil
import site
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rewards import seccomp

# entry -> the guest modules it needs, in load order
GUEST_MODULES = {"rewards.guest.solution": ("rewards.guest.plain", "rewards.guest.confine", "rewards.guest.solution"),
                 "rewards.guest.judge": ("rewards.guest.plain", "rewards.guest.judge")}
_GUEST_DIR = Path(__file__).resolve().parent / "guest"
_ETC_FILES = ("/etc/ld.so.cache", "/etc/localtime")
# Runs first in every sandboxed interpreter: read the payload (marshal: no imports, and the guest modules arrive
# compiled), set the limits, load the guest modules, run the entry. The payload comes from the parent only.
BOOTSTRAP = r"""
import marshal, os, resource, sys
with os.fdopen(int(sys.argv[1]), "rb") as _f:
    _payload = marshal.loads(_f.read())
for _name, _value in _payload["limits"].items():
    try:
        resource.setrlimit(getattr(resource, _name), (_value, _value))
    except (ValueError, OSError):
        pass
sys.path[:0] = _payload["paths"]
for _package in ("rewards", "rewards.guest"):
    _m = type(sys)(_package)
    _m.__path__ = []
    sys.modules[_package] = _m
for _name, _code in _payload["modules"]:
    _m = type(sys)(_name)
    _m.__file__ = _code.co_filename
    sys.modules[_name] = _m
    exec(_code, _m.__dict__)
    setattr(sys.modules[_name.rpartition(".")[0]], _name.rpartition(".")[2], _m)
sys.modules[_payload["entry"]].main(_payload["args"])
"""


@dataclass(frozen=True)
class SandboxInfo:
    """What this machine's sandbox enforces: `strong` (kernel isolation) or not, and a one-line description."""

    strong: bool
    detail: str
    bwrap: str = ""
    seccomp: bool = False

    @property
    def kind(self) -> str:
        return "bwrap" if self.strong else "weak"


@dataclass
class Limits:
    """Per-process limits: wall clock is the caller's; these are the kernel's."""

    cpu_s: int = 6
    memory_mb: int = 512
    file_mb: int = 16
    tmp_mb: int = 64
    open_files: int = 64

    def rlimits(self) -> dict[str, int]:
        return {"RLIMIT_CPU": self.cpu_s, "RLIMIT_AS": self.memory_mb << 20, "RLIMIT_FSIZE": self.file_mb << 20,
                "RLIMIT_NOFILE": self.open_files, "RLIMIT_CORE": 0}


@dataclass
class Process:
    """A started sandboxed process; `kill()` ends it and everything it started."""

    popen: subprocess.Popen
    workdir: tempfile.TemporaryDirectory | None = field(default=None)

    def kill(self) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, 9)
            except ProcessLookupError:
                pass
        self.popen.wait()
        if self.workdir is not None:
            self.workdir.cleanup()


@functools.lru_cache(maxsize=None)
def _guest_modules(entry: str) -> tuple[tuple[str, Any], ...]:
    """The guest modules `entry` needs, compiled once per process."""
    return tuple((name, compile((_GUEST_DIR / f"{name.rsplit('.', 1)[1]}.py").read_text(), f"<{name}>", "exec"))
                 for name in GUEST_MODULES[entry])


@functools.lru_cache(maxsize=1)
def _python_paths() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(directories to bind read-only, sys.path entries for site-packages) of the running interpreter."""
    prefixes = {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, os.path.dirname(sys.executable))}
    packages = tuple(p for p in site.getsitepackages() if os.path.isdir(p))
    binds = sorted(p for p in prefixes if not any(p != q and p.startswith(q + os.sep) for q in prefixes))
    return tuple(b for b in binds if not b.startswith("/usr/") and b != "/usr"), packages


def bwrap_command(bwrap: str, tmp_mb: int, seccomp_fd: int | None) -> list[str]:
    """The bubblewrap command line that precedes the interpreter (see the module docstring for what it does)."""
    return [*_bwrap_mounts(bwrap, tmp_mb), *([] if seccomp_fd is None else ["--seccomp", str(seccomp_fd)])]


@functools.lru_cache(maxsize=None)
def _bwrap_mounts(bwrap: str, tmp_mb: int) -> tuple[str, ...]:
    """Everything of the command line but the seccomp fd: the same for every process, so built once."""
    cmd = [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
           "--ro-bind", "/usr", "/usr"]
    for top in ("bin", "lib", "lib32", "lib64", "sbin"):
        path = f"/{top}"
        if os.path.islink(path):
            cmd += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            cmd += ["--ro-bind", path, path]
    # the tmpfs first: a Python installation under /tmp (a venv in a checkout there) is bound on top of it
    cmd += ["--proc", "/proc", "--dev", "/dev", "--size", str(tmp_mb << 20), "--tmpfs", "/tmp"]
    for path in _python_paths()[0]:
        cmd += ["--ro-bind", path, path]
    for path in _ETC_FILES:
        cmd += ["--ro-bind-try", path, path]
    cmd += ["--chdir", "/tmp", "--clearenv", "--setenv", "HOME", "/tmp", "--setenv", "TMPDIR", "/tmp",
            "--setenv", "LC_ALL", "C.UTF-8", "--setenv", "PATH", "/usr/bin:/bin"]
    return tuple(cmd)


def _memfd(data: bytes, name: str) -> int:
    fd = os.memfd_create(name, 0) if hasattr(os, "memfd_create") else _tempfd()
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _tempfd() -> int:
    handle = tempfile.TemporaryFile()
    fd = os.dup(handle.fileno())
    handle.close()
    return fd


def start(info: SandboxInfo, entry: str, args: dict[str, Any], limits: Limits, pass_fds: tuple[int, ...] = (),
          stdin: int | IO | None = None, stdout: int | IO | None = None, stderr: int | IO | None = None) -> Process:
    """Start `entry`'s `main(args)` (a rewards.guest module) in a sandboxed interpreter; stdin and stdout default to
    /dev/null, stderr too (the probe keeps it)."""
    payload = {"limits": limits.rlimits(), "paths": _python_paths()[1], "modules": _guest_modules(entry),
               "entry": entry, "args": args}
    fds = [_memfd(marshal.dumps(payload), "rlpost-payload")]
    workdir = None
    try:
        if info.strong:
            program = seccomp.program() if info.seccomp else None
            if program is not None:
                fds.append(_memfd(program, "rlpost-seccomp"))
            prefix, cwd = bwrap_command(info.bwrap, limits.tmp_mb, fds[1] if len(fds) > 1 else None), None
        else:
            workdir = tempfile.TemporaryDirectory(prefix="rlpost-code-")
            prefix, cwd = list(network_isolation_prefix()), workdir.name
        env = {"HOME": cwd or "/tmp", "TMPDIR": cwd or "/tmp", "LC_ALL": "C.UTF-8", "PATH": "/usr/bin:/bin"}
        command = [*prefix, sys.executable, "-I", "-S", "-B", "-c", BOOTSTRAP, str(fds[0])]
        popen = subprocess.Popen(command, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                 stdout=stdout if stdout is not None else subprocess.DEVNULL,
                                 stderr=stderr if stderr is not None else subprocess.DEVNULL,
                                 pass_fds=(*fds, *pass_fds), cwd=cwd, env=env,
                                 start_new_session=True)
    except BaseException:
        if workdir is not None:
            workdir.cleanup()
        raise
    finally:
        for fd in fds:
            os.close(fd)
    return Process(popen, workdir)


@functools.lru_cache(maxsize=1)
def network_isolation_prefix() -> tuple[str, ...]:
    """Weak mode's network layer: `unshare -rn` (new user and network namespaces) when it works here, else nothing."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return ()
    try:
        probe = subprocess.run([unshare, "-rn", sys.executable, "-I", "-S", "-c", "pass"], capture_output=True,
                               timeout=10, env={})
    except (OSError, subprocess.SubprocessError):
        return ()
    return (unshare, "-rn") if probe.returncode == 0 else ()


@functools.lru_cache(maxsize=None)
def detect(bwrap: str | None = None) -> SandboxInfo:
    """Which sandbox this machine gives: bubblewrap (`bwrap` on PATH, or the path given) if a sandboxed interpreter
    really starts under it, else weak mode with the reason."""
    path = bwrap or shutil.which("bwrap")
    if path is None:
        return SandboxInfo(False, "weak: bubblewrap (bwrap) is not installed (Debian/Ubuntu: apt-get install "
                                  "bubblewrap; Fedora: dnf install bubblewrap)")
    has_filter = seccomp.program() is not None
    info = SandboxInfo(True, "", path, has_filter)
    problem = _probe(info)
    if problem:
        return SandboxInfo(False, f"weak: bubblewrap at {path} does not start a sandbox here ({problem})")
    filtered = "seccomp filter (no fork, no sockets but AF_UNIX, no ptrace/bpf/mount/keyring/io_uring)" \
        if has_filter else f"no seccomp filter (no syscall table for {os.uname().machine})"
    return SandboxInfo(True, f"bwrap: user, pid, net, mount, ipc, uts namespaces; read-only /usr and Python; private "
                             f"/tmp; no capabilities; {filtered}", path, has_filter)


def _probe(info: SandboxInfo) -> str:
    """'' when a sandboxed interpreter runs a program and prints its output, else what went wrong."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = start(info, "rewards.guest.solution", {"mode": "program", "code": "print(6 * 7)"}, Limits(),
                        stdout=out, stderr=err)
        try:
            process.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            return "timed out"
        finally:
            process.kill()
        out.seek(0)
        err.seek(0)
        got, error = out.read().decode(errors="replace").strip(), err.read().decode(errors="replace").strip()
    if got == "42":
        return ""
    last = error.splitlines()[-1] if error else ""
    return f"exit status {process.popen.returncode}" + (f": {last[:300]}" if last else "")
