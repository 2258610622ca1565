"""Run a command under the seccomp filters systemd builds for card-agent.service.

systemd is not PID 1 in the test container, so `systemd-run -p MemoryDenyWriteExecute=yes`
is not available. The two sandbox lines that can break Python native code are seccomp
filters, and they can be installed without systemd, exactly as systemd 252 installs them
(src/shared/seccomp-util.c), through libseccomp:

* `MemoryDenyWriteExecute=yes`: EPERM for mmap() with PROT_WRITE|PROT_EXEC, for
  mprotect()/pkey_mprotect() adding PROT_EXEC, and for shmat() with SHM_EXEC.
* `RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6`: socket() with any other family
  fails with EAFNOSUPPORT.
* `SystemCallFilter=@system-service` + `SystemCallFilter=~@privileged @resources` +
  `SystemCallErrorNumber=EPERM` + `SystemCallArchitectures=native`: an allow-list of the
  syscalls in the expanded group (read from `systemd-analyze syscall-filter`) minus the
  deny groups; anything else fails with EPERM (or, with --kill, kills the process so a
  test sees it instead of a quietly handled EPERM).

The filters survive execve (no_new_privs is set, as NoNewPrivileges=yes does), so the
command runs under them from its first instruction.

    python tests/ops/sandbox_exec.py --mdwe --families --syscalls -- .venv/bin/card-agent serve
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import errno
import functools
import os
import re
import subprocess
import sys

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_CMP_MASKED_EQ = 7
PROT_WRITE = 0x2
PROT_EXEC = 0x4
SHM_EXEC = 0o100000

# What card-agent.service says (tests/ops/test_units.py keeps these in sync with it).
ALLOW_GROUPS = ("@system-service",)
DENY_GROUPS = ("@privileged", "@resources")
FAMILIES = {"AF_UNIX": 1, "AF_INET": 2, "AF_INET6": 10}
AF_MAX = 46  # Linux 6.x


def scmp_act_errno(value: int) -> int:
    return 0x00050000 | (value & 0xFFFF)


class ArgCmp(ctypes.Structure):
    _fields_ = (
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    )


@functools.cache
def _lib() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    lib = ctypes.CDLL(name, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = (ctypes.c_uint32,)
    lib.seccomp_rule_add_array.argtypes = (
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(ArgCmp),
    )
    lib.seccomp_syscall_resolve_name.argtypes = (ctypes.c_char_p,)
    lib.seccomp_load.argtypes = (ctypes.c_void_p,)
    lib.seccomp_release.argtypes = (ctypes.c_void_p,)
    return lib


def libseccomp_available() -> bool:
    try:
        _lib()
    except OSError:
        return False
    return True


def _nr(name: str) -> int | None:
    nr = int(_lib().seccomp_syscall_resolve_name(name.encode()))
    return nr if nr >= 0 else None  # not a syscall on this architecture


def _add(ctx: int, action: int, name: str, *cmps: ArgCmp) -> None:
    nr = _nr(name)
    if nr is None:
        return
    array = (ArgCmp * max(1, len(cmps)))(*cmps)
    rc = _lib().seccomp_rule_add_array(ctx, action, nr, len(cmps), array)
    if rc < 0:
        raise OSError(-rc, f"seccomp_rule_add {name}")


def _load(ctx: int) -> None:
    rc = _lib().seccomp_load(ctx)
    _lib().seccomp_release(ctx)
    if rc < 0:
        raise OSError(-rc, "seccomp_load")


def install_mdwe() -> None:
    """systemd's MemoryDenyWriteExecute=yes (seccomp flavour, systemd <= 253)."""
    ctx = _lib().seccomp_init(SCMP_ACT_ALLOW)
    deny = scmp_act_errno(errno.EPERM)
    wx = PROT_WRITE | PROT_EXEC
    _add(ctx, deny, "mmap", ArgCmp(2, SCMP_CMP_MASKED_EQ, wx, wx))
    _add(ctx, deny, "mmap2", ArgCmp(2, SCMP_CMP_MASKED_EQ, wx, wx))
    _add(ctx, deny, "mprotect", ArgCmp(2, SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC))
    _add(ctx, deny, "pkey_mprotect", ArgCmp(2, SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC))
    _add(ctx, deny, "shmat", ArgCmp(2, SCMP_CMP_MASKED_EQ, SHM_EXEC, SHM_EXEC))
    _load(ctx)


def install_address_families(allowed: set[int]) -> None:
    """systemd's RestrictAddressFamilies= allow-list: socket() with another family fails
    with EAFNOSUPPORT (socketpair() and accepted sockets are not filtered, as there)."""
    ctx = _lib().seccomp_init(SCMP_ACT_ALLOW)
    deny = scmp_act_errno(errno.EAFNOSUPPORT)
    scmp_cmp_eq, scmp_cmp_ge = 4, 5
    for family in range(AF_MAX):
        if family not in allowed:
            _add(ctx, deny, "socket", ArgCmp(0, scmp_cmp_eq, family, 0))
    _add(ctx, deny, "socket", ArgCmp(0, scmp_cmp_ge, AF_MAX, 0))
    _load(ctx)


def expand_group(group: str, seen: set[str] | None = None) -> set[str]:
    """The syscalls in a systemd syscall group, nested groups expanded."""
    seen = set() if seen is None else seen
    if group in seen:
        return set()
    seen.add(group)
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter", group],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names: set[str] = set()
    for line in out.splitlines()[1:]:  # the first line is the group itself
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        if item.startswith("@"):
            names |= expand_group(item, seen)
        elif re.fullmatch(r"[a-z0-9_]+", item):
            names.add(item)
    return names


def allowed_syscalls() -> set[str]:
    allow: set[str] = set()
    for group in ALLOW_GROUPS:
        allow |= expand_group(group)
    for group in DENY_GROUPS:
        allow -= expand_group(group)
    return allow


def install_syscall_filter(allowed: set[str], *, kill: bool) -> None:
    default = SCMP_ACT_KILL_PROCESS if kill else scmp_act_errno(errno.EPERM)
    ctx = _lib().seccomp_init(default)
    for name in sorted(allowed):
        _add(ctx, SCMP_ACT_ALLOW, name)
    _load(ctx)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mdwe", action="store_true", help="MemoryDenyWriteExecute=yes")
    parser.add_argument("--syscalls", action="store_true", help="the unit's SystemCallFilter=")
    parser.add_argument("--kill", action="store_true", help="kill on a filtered syscall")
    parser.add_argument(
        "--families", action="store_true", help="RestrictAddressFamilies=" + " ".join(FAMILIES)
    )
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    # Expand the groups (a subprocess) before any filter; load the allow-list last, as
    # it may not allow seccomp() itself.
    allowed = allowed_syscalls() if args.syscalls else None
    if args.mdwe:
        install_mdwe()
    if args.families:
        install_address_families(set(FAMILIES.values()))
    if allowed is not None:
        install_syscall_filter(allowed, kill=args.kill)
    os.execvp(command[0], command)


if __name__ == "__main__":
    sys.exit(main())
