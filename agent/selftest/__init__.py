"""`card-agent selftest`: is this kiosk ready to sign?

Checks (agent.selftest.checks, one module per area) are small registered units
(agent.selftest.registry) run in a fixed order over one `SelftestContext`; each ends
pass / warn / fail (or skip, which never counts) with a one-line message and, unless it
passed, a one-line fix hint. Exit code (and `report["exit_code"]`): 0 all passed,
1 warnings only, 2 at least one failure.

The card is reached through a `CardAccess` (`report["mode"]`):
  * "in-agent": the running agent's own card service (the MQTT remote command,
    `ServiceAccess.remote`): no second open of the reader;
  * "agent": the CLI while the agent answers on its port, through its API;
  * "direct": the agent is not running: the CLI's own card service;
  * "none": no check needed the card.

Nothing here spends a PIN try unless a `SignRequest` is given, and even then never one
of the last `security.pin_floor` tries (the card service refuses). The report holds no
PIN, no holder name and only the masked card number: it may travel to telemetry.
"""

from agent.selftest import checks as _checks  # registers the checks
from agent.selftest.context import SelftestContext, SignRequest
from agent.selftest.registry import registered
from agent.selftest.report import CheckResult, format_table, invalid_config_report
from agent.selftest.runner import ProgressCallback, run_selftest

del _checks

CHECK_IDS = tuple(spec.id for spec in registered())

__all__ = [
    "CHECK_IDS",
    "CheckResult",
    "ProgressCallback",
    "SelftestContext",
    "SignRequest",
    "format_table",
    "invalid_config_report",
    "run_selftest",
]
