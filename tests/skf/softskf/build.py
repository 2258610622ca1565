"""Compiles softskf.c into a shared library with the system compiler and OpenSSL 3.

The result is cached in `build/softskf/` under a name that carries a hash of the source,
the flags and the compiler, so a changed source is rebuilt and an unchanged one is not.
A file lock serialises concurrent builds; the library is written under a temporary name
and renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Literal

Variant = Literal["full", "no-events"]

SOURCE = Path(__file__).with_name("softskf.c")
BUILD_DIR = Path(__file__).resolve().parents[3] / "build" / "softskf"
_VARIANT_FLAGS: dict[str, tuple[str, ...]] = {
    "full": (),
    "no-events": ("-DSOFTSKF_NO_DEV_EVENTS",),  # a library without SKF_WaitForDevEvent
}
_CFLAGS = ("-shared", "-fPIC", "-O2", "-g", "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden")


class BuildError(RuntimeError):
    pass


def _compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise BuildError("no C compiler (cc/gcc) on PATH: run scripts/system-deps.sh")
    return cc


def _libcrypto_flags() -> tuple[list[str], list[str]]:
    pkg_config = shutil.which("pkg-config")
    if pkg_config:
        found = subprocess.run(
            [pkg_config, "--cflags", "--libs", "libcrypto"],
            capture_output=True,
            text=True,
            check=False,
        )
        if found.returncode == 0:
            flags = shlex.split(found.stdout)
            libs = [f for f in flags if f.startswith("-l")]
            return [f for f in flags if f not in libs], libs
    return [], ["-lcrypto"]


def build_softskf(variant: Variant = "full", build_dir: Path = BUILD_DIR) -> Path:
    """The path of the compiled library, building it if the source or flags changed."""
    cc = _compiler()
    cflags, libs = _libcrypto_flags()
    command = [cc, *_CFLAGS, *_VARIANT_FLAGS[variant], *cflags]
    digest = hashlib.sha256(SOURCE.read_bytes())
    digest.update("\0".join([*command, *libs]).encode())
    target = build_dir / f"libsoftskf-{variant}-{digest.hexdigest()[:16]}.so"
    if target.exists():
        return target
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():  # built by someone else while we waited
            return target
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        result = subprocess.run(
            [*command, str(SOURCE), "-o", str(tmp), *libs, "-lpthread"],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        if result.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise BuildError(
                f"building softskf ({variant}) failed:\n{shlex.join(result.args)}\n{result.stderr}"
            )
        os.replace(tmp, target)
    return target
