"""Audit log: chain, tamper detection, secret refusal, crash recovery, concurrency."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent.audit import (
    ZERO_HASH,
    AuditLog,
    AuditLogCorrupt,
    AuditLogError,
    verify_audit_log,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


def _fill(path: Path, n: int) -> None:
    with AuditLog(path) as log:
        for i in range(n):
            log.append("sign", client="c-1", origin="https://a.example", title=f"doc {i}")


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


def test_append_and_verify(log_path: Path) -> None:
    with AuditLog(log_path) as log:
        r1 = log.append("sign", client="c-1", title="报关单 42", data_sha256="ab" * 32)
        r2 = log.append("sign", client="c-1", result="ok")
        r3 = log.append("pin_verify", result="error", error="pin_incorrect")
    assert [r.seq for r in (r1, r2, r3)] == [1, 2, 3]
    assert r1.prev == ZERO_HASH
    assert r2.prev == r1.line_sha256
    assert r3.prev == r2.line_sha256
    assert len({r1.id, r2.id, r3.id}) == 3
    assert all(re.fullmatch(r"a-[0-9a-f]{12}", r.id) for r in (r1, r2, r3))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r1.time)

    lines = _lines(log_path)
    assert len(lines) == 3
    assert all(line.endswith(b"\n") for line in lines)
    # Exact line format: sorted keys, no spaces, UTF-8 (not \u escapes), hash of the bytes.
    first = json.loads(lines[0])
    assert (
        lines[0]
        == (
            json.dumps(first, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n"
        ).encode()
    )
    assert "报关单".encode() in lines[0]
    assert hashlib.sha256(lines[0][:-1]).hexdigest() == r1.line_sha256
    assert first["event"] == "sign"
    assert first["id"] == r1.id

    result = verify_audit_log(log_path)
    assert result.ok
    assert result.records == 3
    assert result.first_bad_line is None
    assert not result.torn_tail


def test_empty_log_verifies(log_path: Path) -> None:
    AuditLog(log_path).close()
    assert verify_audit_log(log_path).ok
    assert verify_audit_log(log_path).records == 0
    assert os.stat(log_path).st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    "fields",
    [
        {"pin": "123456"},
        {"PIN": "123456"},
        {"passwd": "x"},
        {"password": "x"},
        {"token": "x"},
        {"new_pin": "1"},
        {"old_pin": "1"},
        {"data": "raw document"},
        {"user_pin": "1"},
        {"extra": {"nested": [{"password": "x"}]}},
        {"seq": 9},
        {"prev": ZERO_HASH},
    ],
)
def test_secret_like_and_reserved_keys_refused(log_path: Path, fields: dict[str, object]) -> None:
    with AuditLog(log_path) as log:
        with pytest.raises(ValueError, match="audit field"):
            log.append("sign", **fields)
        log.append("sign", data_sha256="00" * 32, pin_tries_left=2)  # look-alikes are fine
    assert len(_lines(log_path)) == 1
    assert b"123456" not in log_path.read_bytes()


def test_unserialisable_value_writes_nothing(log_path: Path) -> None:
    with AuditLog(log_path) as log:
        with pytest.raises(ValueError):
            log.append("sign", ratio=float("nan"))
        with pytest.raises(TypeError):
            log.append("sign", blob=b"bytes")
        assert log.append("sign").seq == 1
    assert verify_audit_log(log_path).ok


def test_tampered_byte_in_middle_record(log_path: Path) -> None:
    _fill(log_path, 5)
    lines = _lines(log_path)
    lines[2] = lines[2].replace(b"doc 2", b"doc 9")
    _write_lines(log_path, lines)
    result = verify_audit_log(log_path)
    assert not result.ok
    assert result.first_bad_line == 3
    assert result.reason is not None
    assert result.reason.startswith("prev hash mismatch")
    assert result.records == 2
    assert not result.torn_tail


def test_tampered_prev_field(log_path: Path) -> None:
    _fill(log_path, 5)
    lines = _lines(log_path)
    rec = json.loads(lines[2])
    rec["prev"] = "1" * 64
    text = json.dumps(rec, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    lines[2] = (text + "\n").encode()
    _write_lines(log_path, lines)
    result = verify_audit_log(log_path)
    assert not result.ok
    assert result.first_bad_line == 3
    assert result.reason is not None
    assert result.reason.startswith("prev hash mismatch")


def test_deleted_line(log_path: Path) -> None:
    _fill(log_path, 5)
    lines = _lines(log_path)
    del lines[2]
    _write_lines(log_path, lines)
    result = verify_audit_log(log_path)
    assert not result.ok
    assert result.first_bad_line == 3
    assert result.reason is not None
    assert "seq gap" in result.reason


def test_reordered_lines(log_path: Path) -> None:
    _fill(log_path, 5)
    lines = _lines(log_path)
    lines[1], lines[2] = lines[2], lines[1]
    _write_lines(log_path, lines)
    result = verify_audit_log(log_path)
    assert not result.ok
    assert result.first_bad_line == 2


def test_garbage_middle_line(log_path: Path) -> None:
    _fill(log_path, 4)
    lines = _lines(log_path)
    lines[1] = b"not json at all\n"
    _write_lines(log_path, lines)
    result = verify_audit_log(log_path)
    assert (result.ok, result.first_bad_line, result.reason) == (False, 2, "not JSON")
    assert not result.torn_tail


def test_reopen_continues_chain(log_path: Path) -> None:
    _fill(log_path, 2)
    with AuditLog(log_path) as log:
        assert log.append("sign").seq == 3
    result = verify_audit_log(log_path)
    assert result.ok
    assert result.records == 3


def test_second_writer_refused(log_path: Path) -> None:
    with AuditLog(log_path), pytest.raises(AuditLogError, match="another process"):
        AuditLog(log_path)


def _assert_recovered(log_path: Path, torn: bytes, expected_seq: int) -> None:
    result = verify_audit_log(log_path)
    assert result.ok, result
    quarantined = sorted(log_path.parent.glob(log_path.name + ".torn-*"))
    assert len(quarantined) == 1
    assert quarantined[0].read_bytes() == torn
    last = json.loads(_lines(log_path)[-1])
    assert last["event"] == "log_recovered"
    assert last["seq"] == expected_seq
    assert last["torn_bytes"] == len(torn)
    assert last["torn_file"] == quarantined[0].name


def test_torn_tail_reported_then_recovered(log_path: Path) -> None:
    _fill(log_path, 3)
    torn = b'{"client":"c-1","event":"sign","id":"a-0123'
    with open(log_path, "ab") as f:
        f.write(torn)
    result = verify_audit_log(log_path)
    assert not result.ok
    assert result.torn_tail
    assert result.first_bad_line == 4
    assert result.records == 3
    assert result.reason is not None
    assert "crash tail" in result.reason

    AuditLog(log_path).close()
    _assert_recovered(log_path, torn, expected_seq=4)
    with AuditLog(log_path) as log:  # and the chain goes on from the recovery record
        assert log.append("sign").seq == 5
    assert verify_audit_log(log_path).records == 5


def test_newline_terminated_garbage_tail_recovered(log_path: Path) -> None:
    # What a power cut can leave: the file size was updated, the data block was not.
    _fill(log_path, 2)
    torn = b"\x00" * 100 + b"\n"
    with open(log_path, "ab") as f:
        f.write(torn)
    result = verify_audit_log(log_path)
    assert not result.ok
    assert result.torn_tail
    assert result.first_bad_line == 3
    AuditLog(log_path).close()
    _assert_recovered(log_path, torn, expected_seq=3)


def test_torn_first_record_recovered(log_path: Path) -> None:
    log_path.write_bytes(b'{"event":"si')
    AuditLog(log_path).close()
    _assert_recovered(log_path, b'{"event":"si', expected_seq=1)
    assert json.loads(_lines(log_path)[0])["prev"] == ZERO_HASH


def test_damage_beyond_one_tail_line_refused(log_path: Path) -> None:
    # Two bad trailing lines cannot come from a crash (every record is fsynced before the
    # next is written): refuse rather than quarantine real records.
    _fill(log_path, 2)
    with open(log_path, "ab") as f:
        f.write(b"junk\n{half")
    with pytest.raises(AuditLogCorrupt):
        AuditLog(log_path)
    assert not list(log_path.parent.glob("*.torn-*"))


def test_open_reads_only_the_tail(log_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:
        m.setattr(os, "fsync", lambda fd: None)  # speed only: building a 1 MB log
        with AuditLog(log_path) as log:
            for i in range(5000):
                log.append("sign", title=f"document number {i}", data_sha256="ab" * 32)
    assert log_path.stat().st_size > 1_000_000
    read = 0
    real_pread = os.pread

    def counting_pread(fd: int, n: int, offset: int) -> bytes:
        nonlocal read
        chunk = real_pread(fd, n, offset)
        read += len(chunk)
        return chunk

    monkeypatch.setattr(os, "pread", counting_pread)
    with AuditLog(log_path) as log:
        assert log.append("sign").seq == 5001
    # A few blocks around the tail (last newline, start of the last line), not the file.
    assert read < log_path.stat().st_size / 5


# Records up to ~60 KB: the kernel checks for a fatal signal between pages of one write(),
# so SIGKILL can really leave a partial line (seen in roughly 1 kill in 20 here).
_CHILD = """
import sys
from pathlib import Path
from agent.audit import AuditLog
log = AuditLog(Path(sys.argv[1]))
i = 0
while True:
    i += 1
    log.append("sign", client="c-1", title="t" * (i * 9973 % 60000), result="ok")
