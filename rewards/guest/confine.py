"""The in-process layer of the code sandbox: an audit hook installed before model code runs.

It refuses new processes (subprocess, fork, exec, spawn, os.system), signals, sockets, every ctypes operation, the
garbage collector's object walks (the usual way to reach and patch this hook's state), and writes, deletions,
renames, links and mode changes outside the working directory, including fd-relative and fd-based ones it cannot
check. `import ctypes` itself succeeds (numpy and other libraries import it at load time); only its use is refused.

This is defence in depth. Python code in the same process can still find ways around an audit hook, so the boundary
that holds is the kernel's (rewards/sandbox.py: namespaces, a read-only file system view and seccomp); without it
(`allow_weak_sandbox`), this hook, resource limits and a network namespace where available are all there is.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # no typing import at run time (see plain.py)
    from collections.abc import Callable
    from typing import Any, NoReturn

DENIED_PREFIXES = ("socket.", "subprocess.Popen", "os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork",
                   "os.forkpty", "pty.spawn", "os.kill", "os.killpg", "signal.pthread_kill", "ctypes.",
                   "gc.get_objects", "gc.get_referrers", "gc.get_referents", "os.mknod", "os.mkfifo")
# event -> (indices of its path arguments, indices of its dir_fd arguments), as CPython 3.10-3.13 raise them
PATH_EVENTS = {"os.remove": ((0,), (1,)), "os.rmdir": ((0,), (1,)), "os.mkdir": ((0,), (2,)),
               "os.chmod": ((0,), (2,)), "os.chown": ((0,), (3,)), "os.utime": ((0,), (3,)),
               "os.truncate": ((0,), ()), "os.rename": ((0, 1), (2, 3)), "os.link": ((0, 1), (2, 3)),
               "os.symlink": ((1,), (2,)), "shutil.rmtree": ((0,), (1,)), "sqlite3.connect": ((0,), ())}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def install_audit_hook(root: str) -> None:
    """Refuse the events above for the rest of this process's life (audit hooks cannot be removed)."""
    import _posixsubprocess
    import ctypes  # noqa: F401  loaded before the hook: its use is refused, its import is not

    def denied(*args: Any, **kwargs: Any) -> NoReturn:
        raise PermissionError("sandbox: new processes are not allowed")

    _posixsubprocess.fork_exec = denied
    sys.addaudithook(_make_hook(os.path.realpath(root)))


def _make_hook(root: str) -> Callable[[str, tuple[Any, ...]], None]:
    realpath, fsdecode, sep, devnull = os.path.realpath, os.fsdecode, os.sep, os.devnull
    denied, path_events, write_flags = DENIED_PREFIXES, PATH_EVENTS, _WRITE_FLAGS

    def outside(path: Any) -> bool:
        if isinstance(path, int):
            return True  # an fd: what it refers to cannot be checked here
        if path in (None, ":memory:", b":memory:", ""):
            return False
        resolved = realpath(fsdecode(path))
        return resolved not in (root, devnull) and not resolved.startswith(root + sep)

    def hook(event: str, args: tuple) -> None:
        if event.startswith(denied):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open":
            if isinstance(args[2], int) and args[2] & write_flags and outside(args[0]):
                raise PermissionError("sandbox: writing outside the working directory is not allowed")
            return
        spec = path_events.get(event)
        if spec is None:
            return
        paths, dir_fds = spec
        relative = any(i < len(args) and args[i] not in (None, -1) for i in dir_fds)  # -1: no dir_fd given
        if relative or any(outside(args[i]) for i in paths if i < len(args)):
            raise PermissionError(f"sandbox: {event} outside the working directory is not allowed")

    return hook
