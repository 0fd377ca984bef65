"""A seccomp filter for sandboxed code, as the raw classic-BPF program bubblewrap's `--seccomp FD` loads.

What it refuses (EPERM unless noted), beyond what the namespaces already hide:
- new processes: fork, vfork, and clone without CLONE_THREAD (threads still work); clone3 gets ENOSYS, so the C
  library falls back to clone, whose flags a filter can read;
- sockets other than AF_UNIX (socket, socketpair);
- reaching other processes or the kernel's wider surface: ptrace, process_vm_readv/writev, pidfd_getfd, kcmp, bpf,
  perf_event_open, userfaultfd, io_uring, keyrings (add_key, request_key, keyctl: shared per user), mount and
  namespace calls (mount, umount2, pivot_root, chroot, unshare, setns, the new mount API), module loading, kexec,
  reboot, swap, accounting, clock and host-name changes, open_by_handle_at and similar;
- any other architecture's calling convention (x32 on x86_64, or 32-bit calls) kills the process.
Supported machines: x86_64 and aarch64 (`program()` returns None elsewhere; the sandbox then says so).
"""

from __future__ import annotations

import errno
import functools
import platform
import struct

# struct seccomp_data: nr at 0, arch at 4, args[i] at 16 + 8 i (low 32 bits first on little-endian machines)
_NR, _ARCH, _ARG0 = 0, 4, 16
_LD_W_ABS, _JEQ_K, _JGE_K, _JSET_K, _RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _KILL_PROCESS, _ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
_CLONE_THREAD, _AF_UNIX, _X32_BIT = 0x00010000, 1, 0x40000000

_DENIED_NAMES = (
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp", "bpf", "perf_event_open",
    "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register", "add_key", "request_key", "keyctl",
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "open_tree", "move_mount", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr", "init_module", "finit_module", "delete_module", "kexec_load",
    "kexec_file_load", "reboot", "swapon", "swapoff", "acct", "name_to_handle_at", "open_by_handle_at", "syslog",
    "quotactl", "lookup_dcookie", "vhangup", "clock_settime", "clock_adjtime", "settimeofday", "adjtimex",
    "sethostname", "setdomainname", "nfsservctl", "process_madvise",
)
# Linux syscall numbers (asm/unistd_64.h on x86_64, asm-generic/unistd.h on aarch64)
_X86_64 = {
    "fork": 57, "vfork": 58, "clone": 56, "clone3": 435, "socket": 41, "socketpair": 53, "ptrace": 101,
    "process_vm_readv": 310, "process_vm_writev": 311, "pidfd_getfd": 438, "kcmp": 312, "bpf": 321,
    "perf_event_open": 298, "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "add_key": 248, "request_key": 249, "keyctl": 250, "mount": 165, "umount2": 166,
    "pivot_root": 155, "chroot": 161, "unshare": 272, "setns": 308, "open_tree": 428, "move_mount": 429,
    "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442, "init_module": 175,
    "finit_module": 313, "delete_module": 176, "kexec_load": 246, "kexec_file_load": 320, "reboot": 169,
    "swapon": 167, "swapoff": 168, "acct": 163, "name_to_handle_at": 303, "open_by_handle_at": 304, "syslog": 103,
    "quotactl": 179, "lookup_dcookie": 212, "vhangup": 153, "clock_settime": 227, "clock_adjtime": 305,
    "settimeofday": 164, "adjtimex": 159, "sethostname": 170, "setdomainname": 171, "nfsservctl": 180,
    "process_madvise": 440, "iopl": 172, "ioperm": 173, "uselib": 134, "modify_ldt": 154,
}
_AARCH64 = {
    "clone": 220, "clone3": 435, "socket": 198, "socketpair": 199, "ptrace": 117, "process_vm_readv": 270,
    "process_vm_writev": 271, "pidfd_getfd": 438, "kcmp": 272, "bpf": 280, "perf_event_open": 241,
    "userfaultfd": 282, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "add_key": 217,
    "request_key": 218, "keyctl": 219, "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51, "unshare": 97,
    "setns": 268, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
    "fspick": 433, "mount_setattr": 442, "init_module": 105, "finit_module": 273, "delete_module": 106,
    "kexec_load": 104, "kexec_file_load": 294, "reboot": 142, "swapon": 224, "swapoff": 225, "acct": 89,
    "name_to_handle_at": 264, "open_by_handle_at": 265, "syslog": 116, "quotactl": 60, "lookup_dcookie": 18,
    "vhangup": 58, "clock_settime": 112, "clock_adjtime": 266, "settimeofday": 170, "adjtimex": 171,
    "sethostname": 161, "setdomainname": 162, "nfsservctl": 42, "process_madvise": 440,
}
_ARCHES = {"x86_64": (0xC000003E, _X86_64, ("iopl", "ioperm", "uselib", "modify_ldt")),
           "aarch64": (0xC00000B7, _AARCH64, ())}


def syscall_numbers(machine: str | None = None) -> dict[str, int]:
    """The syscall numbers this module knows for this machine (or `machine`); empty if unsupported."""
    spec = _ARCHES.get(machine or platform.machine())
    return dict(spec[1]) if spec else {}


def _op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


def _deny(nr: int, error: int = errno.EPERM) -> bytes:
    """If the syscall number is `nr`, fail it with `error`."""
    return _op(_JEQ_K, nr, 0, 1) + _op(_RET_K, _ERRNO | error)


def _arg0_rule(nr: int, test: int, value: int) -> bytes:
    """If the syscall is `nr`: allow it when its first argument passes (JSET value, or JEQ value), else EPERM."""
    return (_op(_JEQ_K, nr, 0, 4) + _op(_LD_W_ABS, _ARG0) + _op(test, value, 0, 1) + _op(_RET_K, _ALLOW)
            + _op(_RET_K, _ERRNO | errno.EPERM))


@functools.lru_cache(maxsize=None)
def program(machine: str | None = None) -> bytes | None:
    """The filter for this machine (or `machine`, as `platform.machine()` names it), or None if unsupported."""
    spec = _ARCHES.get(machine or platform.machine())
    if spec is None:
        return None
    arch, numbers, extra = spec
    out = _op(_LD_W_ABS, _ARCH) + _op(_JEQ_K, arch, 1, 0) + _op(_RET_K, _KILL_PROCESS) + _op(_LD_W_ABS, _NR)
    if arch == _ARCHES["x86_64"][0]:
        out += _op(_JGE_K, _X32_BIT, 0, 1) + _op(_RET_K, _KILL_PROCESS)
    for name in ("fork", "vfork", *_DENIED_NAMES, *extra):
        if name in numbers:
            out += _deny(numbers[name])
    out += _deny(numbers["clone3"], errno.ENOSYS)
    out += _arg0_rule(numbers["clone"], _JSET_K, _CLONE_THREAD)
    out += _arg0_rule(numbers["socket"], _JEQ_K, _AF_UNIX)
    out += _arg0_rule(numbers["socketpair"], _JEQ_K, _AF_UNIX)
    return out + _op(_RET_K, _ALLOW)