"""


def test_sigkill_mid_append_is_recovered(log_path: Path) -> None:
    rng = random.Random(1234)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    torn_seen = 0
    for _ in range(8):
        start_size = log_path.stat().st_size if log_path.exists() else 0
        target = start_size + rng.randint(2_000, 300_000)
        child = subprocess.Popen([sys.executable, "-c", _CHILD, str(log_path)], env=env)
        try:
            deadline = time.monotonic() + 10
            while not log_path.exists() or log_path.stat().st_size < target:
                assert child.poll() is None, "writer died on its own"
                assert time.monotonic() < deadline, "writer made no progress"
                time.sleep(0.001)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        result = verify_audit_log(log_path)
        # Either clean, or only the last line is torn (nothing before it is damaged).
        assert result.ok or (result.torn_tail and result.first_bad_line == result.records + 1)
        torn_seen += result.torn_tail
        AuditLog(log_path).close()
        after = verify_audit_log(log_path)
        assert after.ok
        assert after.records >= result.records
    recovered = [json.loads(line)["event"] for line in _lines(log_path)].count("log_recovered")
    assert recovered == torn_seen


def test_concurrent_appends(log_path: Path) -> None:
    ids: list[str] = []
    with AuditLog(log_path) as log:

        def worker(n: int) -> None:
            for i in range(50):
                ids.append(log.append("sign", worker=n, i=i).id)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    result = verify_audit_log(log_path)
    assert result.ok
    assert result.records == 400
    assert len(set(ids)) == 400
    assert [json.loads(line)["seq"] for line in _lines(log_path)] == list(range(1, 401))


# --- the anchor: what the chain alone cannot show (reliability finding 9) -----------------


def test_an_edited_newest_record_is_caught_by_the_anchor(log_path: Path) -> None:
    _fill(log_path, 4)
    anchor = verify_audit_log(log_path)
    assert anchor.ok
    assert anchor.last_seq == 4
    lines = _lines(log_path)
    edited = lines[-1].replace(b'"doc 3"', b'"doc X"')
    assert edited != lines[-1]
    _write_lines(log_path, [*lines[:-1], edited])
    # Nothing chains to the newest record: the chain alone cannot see the edit...
    assert verify_audit_log(log_path).ok
    # ...the anchor kept elsewhere does.
    result = verify_audit_log(log_path, (anchor.last_seq, anchor.last_sha256))
    assert not result.ok
    assert result.anchor_ok is False
    assert "altered" in (result.anchor_reason or "")


def test_cut_off_records_are_caught_by_the_anchor(log_path: Path) -> None:
    _fill(log_path, 4)
    anchor = verify_audit_log(log_path)
    _write_lines(log_path, _lines(log_path)[:2])
    assert verify_audit_log(log_path).ok
    result = verify_audit_log(log_path, (anchor.last_seq, anchor.last_sha256))
    assert not result.ok
    assert "cut off" in (result.anchor_reason or "")


def test_an_older_anchor_still_matches_a_grown_log(log_path: Path) -> None:
    _fill(log_path, 3)
    anchor = verify_audit_log(log_path)
    with AuditLog(log_path) as log:
        log.append("pin_verify", result="ok")
        assert log.anchor == (4, verify_audit_log(log_path).last_sha256)
    result = verify_audit_log(log_path, (anchor.last_seq, anchor.last_sha256))
    assert result.ok
    assert result.anchor_ok is True


# --- requests and their outcomes ------------------------------------------------------------


def test_queued_outcomes_are_written_and_requests_without_one_reported(log_path: Path) -> None:
    with AuditLog(log_path) as log:
        done = log.append("sign_request", client="c-1", title="a")
        open_request = log.append("sign_request", client="c-1", title="b")
        outcome_id = log.append_later("sign", request=done.id, result="ok")
        assert log.flush(5)
    records = [json.loads(line) for line in _lines(log_path)]
    assert [r["event"] for r in records] == ["sign_request", "sign_request", "sign"]
    assert records[2]["id"] == outcome_id
    result = verify_audit_log(log_path)
    assert result.ok
    assert result.requests_without_outcome == 1
    assert result.request_ids_without_outcome == (open_request.id,)


def test_queued_records_keep_the_chain_with_concurrent_appends(log_path: Path) -> None:
    with AuditLog(log_path) as log:

        def durable() -> None:
            for i in range(50):
                log.append("sign_request", n=i)

        thread = threading.Thread(target=durable)
        thread.start()
        for i in range(50):
            log.append_later("sign", n=i)
        thread.join()
        assert log.flush(10)
    result = verify_audit_log(log_path)
    assert result.ok
    assert result.records == 100


def test_close_writes_what_is_queued(log_path: Path) -> None:
    log = AuditLog(log_path)
    for i in range(20):
        log.append_later("sign", n=i)
    log.close()
    assert verify_audit_log(log_path).records == 20


def test_a_lone_surrogate_never_costs_a_record(log_path: Path) -> None:
    """Reliability finding 4: such a string made `append` raise after the card signed."""
    with AuditLog(log_path) as log:
        record = log.append("sign_request", title="t\ud800")
    line = _lines(log_path)[0]
    line.decode("ascii")  # written \u-escaped: valid UTF-8 JSON
    assert json.loads(line)["title"] == "t\ud800"
    assert record.seq == 1
    assert verify_audit_log(log_path).ok
