#!/usr/bin/env bash
# Builds /opt/card-agent/venv at its final path, in a private mount namespace.
#
#   venv-at-final-path.sh STAGE WHEELHOUSE PINS BUILDER_PYTHON SRC
#
# Run by scripts/build-deb.sh under `unshare --mount` (root) or `unshare --user
# --map-root-user --mount`: the mounts below exist only in that namespace and vanish
# with it, so the build host's /opt is never written to.
#
# Why at the final path: a virtualenv is not relocatable. Its scripts' shebangs
# (`#!/opt/card-agent/venv/bin/python`), pyvenv.cfg and the .pyc files' recorded source
# paths all name the directory it was made in. So /opt gets a throw-away overlay, the
# staging tree's opt/card-agent is bind-mounted at /opt/card-agent, and the venv is made
# there with Debian's /usr/bin/python3.11: what lands in STAGE is byte for byte what
# dpkg will unpack on the kiosk.
set -euo pipefail

STAGE=$1 WHEELHOUSE=$2 PINS=$3 BUILDER=$4 SRC=$5
PREFIX=/opt/card-agent
VENV=$PREFIX/venv
TARGET_PYTHON=/usr/bin/python3.11

scratch=$(dirname "$STAGE")/opt-overlay
mkdir -p "$scratch/upper" "$scratch/work" "$STAGE$PREFIX"
mount -t overlay overlay -o "lowerdir=/opt,upperdir=$scratch/upper,workdir=$scratch/work" /opt
mkdir -p "$PREFIX"
mount --bind "$STAGE$PREFIX" "$PREFIX"

# No pip, setuptools or activate-time tooling in the shipped venv: the build host's
# pip installs into it (--python) and nothing installs into it on the kiosk.
"$TARGET_PYTHON" -m venv --without-pip "$VENV"
rmdir "$VENV/include/python3.11" "$VENV/include"  # for building C extensions: not here
# --no-index: only the hash-checked wheels from WHEELHOUSE; --no-compile: the .pyc are
# made below, reproducibly; names (not file paths) so that pip records no direct_url.json
# (which would hold this build's temporary path).
"$BUILDER" -m pip --python "$VENV/bin/python" install \
  --quiet --disable-pip-version-check --no-index --find-links "$WHEELHOUSE" \
  --only-binary :all: --no-deps --no-compile -r "$PINS"

# The man page, from the installed CLI's own --help texts.
mkdir -p "$STAGE/usr/share/man/man1"
"$VENV/bin/python" "$SRC/packaging/deb/manpage.py" >"$STAGE/usr/share/man/man1/card-agent.1"

# Byte code, reproducibly: unchecked-hash .pyc carry a hash of their source instead of
# its mtime (dpkg owns these files: they never change under the interpreter, and the
# unit runs with PYTHONDONTWRITEBYTECODE=1). Serial compile: marshal output is stable
# within one process walking the files in a fixed order.
"$VENV/bin/python" -m compileall -q -f --invalidation-mode unchecked-hash "$VENV/lib" >/dev/null
