"""Everything the agent logs, at DEBUG, into a file: leak tests grep it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

LOGGERS = ("card", "agent", "simulator", "practice", "uvicorn")


@contextlib.contextmanager
def captured_logs(path: Path) -> Iterator[None]:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    saved = {name: logging.getLogger(name).level for name in LOGGERS}
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    root.addHandler(handler)  # named loggers propagate to it whatever the root's level
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
