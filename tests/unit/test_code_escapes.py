"""Escape attempts against the kernel-level code sandbox, with the Python audit hook switched off so that what is
refused is refused by the kernel (namespaces, read-only mounts, seccomp, resource limits). Each attack prints
ESCAPED when it works; each has a control: the same code run as a plain process on this machine, where it works.
"""

import os
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from rewards import sandbox
from rewards.seccomp import syscall_numbers

NR = syscall_numbers()


def _sandboxed(code, info=None, **limits):
    """Run `code` as a program in the sandbox without the audit hook; its stdout."""
    info = info or sandbox.detect()
    assert info.strong, f"no kernel sandbox here: {info.detail}"
    with tempfile.TemporaryFile() as out:
        process = sandbox.start(info, "rewards.guest.solution", {"mode": "program", "code": code, "audit_hook": False},
                                sandbox.Limits(**limits), stdout=out)
        try:
            process.popen.wait(timeout=60)
        finally:
            process.kill()
        out.seek(0)
        return out.read().decode(errors="replace")


def _plain(code, **env):
    """The same code as an ordinary process: the control."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env}).stdout


def _check(code, **limits):
    """The attack escapes as a plain process and is refused in the sandbox (and the sandboxed code did run)."""
    assert "ESCAPED" in _plain(code), "control: the attack should work outside the sandbox"
    inside = _sandboxed(code, **limits)
    assert "ESCAPED" not in inside and "refused" in inside, inside


TRY = "try:\n{body}\n    print('ESCAPED')\nexcept Exception as err:\n    print('refused', type(err).__name__, err)\n"


def _attempt(body):
    return TRY.format(body="\n".join("    " + line for line in body.strip().splitlines()))


@pytest.fixture
def listener():
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def test_no_network(listener):
    _check(_attempt(f"import socket\nsocket.create_connection(('127.0.0.1', {listener}), timeout=2)"))


def test_no_network_from_the_namespace_alone(listener):
    # without the seccomp filter, sockets can be made, but the network namespace has nothing to reach
    info = sandbox.detect()
    unfiltered = sandbox.SandboxInfo(True, info.detail, info.bwrap, seccomp=False)
    code = _attempt(f"import socket\ns = socket.socket()\nprint('socket made')\n"
                    f"s.settimeout(2)\ns.connect(('127.0.0.1', {listener}))")
    inside = _sandboxed(code, unfiltered)
    assert "socket made" in inside and "refused" in inside and "ESCAPED" not in inside, inside


def test_no_writes_outside(tmp_path):
    target = tmp_path / "written"
    for attack in (f"open({str(target)!r}, 'w').write('x')",
                   f"import sqlite3\nsqlite3.connect({str(target)!r}).execute('create table t (x)')",
                   f"import os\nfd = os.open({str(tmp_path)!r}, os.O_RDONLY)\n"
                   "os.close(os.open('written', os.O_WRONLY | os.O_CREAT, dir_fd=fd))",
                   f"import os\nopen('inside', 'w').write('x')\nos.rename('inside', {str(target)!r})"):
        _check(_attempt(attack))
        assert target.exists()  # written by the control
        target.unlink()
    inside = _sandboxed(_attempt(f"open({sys.base_prefix!r} + '/x', 'w')"))  # the Python install is read-only
    assert "refused" in inside and "Read-only" in inside


def test_no_host_files_to_read(tmp_path):
    secret = tmp_path / "answers.txt"
    secret.write_text("f(2) == 4")
    _check(_attempt(f"print(open({str(secret)!r}).read())"))
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    hidden = [p for p in ("/etc/passwd", "/etc/hostname", os.path.expanduser("~/.bashrc"),
                          os.path.expanduser("~/.cache"), os.path.join(repo, "README.md"), os.path.abspath(__file__),
                          str(secret)) if os.path.exists(p)]
    assert len(hidden) >= 4
    inside = _sandboxed(f"import os\nprint([p for p in {hidden!r} if os.path.exists(p)])")
    assert inside.strip() == "[]", inside


@pytest.fixture
def target():
    """A process that holds a secret in its memory and its environment."""
    marker = f"MARKER-{os.getpid()}-{time.monotonic_ns()}"
    proc = subprocess.Popen([sys.executable, "-c", f"import time\nsecret = {marker!r} * 3\ntime.sleep(120)"],
                            env={**os.environ, "SECRET_MARKER": marker})
    time.sleep(0.5)
    yield proc, marker
    proc.kill()
    proc.wait()


def test_no_other_process_environment(target):
    proc, marker = target
    code = _attempt("import os\nfound = False\nfor pid in os.listdir('/proc'):\n    if pid.isdigit():\n"
                    "        try:\n            found |= %r in open(f'/proc/{pid}/environ', 'rb').read().decode()\n"
                    "        except OSError:\n            pass\nassert found, 'refused: not found'" % marker)
    _check(code)


def test_no_other_process_memory(target):
    proc, marker = target
    code = _attempt(f"pid = {proc.pid}\nmaps = open(f'/proc/{{pid}}/maps').read().splitlines()\n"
                    "mem = open(f'/proc/{pid}/mem', 'rb', 0)\nfound = False\nfor line in maps:\n"
                    "    span, perms = line.split()[:2]\n    if 'rw' in perms:\n"
                    "        lo, hi = (int(x, 16) for x in span.split('-'))\n        try:\n            mem.seek(lo)\n"
                    f"            found |= {marker.encode()!r} in mem.read(hi - lo)\n"
                    "        except (OSError, ValueError, OverflowError):\n            pass\nassert found")
    _check(code)


def test_no_signals_to_other_processes(target):
    proc, _ = target
    for attack in (f"import os\nos.kill({proc.pid}, 0)",
                   f"import os, signal\nsignal.pidfd_send_signal(os.pidfd_open({proc.pid}), 0)"):
        _check(_attempt(attack))  # signal 0: checks reachability without killing the control's target
    inside = _sandboxed(_attempt(f"import os, signal\nos.kill({proc.pid}, signal.SIGKILL)"))
    assert "refused" in inside and proc.poll() is None  # still alive


def test_no_ptrace(target):
    proc, _ = target
    attach = (f"import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
              f"if libc.ptrace(16, {proc.pid}, 0, 0) != 0:\n    raise OSError(ctypes.get_errno(), 'ptrace')\n"
              f"import os\nos.waitpid({proc.pid}, 0)\nlibc.ptrace(17, {proc.pid}, 0, 0)")
    _check(_attempt(attach))
    assert proc.poll() is None


def test_no_new_processes_and_fork_bombs_stop_at_once():
    _check(_attempt("import subprocess\nsubprocess.run(['true'], check=True)"))
    bomb = _attempt("import os\npids = []\nfor _ in range(200):\n    pid = os.fork()\n    if pid == 0:\n"
                    "        os._exit(0)\n    pids.append(pid)\nfor pid in pids:\n    os.waitpid(pid, 0)")
    _check(bomb)  # the control forks 200 short-lived children; in the sandbox the first fork is refused
    threads = ("import threading, time\nt = [threading.Thread(target=time.sleep, args=(0.5,)) for _ in range(8)]\n"
               "[x.start() for x in t]\n[x.join() for x in t]\nprint('threads ok')")
    assert "threads ok" in _sandboxed(threads)  # threads still work


@pytest.mark.parametrize("call", [
    "keyctl(0, -3, 0)",  # KEYCTL_GET_KEYRING_ID of the user keyring (shared by every process of this user)
    "unshare(0x10000000)",  # CLONE_NEWUSER: a namespace of its own to gain capabilities in
    "userfaultfd(1)",  # UFFD_USER_MODE_ONLY: page-fault handling in user space, a common exploit aid
    "bpf(5, params, 64)",  # BPF_PROG_LOAD (an empty attr: EINVAL outside, EPERM inside)
], ids=["keyring", "unshare", "userfaultfd", "bpf"])
def test_kernel_surface_is_refused(call):
    name = call.split("(")[0]
    code = _attempt(f"import ctypes, errno\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                    f"params = ctypes.create_string_buffer(256)\n"
                    f"result = libc.syscall({NR[name]}, *[{call[len(name) + 1:-1]}])\n"
                    "code = ctypes.get_errno()\nif result < 0 and code in (errno.EPERM, errno.ENOSYS):\n"
                    "    raise PermissionError(code, 'refused by the kernel')")
    assert "ESCAPED" in _plain(code)  # outside: allowed (or failed for another reason than permission)
    inside = _sandboxed(code)
    assert "refused" in inside and "ESCAPED" not in inside, inside


def test_temporary_space_is_capped(tmp_path):
    code = _attempt("import os\nwith open('big', 'wb') as f:\n    for _ in range(80):\n"
                    "        f.write(b'x' * (1 << 20))\nos.remove('big')")
    assert "ESCAPED" in subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                                       timeout=120).stdout
    inside = _sandboxed(code, tmp_mb=64, file_mb=128)
    assert "refused" in inside and "No space" in inside, inside


def test_memory_limit_holds():
    code = _attempt("x = bytearray(600 * 1024 * 1024)")
    assert "ESCAPED" in _plain(code)
    assert "refused MemoryError" in _sandboxed(code, memory_mb=256)

