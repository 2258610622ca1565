#!/usr/bin/env bash
# Removes what scripts/install.sh installed (docs/operations.md).
#
#   sudo scripts/uninstall.sh            # program, units, polkit rule, sysusers entry
#   sudo scripts/uninstall.sh --purge    # also /etc/card-agent, /var/lib/card-agent
#                                        # (the audit log!) and the card-agent user
#   scripts/uninstall.sh --dry-run       # print what would be done
#   DESTDIR=/tmp/root scripts/uninstall.sh   # in a temporary root (no systemctl)
#
# Without --purge the configuration and the state (audit log, pairings) stay, so a
# reinstall picks them up. Keep a copy of audit.log before purging: it is the record
# of what was signed on this kiosk.
set -euo pipefail

DESTDIR=${DESTDIR:-}
PREFIX=/opt/card-agent
DRY_RUN=0
PURGE=0

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --purge) PURGE=1 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "uninstall.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

SYSTEM=1
[ -n "$DESTDIR" ] && SYSTEM=0
say() { printf 'uninstall.sh: %s\n' "$*" >&2; }
run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '+ %s\n' "$*"
  else
    "$@"
  fi
}

if [ "$SYSTEM" = 1 ] && [ "$DRY_RUN" = 0 ] && [ "$(id -u)" -ne 0 ]; then
  say "needs root (or use --dry-run)"
  exit 1
fi

UNITS=(card-agent.service card-agent-demo.service)
if [ "$SYSTEM" = 1 ] && [ -d /run/systemd/system ]; then
  run systemctl disable --now "${UNITS[@]}" || true
fi

run rm -f \
  "$DESTDIR/etc/systemd/system/card-agent.service" \
  "$DESTDIR/etc/systemd/system/card-agent-demo.service" \
  "$DESTDIR/etc/polkit-1/rules.d/50-card-agent.rules" \
  "$DESTDIR/etc/sysusers.d/card-agent.conf" \
  "$DESTDIR/usr/local/bin/card-agent"
run rm -rf "$DESTDIR$PREFIX"
if [ -d "$DESTDIR/etc/systemd/system/card-agent.service.d" ]; then
  say "leaving the drop-ins in /etc/systemd/system/card-agent.service.d (yours)"
fi

if [ "$PURGE" = 1 ]; then
  run rm -rf "$DESTDIR/etc/card-agent" "$DESTDIR/var/lib/card-agent"
  if [ "$SYSTEM" = 1 ]; then
    if getent passwd card-agent >/dev/null; then run userdel card-agent; fi
    if getent group card-agent >/dev/null; then run groupdel card-agent || true; fi
  fi
else
  say "kept /etc/card-agent and /var/lib/card-agent (audit log, pairings); --purge removes them"
fi

if [ "$SYSTEM" = 1 ] && [ -d /run/systemd/system ]; then
  run systemctl daemon-reload
fi
say "done"
