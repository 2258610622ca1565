#!/bin/sh
# Runs in the test rootfs after the package is installed and before the first boot
# (tests/system/test_service.py): the operator's edits to the configuration, and the
# test-only pieces (a simulated card behind vpcd, pcsc-lite's polkit actions).
set -eu
VENV=/opt/card-agent/venv
cfg=/etc/card-agent/config.toml

# The operator's edits, which the upgrade must keep: the extension's origin, the CA
# bundle the card must chain to, and a demo kiosk (vpcd's virtual readers).
sed -i \
  -e 's|^allowed_origins = \[\]|allowed_origins = ["chrome-extension://abcdefghijklmnopabcdefghijklmnop"]|' \
  -e 's|^# ca_bundle = "/etc/card-agent/eport-ca.pem"|ca_bundle = "/etc/card-agent/eport-ca.pem"|' \
  -e 's|^demo = false |demo = true  |' \
  "$cfg"
printf '\n# edited by the card-agent system test\n' >>"$cfg"
grep -q '^allowed_origins = \["chrome-extension://' "$cfg"
grep -q '^ca_bundle = "/etc/card-agent/eport-ca.pem"' "$cfg"
grep -q '^demo = true' "$cfg"

# The simulated card's keys, and its CA as the kiosk's CA bundle.
install -d -m 0700 /var/lib/card-sim
"$VENV/bin/python" -c 'from simulator.card_os import SimulatedCard
SimulatedCard.create("legal-person-sm2", state_path="/var/lib/card-sim/card.json")'
"$VENV/bin/card-sim" export-ca --state /var/lib/card-sim/card.json -o /etc/card-agent/eport-ca.pem
install -m 0644 /srv/test/files/card-sim-vpcd.service /etc/systemd/system/
systemctl enable card-sim-vpcd.service

# Debian 12's pcscd is built without polkit and ships no polkit actions; these are
# pcsc-lite's own (upstream defaults), so that `pkcheck` can ask the real polkitd what
# it answers pcscd builds that do ask it, with the package's rule loaded.
install -D -m 0644 /srv/test/files/org.debian.pcsc-lite.policy \
  /usr/share/polkit-1/actions/org.debian.pcsc-lite.policy
