"""Run a command under the rule systemd's MemoryDenyWriteExecute=yes sets, then exec it:

    python tests/helpers/sandbox.py COMMAND [ARGS...]

The same seccomp filter systemd installs (src/shared/seccomp-util.c): no mapping that is
writable and executable at once, no mprotect or pkey_mprotect that adds execute permission,
no executable shared memory; each such call fails with EPERM. With no_new_privs, as systemd
sets it. The filter is inherited by everything the command starts (gpg, gpg-agent), so a
listserv run under it shows whether the unit's MemoryDenyWriteExecute breaks any of them.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
import sys

# (audit architecture, mmap, mprotect, pkey_mprotect, shmat) from the kernel's uapi headers
_ARCHES = {
    "x86_64": (0xC000003E, 9, 10, 329, 30),
    "aarch64": (0xC00000B7, 222, 226, 288, 196),
}
PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000
_LD, _JEQ, _JSET, _AND, _RET = 0x20, 0x15, 0x45, 0x54, 0x06  # BPF_LD|W|ABS, JMP|JEQ|K, JMP|JSET|K, ALU|AND|K, RET|K
_ALLOW, _DENY = 0x7FFF0000, 0x00050000 | errno.EPERM  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO|EPERM
_NR, _ARCH, _ARG2 = 0, 4, 16 + 2 * 8  # offsets in struct seccomp_data (low word of args[2])


def program() -> list[tuple[int, int, int, int]]:
    machine = platform.machine()
    if machine not in _ARCHES:
        raise SystemExit(f"tests/helpers/sandbox.py knows the system call numbers of {sorted(_ARCHES)}, not {machine}.")
    arch, mmap, mprotect, pkey_mprotect, shmat = _ARCHES[machine]
    # Each check: load the third argument, test the flags, refuse or allow. Jumps are relative.
    checks = [
        (mmap, [(_AND, 0, 0, PROT_WRITE | PROT_EXEC), (_JEQ, 0, 1, PROT_WRITE | PROT_EXEC)]),
        (mprotect, [(_JSET, 0, 1, PROT_EXEC)]),
        (pkey_mprotect, [(_JSET, 0, 1, PROT_EXEC)]),
        (shmat, [(_JSET, 0, 1, SHM_EXEC)]),
    ]
    code = [(_LD, 0, 0, _ARCH), (_JEQ, 1, 0, arch), (_RET, 0, 0, _ALLOW), (_LD, 0, 0, _NR)]
    bodies = [[(_LD, 0, 0, _ARG2), *test, (_RET, 0, 0, _DENY), (_RET, 0, 0, _ALLOW)] for _, test in checks]
    # The dispatch: one JEQ per call, jumping over the later JEQs and earlier bodies to its body.
    for index, (number, _) in enumerate(checks):
        skip = len(checks) - index - 1 + 1 + sum(len(b) for b in bodies[:index])
        code.append((_JEQ, skip, 0, number))
    code.append((_RET, 0, 0, _ALLOW))
    for body in bodies:
        code.extend(body)
    return code


def install() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    filters = b"".join(struct.pack("=HBBI", *instruction) for instruction in program())
    buffer = ctypes.create_string_buffer(filters, len(filters))
    prog = ctypes.create_string_buffer(struct.pack("@HP", len(filters) // 8, ctypes.addressof(buffer)))
    PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or \
            libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0) != 0:
        raise SystemExit(f"tests/helpers/sandbox.py: the seccomp filter was refused: {os.strerror(ctypes.get_errno())}")


if __name__ == "__main__":
    install()
    os.execvp(sys.argv[1], sys.argv[1:])
