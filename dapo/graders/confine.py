"""Confine the current process before it runs untrusted code (Linux): resource limits, no capabilities, Landlock
and a seccomp filter. Standard library only, because the sandbox runner imports it with `python -I -S`.

What each layer stops:
  * rlimits: CPU seconds (the kernel kills the process), address space (memory bombs get MemoryError), file size,
    open files, core dumps.
  * capabilities (when started as root): dropped from every set and the bounding set, so root inside the sandbox
    cannot raise its hard limits, mount, reboot, load modules or bypass file permissions.
  * Landlock (kernel >= 5.13; more with newer ABIs): writes only beneath the work dir; reads and executes only
    beneath the Python installation and the system library dirs; with ABI >= 4 no TCP bind/connect, with ABI >= 6
    no signals to processes outside the sandbox and no abstract unix sockets.
  * seccomp (x86_64 and aarch64): no new processes (fork, vfork, clone without CLONE_THREAD, clone3), no exec,
    no sockets, no signals except to itself (nor through fcntl's F_SETOWN or ioctl's FIOSETOWN), no ptrace /
    process_vm_*, namespaces, io_uring, bpf, perf events, keyrings, userfaultfd, memfd_create, System V IPC, no
    changes to file metadata (mode, owner, times, extended attributes: Landlock does not cover them) and no
    raising of resource limits. Threads still work, except in the thread that runs untrusted code
    (`forbid_threads`).

Each function returns the name of the protection it installed, or raises OSError; `confine` reports the list.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import resource
import struct
import sys

_libc = ctypes.CDLL(None, use_errno=True)

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
SECCOMP_MODE_FILTER = 2
CAP_LAST_CAP_GUESS = 63  # the bounding set is dropped up to the kernel's last capability (EINVAL beyond it)
CLONE_THREAD = 0x00010000


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


# -- resource limits ---------------------------------------------------------------------------------------------


def set_limits(cpu_seconds: int, memory_bytes: int, file_size_bytes: int, open_files: int) -> str:
    """Hard and soft limits; the CPU limit's soft value sends SIGXCPU, its hard value one second later SIGKILL."""
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_bytes, file_size_bytes))
    resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return "rlimits"


# -- capabilities ------------------------------------------------------------------------------------------------


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_capabilities() -> str:
    """Empty the bounding, effective, permitted and inheritable sets (a no-op in effect for non-root users)."""
    for cap in range(CAP_LAST_CAP_GUESS + 1):
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 and ctypes.get_errno() == errno.EINVAL:
            break  # past the kernel's last capability
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3: two 32-bit words per set
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")
    return "no capabilities"


# -- Landlock ----------------------------------------------------------------------------------------------------

SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FS_MAKE_AND_REMOVE = sum(1 << bit for bit in range(4, 13))  # remove dir/file, make char/dir/reg/sock/fifo/block/sym
FS_REFER, FS_TRUNCATE, FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1
FILE_ONLY_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when Landlock is unavailable."""
    version = _libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, 0, LANDLOCK_CREATE_RULESET_VERSION)
    return max(int(version), 0)


def _fs_rights(abi: int) -> int:
    rights = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_READ_DIR | FS_MAKE_AND_REMOVE
    if abi >= 2:
        rights |= FS_REFER
    if abi >= 3:
        rights |= FS_TRUNCATE
    if abi >= 5:
        rights |= FS_IOCTL_DEV
    return rights


def readable_roots() -> list[str]:
    """Directories the sandboxed interpreter may read and execute from: its installation and system libraries."""
    roots = {sys.base_prefix, sys.base_exec_prefix, "/usr", "/lib", "/lib64", "/etc/localtime"}
    return sorted(path for path in roots if os.path.exists(path))


def _allow(ruleset: int, path: str, rights: int) -> None:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        if not os.path.isdir(path):
            rights &= FILE_ONLY_RIGHTS
        rule = struct.pack("=Qi", rights, fd)  # struct landlock_path_beneath_attr is packed
        _check(_libc.syscall(SYS_LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH, rule, 0), f"rule {path}")
    finally:
        os.close(fd)


def apply_landlock(work_dir: str) -> str:
    """Writes only beneath `work_dir`, reads beneath `readable_roots()`; no TCP and no outside signals if the ABI
    allows. Raises OSError when Landlock is unavailable."""
    abi = landlock_abi()
    if abi < 1:
        raise OSError(errno.ENOSYS, "Landlock is not available in this kernel")
    fs = _fs_rights(abi)
    net = NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0
    attr = struct.pack("=QQQ", fs, net, scoped)[: 24 if abi >= 6 else 16 if abi >= 4 else 8]
    ruleset = _check(_libc.syscall(SYS_LANDLOCK_CREATE_RULESET, attr, len(attr), 0), "landlock_create_ruleset")
    try:
        for root in readable_roots():
            _allow(ruleset, root, FS_EXECUTE | FS_READ_FILE | FS_READ_DIR)
        _allow(ruleset, "/dev/null", FS_READ_FILE | FS_WRITE_FILE)
        _allow(ruleset, "/dev/urandom", FS_READ_FILE)
        _allow(ruleset, work_dir, fs)
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        _check(_libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0), "landlock_restrict_self")
    finally:
        os.close(ruleset)
    return f"landlock abi {abi}"


# -- seccomp -----------------------------------------------------------------------------------------------------

AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
# name: (x86_64 number, aarch64 number or None where the syscall does not exist)
SYSCALLS = {
    "fork": (57, None), "vfork": (58, None), "execve": (59, 221), "execveat": (322, 281), "clone": (56, 220),
    "clone3": (435, 435), "kill": (62, 129), "tkill": (200, 130), "tgkill": (234, 131), "socket": (41, 198),
    "ptrace": (101, 117), "process_vm_readv": (310, 270), "process_vm_writev": (311, 271), "unshare": (272, 97),
    "setns": (308, 268), "pidfd_open": (434, 434), "pidfd_send_signal": (424, 424), "rt_sigqueueinfo": (129, 138),
    "rt_tgsigqueueinfo": (297, 240), "io_uring_setup": (425, 425), "bpf": (321, 280), "perf_event_open": (298, 241),
    "userfaultfd": (323, 282), "keyctl": (250, 219), "add_key": (248, 217), "request_key": (249, 218),
    "setrlimit": (160, 164), "prlimit64": (302, 261), "memfd_create": (319, 279), "fcntl": (72, 25),
    "ioctl": (16, 29),
    # file metadata (Landlock does not cover it): mode, owner, times, extended attributes
    "chmod": (90, None), "fchmod": (91, 52), "fchmodat": (268, 53), "fchmodat2": (452, 452), "chown": (92, None),
    "fchown": (93, 55), "lchown": (94, None), "fchownat": (260, 54), "utime": (132, None), "utimes": (235, None),
    "futimesat": (261, None), "utimensat": (280, 88), "setxattr": (188, 5), "lsetxattr": (189, 6),
    "fsetxattr": (190, 7), "removexattr": (197, 14), "lremovexattr": (198, 15), "fremovexattr": (199, 16),
    "setxattrat": (463, 463), "removexattrat": (466, 466),
    # System V IPC: its objects outlive the process (shared memory escapes the address-space limit)
    "shmget": (29, 194), "shmat": (30, 196), "shmctl": (31, 195), "shmdt": (67, 197), "semget": (64, 190),
    "semop": (65, 193), "semctl": (66, 191), "semtimedop": (220, 192), "msgget": (68, 186), "msgsnd": (69, 189),
    "msgrcv": (70, 188), "msgctl": (71, 187),
}  # fmt: skip
ALWAYS_ALLOWED = ("clone", "clone3", "kill", "tgkill", "prlimit64", "fcntl", "ioctl")  # filtered on their arguments
DENIED = tuple(name for name in SYSCALLS if name not in ALWAYS_ALLOWED)
F_SETOWN, F_SETSIG, F_SETOWN_EX = 8, 10, 15  # fcntl commands that would make the kernel signal another process
FIOSETOWN, SIOCSPGRP = 0x8901, 0x8902  # ioctl commands that do the same
X32_SYSCALL_BIT = 0x40000000
RET_ALLOW, RET_KILL_PROCESS = 0x7FFF0000, 0x80000000
LD_ABS, JEQ, JSET, JGE, RET = 0x20, 0x15, 0x45, 0x35, 0x06
OFFSET_NR, OFFSET_ARCH, OFFSET_ARGS = 0, 4, 16  # struct seccomp_data: int nr; u32 arch; u64 ip; u64 args[6]

Instruction = tuple[int, int, int, int]  # (code, jump if true, jump if false, k)


def _numbers(arch: str) -> dict[str, int | None]:
    """Syscall numbers of `arch` by name (None where the call does not exist)."""
    return {name: pair[1 if arch == "aarch64" else 0] for name, pair in SYSCALLS.items()}


def _own_architecture_only(arch: str) -> list[Instruction]:
    """The filter's prologue: a syscall made through another architecture's entry point kills the process."""
    return [(LD_ABS, 0, 0, OFFSET_ARCH), (JEQ, 1, 0, AUDIT_ARCH[arch]), (RET, 0, 0, RET_KILL_PROCESS)]


def _ret_errno(code: int) -> Instruction:
    return (RET, 0, 0, 0x00050000 | code)


def _arg_low(index: int) -> Instruction:
    return (LD_ABS, 0, 0, OFFSET_ARGS + 8 * index)  # the low 32 bits of a u64 argument (little-endian)


def _when(number: int | None, block: list[Instruction]) -> list[Instruction]:
    """`block` runs when the syscall number equals `number` (it must end in a return); otherwise it is skipped.
    The syscall number is reloaded after the block's possible argument loads, so blocks can follow each other."""
    if number is None:
        return []
    return [(LD_ABS, 0, 0, OFFSET_NR), (JEQ, 0, len(block), number), *block]


