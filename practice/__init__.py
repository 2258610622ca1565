"""A practice Single Window for kiosks: the Sinosure small-business policy claim, step by
step, with the real card (through the browser extension or the official protocol).

`card-agent practice` serves it on 127.0.0.1 (default port 17380). It doubles as a
training mode for kiosk staff. It holds no secrets: every signature is verified here
against the certificate the card presented at login, and listed at the end.
"""

from practice.cli import practice_command

__all__ = ["practice_command"]
