"""The card side of vsmartcard's vpcd: puts a `VirtualCard` into a real pcscd reader.

vpcd is a pcscd reader driver that listens on TCP (127.0.0.1:35963 is reader
"Virtual PCD 00 00", 35964 is "Virtual PCD 00 01"). The card is the TCP *client*:
connecting inserts the card, closing the socket removes it.

Wire format, both directions: a 2-byte big-endian length, then the payload. A 1-byte
payload from vpcd is a control (00 power off, 01 power on, 02 reset, 04 get ATR); only
get-ATR is answered. Anything longer is a command APDU, answered with the R-APDU.

Latency: vpcd writes the length and the body of a frame in separate segments. A card
that lets Nagle's algorithm and delayed ACKs interact stalls ~40 ms per APDU (about
21 APDU/s measured). We set TCP_NODELAY, re-arm TCP_QUICKACK around every read (Linux
clears it after use) and write each frame with one `sendall`.

Never log APDU bytes here: VERIFY carries the PIN. The INS byte is enough to debug.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import socket
import struct
import threading
from collections.abc import Callable

from card.sw import StatusWord
from simulator.virtual import VirtualCard

log = logging.getLogger(__name__)

VPCD_HOST = "127.0.0.1"  # vpcd is IPv4 only; "localhost" may resolve to ::1 first
VPCD_PORT = 35963  # slot n of a vpcd reader listens on VPCD_PORT + n

CTRL_POWER_OFF = 0x00
CTRL_POWER_ON = 0x01
CTRL_RESET = 0x02
CTRL_GET_ATR = 0x04

_MAX_FRAME = 0xFFFF
_SW_NO_PRECISE_DIAGNOSIS = int(StatusWord.NO_PRECISE_DIAGNOSIS).to_bytes(2, "big")
# Linux only; elsewhere we live with delayed ACKs (the link still works, just slower).
_TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)

ApduPredicate = Callable[[bytes], bool]


class _LinkClosed(Exception):
    """The peer closed the connection or the socket was shut down under us."""


class _End(enum.Enum):
    PEER_CLOSED = enum.auto()  # vpcd went away, or remove()/stop() shut the socket
    FAULT_REMOVED = enum.auto()  # a fault-injection hook pulled the card


class _FrameSocket:
    """Exact, low-latency framing over one connected TCP socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._quickack()

    def _quickack(self) -> None:
        if _TCP_QUICKACK is not None:
            # A socket already shut down fails here; the next recv reports that.
            with contextlib.suppress(OSError):
                self._sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)

    def _read_exact(self, n: int) -> bytes:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            # Re-arm before the read (so our ACK for this segment is not delayed) and
            # after it (setting QUICKACK flushes an ACK the kernel is still holding).
            self._quickack()
            try:
                r = self._sock.recv_into(view[got:])
            except OSError as e:
                raise _LinkClosed(str(e)) from e
            if r == 0:
                raise _LinkClosed("peer closed the connection")
            got += r
            self._quickack()
        return bytes(buf)

    def read_frame(self) -> bytes:
        (length,) = struct.unpack(">H", self._read_exact(2))
        return self._read_exact(length) if length else b""

    def write_frame(self, payload: bytes) -> None:
        if len(payload) > _MAX_FRAME:
            raise ValueError(f"frame of {len(payload)} bytes exceeds {_MAX_FRAME}")
        try:
            # One call per frame: two small writes would hit Nagle on the second one.
            self._sock.sendall(struct.pack(">H", len(payload)) + payload)
        except OSError as e:
            raise _LinkClosed(str(e)) from e


