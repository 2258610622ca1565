"""A failed card call as a selftest outcome, with the fix for its error code."""

from __future__ import annotations

from agent.access import CardCommandError
from agent.selftest.registry import Outcome

_HINTS = {
    "reader_service_down": "start pcscd: sudo systemctl start pcscd.socket",
    "reader_missing": "connect the card reader (`pcsc_scan` shows what pcscd sees)",
    "reader_busy": "another program holds the card: close it, or stop it "
    "(`sudo systemctl stop card-agent` only when testing the card directly)",
    "card_missing": "insert the E-Port card",
    "card_removed": "leave the card in the reader during the selftest",
    "unsupported_card": "not a card this kiosk knows: insert the holder's E-Port card; "
    "for a new kind of card, `card-agent card identify` makes the report to send",
    "config_invalid": "card-agent config check says what to fix",
    "busy": "the agent is busy signing: run the selftest again in a moment",
    "timeout": "the card did not answer: re-insert it; if that repeats, change the reader",
    "card_timeout": "the card did not answer: re-insert it; if that repeats, change the reader",
    "agent_unreachable": "the agent stopped during the selftest: journalctl -u card-agent",
    "agent_unexpected": "another program answers on the agent's port: free it or change "
    "server.port",
    "audit_unavailable": "an agent that does not answer holds the audit log, or the log is "
    "damaged: systemctl status card-agent; card-agent audit verify",
    "permission_denied": "run as root or as the card-agent user (sudo card-agent selftest)",
}


def card_failure(exc: CardCommandError, what: str) -> Outcome:
    return Outcome(
        "fail",
        f"{what}: {exc.message} ({exc.code})",
        _HINTS.get(exc.code, "re-insert the card and run the selftest again"),
        {"code": exc.code},
    )