def seccomp_program(arch: str, own_pid: int) -> list[Instruction]:
    """The BPF filter: kill on a foreign architecture or the x32 ABI, deny the calls above with EPERM (clone3
    with ENOSYS, so libc falls back to clone for threads), allow clone only for threads, kill/tgkill only on
    ourselves, prlimit64 only to read limits."""
    numbers, deny, program = _numbers(arch), _ret_errno(errno.EPERM), _own_architecture_only(arch)
    if arch == "x86_64":
        program += [(LD_ABS, 0, 0, OFFSET_NR), (JGE, 0, 1, X32_SYSCALL_BIT), (RET, 0, 0, RET_KILL_PROCESS)]
    for name in DENIED:
        program += _when(numbers[name], [deny])
    program += _when(numbers["clone3"], [_ret_errno(errno.ENOSYS)])
    program += _when(numbers["clone"], [_arg_low(0), (JSET, 0, 1, CLONE_THREAD), (RET, 0, 0, RET_ALLOW), deny])
    for name in ("kill", "tgkill"):
        program += _when(numbers[name], [_arg_low(0), (JEQ, 0, 1, own_pid), (RET, 0, 0, RET_ALLOW), deny])
    new_limit_low, new_limit_high = _arg_low(2), (LD_ABS, 0, 0, OFFSET_ARGS + 8 * 2 + 4)
    read_only = [new_limit_low, (JEQ, 0, 3, 0), new_limit_high, (JEQ, 0, 1, 0), (RET, 0, 0, RET_ALLOW), deny]
    program += _when(numbers["prlimit64"], read_only)
    signal_owner = [_arg_low(1), (JEQ, 2, 0, F_SETOWN), (JEQ, 1, 0, F_SETSIG), (JEQ, 0, 1, F_SETOWN_EX), deny]
    program += _when(numbers["fcntl"], [*signal_owner, (RET, 0, 0, RET_ALLOW)])
    owner_ioctl = [_arg_low(1), (JEQ, 1, 0, FIOSETOWN), (JEQ, 0, 1, SIOCSPGRP), deny, (RET, 0, 0, RET_ALLOW)]
    program += _when(numbers["ioctl"], owner_ioctl)
    program.append((RET, 0, 0, RET_ALLOW))
    return program


def no_threads_program(arch: str) -> list[Instruction]:
    """A second filter, stacked on `seccomp_program` by the thread that runs untrusted code: no clone at all."""
    numbers, deny, program = _numbers(arch), _ret_errno(errno.EPERM), _own_architecture_only(arch)
    program += _when(numbers["clone"], [deny]) + _when(numbers["clone3"], [deny])
    return [*program, (RET, 0, 0, RET_ALLOW)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def apply_seccomp() -> str:
    """Install `seccomp_program` for this process (and any thread it starts). Raises OSError on other
    architectures."""
    arch = _arch()
    _install(seccomp_program(arch, os.getpid()))
    return "seccomp"


def forbid_threads() -> str:
    """Stack `no_threads_program` on the calling thread (and so on any thread it would start)."""
    _install(no_threads_program(_arch()))
    return "no threads"


def _arch() -> str:
    arch = platform.machine()
    if arch not in AUDIT_ARCH:
        raise OSError(errno.ENOSYS, f"no seccomp filter for architecture {arch}")
    return arch


def _install(program: list[Instruction]) -> None:
    code = b"".join(struct.pack("=HBBI", *instruction) for instruction in program)
    buffer = ctypes.create_string_buffer(code, len(code))
    fprog = _SockFprog(len(program), ctypes.cast(buffer, ctypes.c_void_p))
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0), "seccomp")
