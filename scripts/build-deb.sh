#!/usr/bin/env bash
# Builds the Debian package dist/card-agent_<version>_<arch>.deb from this checkout.
#
#   scripts/build-deb.sh                       # version: pyproject.toml [project].version
#   scripts/build-deb.sh --version 0.1.0~rc1   # any Debian version (tests/system builds
#                                              # a lower one to test upgrades)
#   scripts/build-deb.sh --output DIR          # where the .deb goes (default: dist/)
#   scripts/build-deb.sh --lintian             # then lintian: fails on any tag that
#                                              # packaging/deb/lintian-overrides lacks
#   scripts/build-deb.sh --relock              # first re-pin packaging/deb/requirements.txt
#   scripts/build-deb.sh --fast                # xz -1 instead of -6 (the tests): the same
#                                              # files, a 10% bigger .deb, 4x faster xz
#
# The package holds the application and its pinned Python dependencies
# (packaging/deb/requirements.txt, hash-checked) in a private virtualenv,
# /opt/card-agent/venv, made for Debian's own /usr/bin/python3.11: installing it needs no
# network and never touches the system's Python packages. How and why:
# packaging/deb/README.md.
#
# Reproducible: SOURCE_DATE_EPOCH (default: the last commit's date) for every mtime,
# sorted archive members, root-owned files, .pyc without timestamps. Two builds of the
# same checkout give the same bytes (tests/system checks it).
#
# Needs root, or unprivileged user namespaces (the venv is built at its final path in a
# private mount namespace), and Debian packages python3.11-dev, python3-venv, dpkg-dev
# (scripts/system-deps.sh). The first build downloads the pinned wheels from PyPI into
# $CARD_AGENT_BUILD_CACHE (default ~/.cache/card-agent-build); later ones reuse them.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
PKG=$SRC/packaging/deb
TARGET_PYTHON=/usr/bin/python3.11
OUTPUT=$SRC/dist
VERSION=""
LINTIAN=0
RELOCK=0
XZ_LEVEL=6

usage() { sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; }
die() { printf 'build-deb.sh: %s\n' "$*" >&2; exit 1; }
say() { printf 'build-deb.sh: %s\n' "$*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --version) VERSION=${2:?--version needs a value}; shift ;;
    --version=*) VERSION=${1#--version=} ;;
    --output) OUTPUT=${2:?--output needs a directory}; shift ;;
    --output=*) OUTPUT=${1#--output=} ;;
    --lintian) LINTIAN=1 ;;
    --relock) RELOCK=1 ;;
    --fast) XZ_LEVEL=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "build-deb.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

for tool in dpkg-deb dpkg-shlibdeps unshare flock "$TARGET_PYTHON"; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool missing: run scripts/system-deps.sh"
done
[ -d /opt ] || die "/opt missing: the venv is built under an overlay of /opt"

export LC_ALL=C.UTF-8 TZ=UTC PYTHONHASHSEED=0
umask 022

APP_VERSION=$("$TARGET_PYTHON" -c '
import sys, tomllib
print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$SRC/pyproject.toml")
if [ -z "$VERSION" ]; then
  # PEP 440 pre-releases sort before the release in Debian only with a tilde:
  # 1.2.0rc1 -> 1.2.0~rc1, 1.2.0.dev3 -> 1.2.0~dev3.
  VERSION=$(printf '%s' "$APP_VERSION" | sed -E 's/\.?(a|b|rc|dev)([0-9]+)/~\1\2/g')
fi
printf '%s' "$VERSION" | grep -Eq '^[0-9][A-Za-z0-9.+~-]*$' \
  || die "--version $VERSION is not a Debian version (digits first; letters, digits, . + ~ -)"

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git -C "$SRC" log -1 --format=%ct 2>/dev/null) \
    || die "not a git checkout: set SOURCE_DATE_EPOCH"
fi
export SOURCE_DATE_EPOCH
ARCH=$(dpkg --print-architecture)
CACHE=${CARD_AGENT_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/card-agent-build}
mkdir -p "$CACHE" "$OUTPUT"
OUTPUT=$(cd "$OUTPUT" && pwd)
DEB=$OUTPUT/card-agent_${VERSION}_${ARCH}.deb

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/card-agent-deb.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
STAGE=$WORK/root
say "card-agent $VERSION ($ARCH) from $SRC; SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH"

# --- the sources: tracked and new files as they are in the work tree -----------------
# (never build/, .venv/ or stale egg-info: a build from a fresh clone gets the same.)
mkdir -p "$WORK/src"
if git -C "$SRC" rev-parse --git-dir >/dev/null 2>&1; then
  git -C "$SRC" ls-files -z --cached --others --exclude-standard \
    | (cd "$SRC" && xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh) \
    | tar -C "$SRC" --null -T - -cf - | tar -C "$WORK/src" -xf -
else
  tar -C "$SRC" --exclude=.venv --exclude=build --exclude=dist --exclude='*.egg-info' \
    -cf - . | tar -C "$WORK/src" -xf -
