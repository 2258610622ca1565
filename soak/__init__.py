"""The soak run (issue 15): `card-agent serve` on the PC/SC backend under a mixed load,
with faults injected on a schedule, for a bounded time; then the books are balanced.

Run it with `.venv/bin/python -m soak` (`--help` for the options); figures and how to
read them are in docs/reliability.md. Modules, each with one job:

- `plan`: when each fault happens (pure; scaled to the duration);
- `children`: the private pcscd, the software card behind vpcd, mosquitto;
- `supervisor`: runs the agent and restarts it like systemd's Restart=on-failure;
- `resources`: RSS and open fds of each agent process, and their growth per hour;
- `recorder`: requests answered, errors by code, latencies;
- `native`, `compat_page`, `load`: the clients (native API, events, pairing, compat);
- `collector`: the MQTT subscriber that plays the fleet back end;
- `faults`: carries out the plan;
- `books`: audit records and telemetry events against what clients were told;
- `report`, `run`, `cli`: the whole run, its printout and exit code.
"""
