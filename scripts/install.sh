#!/usr/bin/env bash
# Installs card-agent as a hardened systemd service on a kiosk (docs/operations.md).
#
#   sudo scripts/install.sh                 # production: PC/SC reader, card-agent.service
#   sudo scripts/install.sh --demo          # demo/training kiosk: the simulated card
#   sudo scripts/install.sh --wheels DIR    # offline: pip installs from DIR only
#   scripts/install.sh --dry-run            # print what would be done, change nothing
#   DESTDIR=/tmp/root scripts/install.sh    # lay the files into a temporary root only
#
# What it does: a virtualenv in /opt/card-agent/venv with card-agent[pcsc,agent]; the
# `card-agent` command in /usr/local/bin (defaults to /etc/card-agent/config.toml); the
# system user (sysusers.d); /etc/card-agent/config.toml from the example (never over an
# existing one); /var/lib/card-agent (0700); the units; pcscd's polkit rule; then
# daemon-reload and enable --now of the unit. Re-running it upgrades in place.
#
# With DESTDIR: files only, modes as on a real install, no venv (a venv is not
# relocatable: build it on the target), no chown, nothing started; the user is
# created in DESTDIR/etc/passwd by `systemd-sysusers --root` when available.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
DESTDIR=${DESTDIR:-}
PYTHON=${PYTHON:-python3}
PREFIX=/opt/card-agent
DRY_RUN=0
DEMO=0
START=1
WHEELS=""

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --demo) DEMO=1 ;;
    --no-start) START=0 ;;
    --wheels) WHEELS=${2:?--wheels needs a directory}; shift ;;
    --wheels=*) WHEELS=${1#--wheels=} ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

UNIT=card-agent.service
[ "$DEMO" = 1 ] && UNIT=card-agent-demo.service
SYSTEM=1  # act on the running system (users, chown, systemctl)
[ -n "$DESTDIR" ] && SYSTEM=0

say() { printf 'install.sh: %s\n' "$*" >&2; }
run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '+ %s\n' "$*"
  else
    "$@"
  fi
}
# put SRC DEST MODE: install a file with its parent directories, owned by root.
put() {
  run install -D -m "$3" "$1" "$DESTDIR$2"
}

if [ "$SYSTEM" = 1 ] && [ "$DRY_RUN" = 0 ] && [ "$(id -u)" -ne 0 ]; then
  say "needs root (or use --dry-run, or DESTDIR=... for a temporary root)"
  exit 1
fi

# --- preflight warnings (never fatal) ----------------------------------------------
if [ "$SYSTEM" = 1 ]; then
  if [ "$DEMO" = 0 ] && ! command -v pcscd >/dev/null 2>&1 && [ ! -x /usr/sbin/pcscd ]; then
    say "WARNING: pcscd is not installed: sudo apt-get install pcscd"
  fi
  if [ "$DEMO" = 0 ] && dpkg-query -W -f='${Status}' vsmartcard-vpcd 2>/dev/null \
      | grep -q "install ok installed"; then
    say "WARNING: vsmartcard-vpcd is installed: anyone reaching its TCP port can insert a"
    say "         card. Never on a production kiosk: sudo apt purge vsmartcard-vpcd"
  fi
fi

# --- the program ---------------------------------------------------------------------
if [ "$SYSTEM" = 1 ]; then
  run "$PYTHON" -m venv "$PREFIX/venv"
  pip_args=(--disable-pip-version-check --quiet)
  [ -n "$WHEELS" ] && pip_args+=(--no-index --find-links "$WHEELS")
  run "$PREFIX/venv/bin/pip" install "${pip_args[@]}" --upgrade "$SRC[pcsc,agent]"
else
  say "DESTDIR set: no virtualenv (not relocatable); build $PREFIX/venv on the target"
fi
put "$SRC/docs/operations.md" "$PREFIX/share/doc/operations.md" 0644
put "$SRC/systemd/card-agent.service.d/mqtt-broker.conf.example" \
    "$PREFIX/share/examples/mqtt-broker.conf" 0644
put "$SRC/config/card-agent.example.toml" "$PREFIX/share/examples/config.toml" 0644

wrapper=$(mktemp)
trap 'rm -f "$wrapper"' EXIT
cat >"$wrapper" <<EOF
#!/bin/sh
# card-agent CLI (installed by card-agent's scripts/install.sh)
: "\${CARD_AGENT_CONFIG:=/etc/card-agent/config.toml}"
export CARD_AGENT_CONFIG
exec $PREFIX/venv/bin/card-agent "\$@"
EOF
put "$wrapper" /usr/local/bin/card-agent 0755

# --- user, configuration, state ------------------------------------------------------
put "$SRC/systemd/sysusers.d/card-agent.conf" /etc/sysusers.d/card-agent.conf 0644
if [ "$SYSTEM" = 1 ]; then
  run systemd-sysusers /etc/sysusers.d/card-agent.conf
elif command -v systemd-sysusers >/dev/null 2>&1; then
  run mkdir -p "$DESTDIR/etc"
  run systemd-sysusers --root="$DESTDIR"  # reads DESTDIR/etc/sysusers.d
fi

run install -d -m 0755 "$DESTDIR/etc/card-agent"
if [ -e "$DESTDIR/etc/card-agent/config.toml" ]; then
  say "keeping the existing /etc/card-agent/config.toml (the example is in $PREFIX/share/examples)"
else
  put "$SRC/config/card-agent.example.toml" /etc/card-agent/config.toml 0640
  [ "$SYSTEM" = 1 ] && run chown root:card-agent /etc/card-agent/config.toml
fi
run install -d -m 0700 "$DESTDIR/var/lib/card-agent"
[ "$SYSTEM" = 1 ] && run chown card-agent:card-agent /var/lib/card-agent

# --- systemd and polkit --------------------------------------------------------------
put "$SRC/systemd/card-agent.service" /etc/systemd/system/card-agent.service 0644
put "$SRC/systemd/card-agent-demo.service" /etc/systemd/system/card-agent-demo.service 0644
put "$SRC/systemd/polkit/50-card-agent.rules" /etc/polkit-1/rules.d/50-card-agent.rules 0644

if [ "$SYSTEM" = 1 ]; then
  if [ -d /run/systemd/system ]; then
    run systemctl daemon-reload
    if [ "$START" = 1 ]; then
      run systemctl enable --now "$UNIT"
      run systemctl try-restart "$UNIT"  # an upgrade: pick up the new code
    else
      run systemctl enable "$UNIT"
    fi
  else
    say "systemd is not running here: enable $UNIT yourself"
  fi
fi

say "done: $UNIT. Next: edit /etc/card-agent/config.toml, then"
say "      sudo card-agent config check && sudo systemctl restart ${UNIT%.service} && sudo card-agent selftest"