fi

# --- wheels: the pinned dependencies, pyscard built from its sdist, card-agent --------
# The builder is a venv of Debian's python3.11 (pip from python3-venv): wheels are chosen
# and compiled for exactly the interpreter the package runs on.
# The cache is shared by every checkout on the machine: one build at a time fills it.
exec 9>"$CACHE/.lock"
flock 9
BUILDER=$CACHE/builder-$("$TARGET_PYTHON" -c 'import platform; print(platform.python_version())')
if [ ! -x "$BUILDER/bin/python" ]; then
  "$TARGET_PYTHON" -m venv "$BUILDER.tmp" && mv "$BUILDER.tmp" "$BUILDER"
fi
pip() { "$BUILDER/bin/python" -m pip --disable-pip-version-check "$@"; }
if [ "$RELOCK" = 1 ]; then
  "$TARGET_PYTHON" "$PKG/lock.py" --pip "$BUILDER/bin/python" --arch "$ARCH"
fi
export PIP_CONSTRAINT=$PKG/build-constraints.txt

# Download what the cache lacks (pip checks each file against its pinned sha256).
LOCKED=$(grep -E '^[A-Za-z0-9]' "$PKG/requirements.txt")
missing=$(while read -r pin hash _ file; do
  [ -f "$CACHE/downloads/$file" ] \
    && [ "$(sha256sum <"$CACHE/downloads/$file" | cut -d' ' -f1)" = "${hash#--hash=sha256:}" ] \
    || echo "$pin $hash"
done <<<"$LOCKED")
if [ -n "$missing" ]; then
  pip download --quiet --no-deps --require-hashes -r /dev/stdin -d "$CACHE/downloads" <<<"$missing"
