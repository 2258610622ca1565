#!/usr/bin/env bash
# Installs the Debian packages card-agent's tests and PC/SC path need. Idempotent:
# does nothing when everything is already there. Needs root (or sudo).
set -euo pipefail

PKGS=(pcscd libpcsclite-dev vsmartcard-vpcd pcsc-tools opensc swig openssl
      mosquitto mosquitto-clients chromium fonts-noto-cjk
      systemd libseccomp2   # tests/ops: systemd-analyze; the unit's seccomp filters
      gcc libc6-dev libssl-dev pkg-config  # tests/skf: softskf, built against OpenSSL 3
      # scripts/build-deb.sh: the package (dpkg-deb, lintian), its private venv built
      # for Debian's own python3.11 (pyscard compiles against its headers)
      dpkg-dev lintian python3.11-dev python3-venv
      # tests/system: a bookworm rootfs booted under systemd-nspawn
      mmdebstrap systemd-container debian-archive-keyring)

# Node.js and npm for the extension's checks: any install will do (the machine image may
# bring its own); Debian's otherwise.
command -v node >/dev/null && command -v npm >/dev/null || PKGS+=(nodejs npm)
# unshare (util-linux) for the kiosk-start tests' private mount namespace.
PKGS+=(util-linux)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "need root to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
echo "installing Debian packages: ${missing[*]}" >&2
# Wait for a concurrent apt/dpkg (another checkout's set-up) instead of failing on its lock.
APT=(apt-get -o DPkg::Lock::Timeout=600)
$SUDO "${APT[@]}" update -qq
DEBIAN_FRONTEND=noninteractive $SUDO "${APT[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
