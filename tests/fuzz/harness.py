"""What every atheris harness here shares: the command line, scratch space, and the
"nothing was logged as an internal error" check.

Nothing of ours is imported here: each harness imports `card`, `simulator` and `agent`
inside `atheris.instrument_imports()`, and a module imported earlier would not be
instrumented (atheris instruments a module's bytecode when it is first imported).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CORPUS = HERE / "corpus"
# Our packages: what the harnesses instrument (coverage feedback comes from these only).
OURS = ("card", "simulator", "agent")


def scratch_dir(name: str) -> Path:
    """A private directory removed at exit; on tmpfs when there is one, because the
    targets fsync (audit log, card state) and a disk fsync per input would dominate."""
    shm = Path("/dev/shm")
    base = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix=f"card-agent-fuzz-{name}-", dir=base))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


class ErrorLogTripwire(logging.Handler):
    """Collects ERROR records of our loggers.

    Some targets catch every exception and answer something well-formed (the simulated
    card answers 6F00, the API an internal_error): for a fuzzer those are crashes too,
    and the log record is the only trace they leave.
    """

    LOGGERS = ("card", "simulator", "agent", "card_agent")

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def install(self) -> ErrorLogTripwire:
        for name in self.LOGGERS:
            logger = logging.getLogger(name)
            logger.addHandler(self)
            # Records must reach this handler whatever the process's logging set-up,
            # and must not also go to stderr for every input through logging's last resort.
            logger.propagate = False
        return self

    def check(self) -> None:
        """Raise (a crash for the fuzzer) if anything was logged at ERROR since the last
        check; the record's exception, when there is one, is chained for the report."""
        if not self.records:
            return
        record, self.records = self.records[0], []
        message = f"{record.name}: {record.getMessage()}"
        cause = record.exc_info[1] if record.exc_info else None
        raise AssertionError(f"logged as an error: {message}") from cause

    def clear(self) -> None:
        self.records = []


ARTIFACTS = REPO / "artifacts" / "fuzz"


def main(
    name: str,
    test_one_input: Callable[[bytes], None],
    *,
    defaults: Sequence[str] = (),
    argv: Sequence[str] | None = None,
) -> None:
    """Run libFuzzer on `test_one_input`. `defaults` are libFuzzer flags (`-max_len=N`)
    used unless the command line gives the same flag. tests/fuzz/dicts/<name>.dict,
    when there is one, is the libFuzzer dictionary (tokens the mutator inserts). Crash
    reproducers go to artifacts/fuzz/<name>/ (gitignored) unless `-artifact_prefix`
    says otherwise."""
    import atheris

    args = list(sys.argv if argv is None else argv)
    given = {a.split("=", 1)[0] for a in args[1:] if a.startswith("-")}
    dictionary = HERE / "dicts" / f"{name}.dict"
    if "-dict" not in given and dictionary.is_file():
        defaults = (*defaults, f"-dict={dictionary}")
    if "-artifact_prefix" not in given:
        crashes = ARTIFACTS / name
        crashes.mkdir(parents=True, exist_ok=True)
        defaults = (*defaults, f"-artifact_prefix={crashes}/")
    extra = [flag for flag in defaults if flag.split("=", 1)[0] not in given]
    atheris.Setup([args[0], *extra, *args[1:]], test_one_input)
    atheris.Fuzz()