fi
mkdir -p "$WORK/wheelhouse"
: >"$WORK/pins.txt"
while read -r pin hash _ file; do
  name=${pin%%==*} version=${pin#*==} sha=${hash#--hash=sha256:}
  echo "$pin" >>"$WORK/pins.txt"
  case "$file" in
    *.whl) ln -s "$CACHE/downloads/$file" "$WORK/wheelhouse/$file" ;;
    *)  # an sdist (pyscard: no manylinux wheel): compiled once per sdist hash, with
        # -g0 so that no build path ends up in the binary.
      built=$CACHE/built/$name-$version-$sha
      if ! ls "$built"/*.whl >/dev/null 2>&1; then
        say "building $name $version from its sdist"
        CFLAGS="-g0" pip wheel --quiet --no-deps --no-binary "$name" \
          -w "$built.tmp" "$CACHE/downloads/$file"
        rm -rf "$built" && mv "$built.tmp" "$built"
      fi
      ln -s "$built"/*.whl "$WORK/wheelhouse/" ;;
  esac
done <<<"$LOCKED"
flock -u 9
pip wheel --quiet --no-deps -w "$WORK/wheelhouse" "$WORK/src"
echo "card-agent==$APP_VERSION" >>"$WORK/pins.txt"

# --- the tree ------------------------------------------------------------------------
if [ "$(id -u)" = 0 ]; then
  NS=(unshare --mount --propagation private)
else
  NS=(unshare --user --map-root-user --mount --propagation private)
fi
"${NS[@]}" bash "$PKG/venv-at-final-path.sh" \
  "$STAGE" "$WORK/wheelhouse" "$WORK/pins.txt" "$BUILDER/bin/python" "$WORK/src"
SITE=$STAGE/opt/card-agent/venv/lib/python3.11/site-packages
[ -f "$SITE/agent/__init__.py" ] || die "the venv has no agent package"

put() { install -D -m "$3" "$1" "$STAGE$2"; }  # put SRC DEST MODE
S=$WORK/src
put "$PKG/card-agent.wrapper" /usr/bin/card-agent 0755
put "$S/systemd/card-agent.service" /lib/systemd/system/card-agent.service 0644
put "$S/systemd/card-agent-demo.service" /lib/systemd/system/card-agent-demo.service 0644
put "$S/systemd/sysusers.d/card-agent.conf" /usr/lib/sysusers.d/card-agent.conf 0644
put "$S/systemd/tmpfiles.d/card-agent.conf" /usr/lib/tmpfiles.d/card-agent.conf 0644
put "$S/systemd/polkit/50-card-agent.rules" /usr/share/polkit-1/rules.d/50-card-agent.rules 0644
put "$S/config/card-agent.example.toml" /etc/card-agent/config.toml 0640
# The units' Documentation= and the docs' own references point here.
put "$S/docs/operations.md" /opt/card-agent/share/doc/operations.md 0644
put "$S/config/card-agent.example.toml" /opt/card-agent/share/examples/config.toml 0644
put "$S/systemd/card-agent.service.d/mqtt-broker.conf.example" \
  /opt/card-agent/share/examples/mqtt-broker.conf 0644
# The kiosk's Chromium policy and the extension's update manifest (docs/extension.md).
put "$S/examples/kiosk/chromium-policy.json" /opt/card-agent/share/examples/chromium-policy.json 0644
put "$S/examples/kiosk/updates.xml" /opt/card-agent/share/examples/updates.xml 0644
# The browser extension, unpacked (docs/extension.md: load it, or pack it into a .crx).
(cd "$S/extension" && find . -type f) | sort | while read -r f; do
  put "$S/extension/$f" "/opt/card-agent/extension/${f#./}" 0644
done

DOC=/usr/share/doc/card-agent
put "$S/README.md" "$DOC/README.md" 0644
for f in "$S"/docs/*.md; do put "$f" "$DOC/$(basename "$f")" 0644; done
LAST_YEAR=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y)
FIRST_YEAR=$(git -C "$SRC" log --format=%cd --date=format:%Y 2>/dev/null | tail -n1)
YEARS=${FIRST_YEAR:-$LAST_YEAR}
[ "$YEARS" = "$LAST_YEAR" ] || YEARS="$YEARS-$LAST_YEAR"
"$TARGET_PYTHON" "$PKG/copyright.py" "$SITE" "$YEARS" >"$WORK/copyright"
put "$WORK/copyright" "$DOC/copyright" 0644
COMMIT=$(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo unknown)
cat >"$WORK/changelog" <<EOF
card-agent ($VERSION) unstable; urgency=medium

  * Built from card-agent $APP_VERSION, commit $COMMIT (scripts/build-deb.sh).

 -- $(sed -n 's/^Maintainer: //p' "$PKG/control.in")  $(date -u -R -d "@$SOURCE_DATE_EPOCH")
EOF
put "$WORK/changelog" "$DOC/changelog" 0644
put "$PKG/lintian-overrides" /usr/share/lintian/overrides/card-agent 0644
# Debian policy: manual pages and documentation over 4 kB are gzipped (-n: no name or
# time in the header).
gzip -9n "$STAGE/usr/share/man/man1/card-agent.1" "$STAGE$DOC/changelog"
find "$STAGE$DOC" -name '*.md' -size +4k -exec gzip -9n {} +

# --- DEBIAN/ -------------------------------------------------------------------------
install -d -m 0755 "$STAGE/DEBIAN"
for script in postinst prerm postrm; do
  install -m 0755 "$PKG/maintscripts/$script" "$STAGE/DEBIAN/$script"
done
echo /etc/card-agent/config.toml >"$STAGE/DEBIAN/conffiles"

# Shared-library dependencies of every ELF object in the venv (dpkg-shlibdeps wants a
# debian/control to read). The manylinux wheels' vendored libraries are found through
# their RPATH; objects dlopen()ed at run time (libpcsclite.so.1 by pyscard) are in
# control.in by hand.
mkdir -p "$WORK/shlibs/debian"
printf 'Source: card-agent\n\nPackage: card-agent\nArchitecture: any\n' \
  >"$WORK/shlibs/debian/control"
mapfile -t elves < <(find "$STAGE/opt" -type f \( -name '*.so' -o -name '*.so.*' \) | sort)
SHLIBS=$(cd "$WORK/shlibs" && dpkg-shlibdeps -O --ignore-missing-info -e"${elves[@]}" \
  2>"$WORK/shlibdeps.log" | sed -n 's/^shlibs:Depends=//p') \
  || { cat "$WORK/shlibdeps.log" >&2; die "dpkg-shlibdeps failed"; }

# Installed-Size as dpkg-gencontrol counts it: KiB per file, rounded up, 1 per other entry.
SIZE=$(find "$STAGE" -path "$STAGE/DEBIAN" -prune -o -printf '%y %s\n' \
  | awk '$1 == "f" { kb += int(($2 + 1023) / 1024); next } { kb += 1 } END { print kb }')
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@SIZE@/$SIZE/" \
  -e "s/@SHLIBS@/$SHLIBS/" "$PKG/control.in" >"$STAGE/DEBIAN/control"
(cd "$STAGE" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z \
  | xargs -0 md5sum) >"$STAGE/DEBIAN/md5sums"
chmod 0644 "$STAGE/DEBIAN/control" "$STAGE/DEBIAN/conffiles" "$STAGE/DEBIAN/md5sums"

# --- normalise and pack --------------------------------------------------------------
find "$STAGE" -type d -exec chmod 0755 {} +
find "$STAGE" -exec touch --no-dereference --date="@$SOURCE_DATE_EPOCH" {} +
dpkg-deb --root-owner-group -Zxz -z"$XZ_LEVEL" --build "$STAGE" "$DEB" >/dev/null
say "built $DEB ($(du -h "$DEB" | cut -f1), sha256 $(sha256sum "$DEB" | cut -c1-16)..., ${SECONDS} s)"

if [ "$LINTIAN" = 1 ]; then
  command -v lintian >/dev/null || die "lintian missing: run scripts/system-deps.sh"
  # Errors and warnings fail the build; the overrides shipped in the package say why
  # each remaining tag is expected.
  lintian --fail-on error,warning --display-info "$DEB"
fi
echo "$DEB"
