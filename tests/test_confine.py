"""The seccomp filter's decisions, by running its BPF program on hand-made syscalls in a tiny interpreter."""

from __future__ import annotations

import errno
import struct

import pytest

from dapo.graders.confine import (
    AUDIT_ARCH,
    CLONE_THREAD,
    JEQ,
    JGE,
    JSET,
    LD_ABS,
    RET,
    RET_ALLOW,
    RET_KILL_PROCESS,
    SYSCALLS,
    no_threads_program,
    seccomp_program,
)

OWN_PID = 4242
EPERM = 0x00050000 | errno.EPERM


def run_filter(program, nr: int, args=(0, 0, 0, 0, 0, 0), arch="x86_64", audit_arch=None) -> int:
    """Execute the (code, jt, jf, k) program on a struct seccomp_data packed like the kernel's."""
    data = struct.pack("=iIQ6Q", nr, audit_arch or AUDIT_ARCH[arch], 0, *args)
    accumulator, pc = 0, 0
    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        if code == LD_ABS:
            accumulator = struct.unpack_from("=I", data, k)[0]
        elif code in (JEQ, JGE, JSET):
            taken = {JEQ: accumulator == k, JGE: accumulator >= k, JSET: bool(accumulator & k)}[code]
            pc += jt if taken else jf
        elif code == RET:
            return k
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_process_creation_exec_and_sockets_are_denied_threads_are_not(arch):
    program = seccomp_program(arch, OWN_PID)
    number = {name: pair[1 if arch == "aarch64" else 0] for name, pair in SYSCALLS.items()}
    assert run_filter(program, number["execve"], arch=arch) == EPERM
    assert run_filter(program, number["socket"], arch=arch) == EPERM
    assert run_filter(program, number["clone"], (0x11, 0, 0, 0, 0, 0), arch=arch) == EPERM  # fork: SIGCHLD only
    assert run_filter(program, number["clone"], (0x3D0F00 | CLONE_THREAD, 0, 0, 0, 0, 0), arch=arch) == RET_ALLOW
    assert run_filter(program, number["clone3"], arch=arch) == 0x00050000 | errno.ENOSYS  # libc falls back to clone
    assert run_filter(program, 0, arch=arch) == RET_ALLOW  # read (x86_64) / io_setup (aarch64): untouched


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_signals_only_to_itself(arch):
    program = seccomp_program(arch, OWN_PID)
    kill, tgkill = (SYSCALLS[name][1 if arch == "aarch64" else 0] for name in ("kill", "tgkill"))
    assert run_filter(program, kill, (OWN_PID, 9, 0, 0, 0, 0), arch=arch) == RET_ALLOW
    assert run_filter(program, kill, (OWN_PID - 1, 9, 0, 0, 0, 0), arch=arch) == EPERM  # e.g. the parent
    assert run_filter(program, kill, (2**32 - OWN_PID, 9, 0, 0, 0, 0), arch=arch) == EPERM  # -pid: its group
    assert run_filter(program, tgkill, (OWN_PID, OWN_PID + 1, 2, 0, 0, 0), arch=arch) == RET_ALLOW
    assert run_filter(program, tgkill, (1, 1, 9, 0, 0, 0), arch=arch) == EPERM


def test_limits_can_be_read_but_not_raised():
    program = seccomp_program("x86_64", OWN_PID)
    prlimit64 = SYSCALLS["prlimit64"][0]
    assert run_filter(program, prlimit64, (0, 9, 0, 0x7FFC0000, 0, 0)) == RET_ALLOW  # new_limit NULL: a read
    assert run_filter(program, prlimit64, (0, 9, 0x7FFC0000, 0, 0, 0)) == EPERM
    assert run_filter(program, prlimit64, (0, 9, 0x7FFC_0000_0000_0000, 0, 0, 0)) == EPERM  # high word only
    assert run_filter(program, SYSCALLS["setrlimit"][0], (9, 0x1000, 0, 0, 0, 0)) == EPERM


def test_foreign_architecture_and_x32_calls_are_killed():
    program = seccomp_program("x86_64", OWN_PID)
    assert run_filter(program, 0, audit_arch=0x40000003) == RET_KILL_PROCESS  # i386 entry point
    assert run_filter(program, 0x40000000 | 59) == RET_KILL_PROCESS  # x32 execve


def test_the_untrusted_thread_cannot_start_threads():
    program = no_threads_program("x86_64")
    clone, clone3 = SYSCALLS["clone"][0], SYSCALLS["clone3"][0]
    assert run_filter(program, clone, (0x3D0F00 | CLONE_THREAD, 0, 0, 0, 0, 0)) == EPERM
    assert run_filter(program, clone3) == EPERM
    assert run_filter(program, 0) == RET_ALLOW


def test_no_one_else_can_be_made_the_owner_of_our_signals():
    program = seccomp_program("x86_64", OWN_PID)
    fcntl, ioctl = SYSCALLS["fcntl"][0], SYSCALLS["ioctl"][0]
    assert run_filter(program, fcntl, (3, 8, 1, 0, 0, 0)) == EPERM  # F_SETOWN
    assert run_filter(program, fcntl, (3, 1, 0, 0, 0, 0)) == RET_ALLOW  # F_GETFD
    assert run_filter(program, ioctl, (3, 0x8901, 0, 0, 0, 0)) == EPERM  # FIOSETOWN
    assert run_filter(program, ioctl, (1, 0x5401, 0, 0, 0, 0)) == RET_ALLOW  # TCGETS