class VpcdLink:
    """Connects one `VirtualCard` to one vpcd reader slot, on a daemon thread.

    "Inserted" is what the owner wants; "connected" is whether vpcd has accepted the
    link (it accepts on its presence poll, every ~0.4 s). While inserted, a lost
    connection (pcscd restarted) is retried with capped exponential backoff.

    Every card method is called on the link thread only, so the card needs no locks.
    """

    def __init__(
        self,
        card: VirtualCard,
        *,
        host: str = VPCD_HOST,
        port: int = VPCD_PORT,
        backoff_initial: float = 0.05,
        backoff_max: float = 1.0,
        connect_timeout: float = 2.0,
    ) -> None:
        self._card = card
        self._addr = (host, port)
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._connect_timeout = connect_timeout

        self._cond = threading.Condition()
        # All fields below are guarded by _cond.
        self._want_inserted = False
        self._stopping = False
        self._sock: socket.socket | None = None
        self._accepted = False  # vpcd sent at least one frame on the current socket
        self._drop_after: int | None = None
        self._drop_when: ApduPredicate | None = None
        self._apdus = 0
        self._errors = 0
        self._connections = 0

        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------

    def start(self, *, inserted: bool = True) -> None:
        """Start the link thread; with `inserted` the card goes in right away."""
        _check_atr(self._card.atr)
        with self._cond:
            if self._thread is not None:
                raise RuntimeError("VpcdLink already started")
            self._want_inserted = inserted
            self._thread = threading.Thread(
                target=self._run, name=f"vpcd-link-{self._addr[1]}", daemon=True
            )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Remove the card and end the thread. Idempotent."""
        with self._cond:
            self._stopping = True
            self._want_inserted = False
            self._shutdown_socket()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def insert(self) -> None:
        """Insert the card (connect to vpcd). Returns at once; see `wait_connected`."""
        _check_atr(self._card.atr)
        with self._cond:
            if self._stopping:
                raise RuntimeError("VpcdLink is stopped")
            self._want_inserted = True
            self._cond.notify_all()

    def remove(self, timeout: float = 2.0) -> None:
        """Pull the card: close the connection. When this returns the socket is gone
        (pcscd notices at its next presence poll)."""
        with self._cond:
            self._want_inserted = False
            self._shutdown_socket()
            self._cond.notify_all()
            if threading.current_thread() is not self._thread:
                self._cond.wait_for(lambda: self._sock is None, timeout)

    def wait_connected(self, timeout: float) -> bool:
        """Wait until vpcd has accepted the link (it has talked to the card)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._accepted, timeout)

    def wait_disconnected(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._sock is None, timeout)

    # --- fault injection -----------------------------------------------------------

    def remove_after(self, n_apdus: int) -> None:
        """Answer the next `n_apdus` APDUs, then pull the card on the one after, without
        answering it: the host sees a removal in the middle of an exchange."""
        if n_apdus < 0:
            raise ValueError("n_apdus must be >= 0")
        with self._cond:
            self._drop_after = n_apdus

    def remove_when(self, predicate: ApduPredicate | None) -> None:
        """Pull the card instead of answering the first APDU for which `predicate` is
        true (e.g. `lambda a: a[1] == 0x2A` = during the signature). One-shot; None
        clears it. The predicate runs on the link thread."""
        with self._cond:
            self._drop_when = predicate

    # --- observation ---------------------------------------------------------------

    @property
    def apdus_handled(self) -> int:
        """Command APDUs answered (including 6F00 answers to a failing card)."""
        with self._cond:
            return self._apdus

    @property
    def process_errors(self) -> int:
        """How many times the card's process() raised."""
        with self._cond:
            return self._errors

    @property
    def connections(self) -> int:
        """How many connections vpcd accepted (insertions, including reconnects)."""
        with self._cond:
            return self._connections

    @property
    def inserted(self) -> bool:
        with self._cond:
            return self._want_inserted

    @property
    def connected(self) -> bool:
        with self._cond:
            return self._accepted

    # --- link thread ---------------------------------------------------------------

    def _shutdown_socket(self) -> None:
        # Caller holds _cond. shutdown() (not close()) wakes the link thread's blocking
        # recv with EOF; the link thread owns the close.
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def _run(self) -> None:
        backoff = self._backoff_initial
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping or self._want_inserted)
                if self._stopping:
                    return
            sock = self._connect()
            if sock is None:
                self._pause(backoff)
                backoff = min(backoff * 2, self._backoff_max)
                continue
            with self._cond:
                if self._stopping or not self._want_inserted:
                    sock.close()
                    continue
                self._sock = sock
            end = _End.PEER_CLOSED
            try:
                # create_connection's timeout is for the handshake only: frames may be
                # minutes apart when pcscd idles; remove() wakes us with shutdown().
                sock.settimeout(None)
                end = self._serve(_FrameSocket(sock))
            except Exception:
                log.exception("vpcd link on port %d failed", self._addr[1])
            finally:
                with self._cond:
                    was_accepted = self._accepted
                    self._sock = None
                    self._accepted = False
                    if end is _End.FAULT_REMOVED:
                        self._want_inserted = False
                    self._cond.notify_all()
                sock.close()
            if was_accepted:
                backoff = self._backoff_initial  # a healthy session ended: retry fast
            elif self.inserted:
                # vpcd accepted the TCP handshake but never talked (or closed at once):
                # treat it like a refused connection.
                self._pause(backoff)
                backoff = min(backoff * 2, self._backoff_max)

    def _connect(self) -> socket.socket | None:
        try:
            return socket.create_connection(self._addr, timeout=self._connect_timeout)
        except OSError as e:
            log.debug("vpcd %s:%d not reachable: %s", *self._addr, e)
            return None

    def _pause(self, seconds: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._stopping or not self._want_inserted, seconds)

    def _serve(self, link: _FrameSocket) -> _End:
        try:
            while True:
                frame = link.read_frame()
                self._mark_accepted()
                if len(frame) == 1:
                    if not self._control(link, frame[0]):
                        return _End.FAULT_REMOVED
                elif frame:
                    if self._fault_fires(frame):
                        log.info("vpcd link: pulling the card (fault injection)")
                        return _End.FAULT_REMOVED
                    response = self._process(frame)
                    with self._cond:
                        # Count before sending: once the host has the answer, the
                        # counter must already show it.
                        self._apdus += 1
                    link.write_frame(response)
        except _LinkClosed as e:
            log.debug("vpcd link on port %d closed: %s", self._addr[1], e)
            return _End.PEER_CLOSED

    def _mark_accepted(self) -> None:
        with self._cond:
            if not self._accepted:
                self._accepted = True
                self._connections += 1
                self._cond.notify_all()

    def _control(self, link: _FrameSocket, code: int) -> bool:
        """Handle a 1-byte control; False means drop the link."""
        if code == CTRL_GET_ATR:
            atr = self._card.atr
            if not atr:
                # An empty ATR makes vpcd eject the card anyway; say so loudly instead.
                log.error("virtual card has an empty ATR; removing it")
                return False
            link.write_frame(atr)
            return True
        action = {
            CTRL_POWER_OFF: self._card.power_off,
            CTRL_POWER_ON: self._card.power_on,
            CTRL_RESET: self._card.reset,
        }.get(code)
        if action is None:
            log.warning("vpcd sent unknown control byte %02X; ignored", code)
            return True
        try:
            action()
        except Exception:
            log.exception("virtual card failed on control %02X", code)
        return True

    def _fault_fires(self, apdu: bytes) -> bool:
        with self._cond:
            predicate = self._drop_when
            if self._drop_after is not None:
                if self._drop_after == 0:
                    self._drop_after = None
                    return True
                self._drop_after -= 1
        if predicate is None:
            return False
        try:
            fires = bool(predicate(apdu))
        except Exception:
            log.exception("remove_when predicate raised; ignoring it")
            return False
        if fires:
            with self._cond:
                self._drop_when = None
        return fires

    def _process(self, apdu: bytes) -> bytes:
        ins = apdu[1] if len(apdu) > 1 else -1
        try:
            response = self._card.process(apdu)
            if not 2 <= len(response) <= _MAX_FRAME:
                raise ValueError(f"card returned a {len(response)}-byte response")
            return bytes(response)
        except Exception:
            # The card is buggy, not the link: answer like a real card's OS would.
            log.exception("virtual card failed on INS %02X; answering 6F00", ins)
            with self._cond:
                self._errors += 1
            return _SW_NO_PRECISE_DIAGNOSIS


def _check_atr(atr: bytes) -> None:
    # ISO 7816-3: TS + T0 at least, 33 bytes at most. vpcd ejects on an empty ATR.
    if not 2 <= len(atr) <= 33:
        raise ValueError(f"invalid ATR length {len(atr)} (must be 2..33 bytes)")
