"""Fuzz the audit log reader, verifier and crash recovery (agent/audit.py).

Input: a mode byte, then the bytes of an audit log file. Mode bit 0 clear: the bytes
are re-chained first (each line that is a JSON object gets the right `seq` and the
SHA-256 of the line before as `prev`), so the fuzzer also explores logs whose chain is
intact; set: the bytes are the file as they are. Bit 1 set: one line (the rest of
the mode byte says which) is padded past `MAX_LINE_BYTES`, for the long-line paths.

Properties:
- `verify_audit_log` returns a result for any file, never raises; the result is
  consistent (ok exactly when no bad line and no reason; bad lines within the file;
  `records` = the lines before the first bad one);
- `AuditLog(path)` either opens or raises `AuditLogCorrupt`, nothing else, and a refusal
  leaves the file untouched;
- a log that verifies opens without recovery, and stays valid after an append;
- a log whose only fault is its last line (a crash tail) opens, moves exactly that line
  to the quarantine file, logs `log_recovered`, and then verifies;
- a log that does not verify never verifies after the agent opened it and appended:
  damage is never hidden.

    python tests/fuzz/fuzz_audit.py [libFuzzer flags] [corpus dirs]
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `tests.fuzz` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import atheris

from tests.fuzz.harness import OURS, main, scratch_dir

with atheris.instrument_imports(include=list(OURS)):
    from agent.audit import (
        MAX_LINE_BYTES,
        ZERO_HASH,
        AuditLog,
        AuditLogCorrupt,
        AuditVerifyResult,
        verify_audit_log,
    )

WORK = scratch_dir("audit")
RAW, LONG = 0x01, 0x02


def rechain(content: bytes) -> bytes:
    """The same lines, with `seq` and `prev` made right wherever a line is an object."""
    lines = content.split(b"\n")
    out: list[bytes] = []
    prev, seq = ZERO_HASH, 0
    for line in lines:
        try:
            record = json.loads(line.decode("utf-8"))
        except ValueError:
            record = None
        if isinstance(record, dict):
            seq += 1
            record["seq"], record["prev"] = seq, prev
            line = json.dumps(
                record, ensure_ascii=False, sort_keys=True, separators=(",", ":")
            ).encode("utf-8", "surrogatepass")
        out.append(line)
        prev = hashlib.sha256(line).hexdigest()
    return b"\n".join(out)


def pad_line(content: bytes, index: int) -> bytes:
    lines = content.split(b"\n")
    index %= len(lines)
    lines[index] += b" " * (MAX_LINE_BYTES + 1 - len(lines[index]))
    return b"\n".join(lines)


def count_lines(content: bytes) -> int:
    """Lines as the verifier counts them: a last line without newline counts too."""
    return content.count(b"\n") + (0 if content.endswith(b"\n") or not content else 1)


def check_result(result: AuditVerifyResult, lines: int) -> None:
    if result.ok:
        assert result.first_bad_line is None
        assert result.reason is None
        assert not result.torn_tail
        assert result.records == lines, (result, lines)
        return
    assert result.first_bad_line is not None
    assert result.reason
    assert 1 <= result.first_bad_line <= lines, (result, lines)
    assert result.records == result.first_bad_line - 1, result


def test_one_input(data: bytes) -> None:
    if not data:
        return
    mode, content = data[0], data[1:]
    if not mode & RAW:
        content = rechain(content)
    if mode & LONG:
        content = pad_line(content, mode >> 2)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir()
    path = WORK / "audit.log"
    path.write_bytes(content)
    lines = count_lines(content)

    before = verify_audit_log(path)
    check_result(before, lines)
    only_tail = not before.ok and before.torn_tail and before.first_bad_line == lines

    try:
        log = AuditLog(path)
    except AuditLogCorrupt:
        assert not before.ok, "a valid log was refused"
        assert not only_tail, f"a crash tail was refused: {before}"
        assert path.read_bytes() == content, "a refused log was changed"
        assert sorted(p.name for p in WORK.iterdir()) == ["audit.log"]
        return
    with log:
        quarantined = [p for p in WORK.iterdir() if p.name != "audit.log"]
        if before.ok:
            assert quarantined == [], "recovery of a valid log"
            assert path.read_bytes() == content
        if only_tail:
            assert len(quarantined) == 1, quarantined
            torn = quarantined[0].read_bytes()
            assert content.endswith(torn), "quarantine is not the tail"
            assert torn, "nothing quarantined"
            kept = path.read_bytes()
            assert kept.startswith(content[: len(content) - len(torn)])
            assert b'"event":"log_recovered"' in kept.splitlines()[-1]
        log.append("fuzz_check", n=1)
    after = verify_audit_log(path)
    check_result(after, count_lines(path.read_bytes()))
    if before.ok or only_tail:
        assert after.ok, f"{before} -> {after}"
    else:
        assert not after.ok, f"damage hidden: {before} -> {after}"


if __name__ == "__main__":
    main("audit", test_one_input, defaults=("-max_len=8192",))
