"""The software E-Port card: docs/card-profile.md, answered APDU by APDU.

`SimulatedCard.process` is the whole card OS: transport checks (class byte, length
encodings, chaining, 61xx / 6Cxx framing) in one place, then an INS dispatch table of
small handlers that each return a `Reply` and never build wire bytes themselves.

Security state (verified PIN, selected DF/EF, security environment, pending GET RESPONSE
data, an open command chain) lives in one `_Session` object that power-off and reset
replace wholesale, so nothing can survive them by accident. Persistent state (PIN
counters) lives in `CardState` and is saved by its store as it changes.

Never log command data here: VERIFY, CHANGE REFERENCE DATA and RESET RETRY COUNTER
carry PINs. INS bytes and status words are enough to debug.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from card.apdu import CLA_CHAINING, EXTENDED_MAX_LC, SHORT_MAX_LE, CommandApdu
from card.crypto.rsa import parse_digest_info, rsa_sign_digest_info
from card.crypto.sm2 import Sm2PrivateKey
from card.eport import profile as p
from card.eport.tlv import encode_tlv, tlv_dict
from card.errors import ApduFormatError, ProtocolError
from card.sw import StatusWord
from simulator.filesystem import Access, DedicatedFile, ElementaryFile, FileSystem
from simulator.knobs import CardKnobs
from simulator.pin import CheckResult, PinObject, parse_pin_block
from simulator.profiles import CardProfile
from simulator.state import CardFactory, CardState, StateStore

log = logging.getLogger(__name__)

HISTORICAL_BYTES = b"EPORT-SIM001"
_TAG_FCP = 0x62
_TAG_FCP_SIZE = 0x80
_TAG_FCP_DESCRIPTOR = 0x82
_TAG_FCP_FID = 0x83
_FD_TRANSPARENT_EF = 0x01
_AID_LC_RANGE = range(5, 17)
_TRIES_NIBBLE_MAX = 0x0F  # 63Cx can say at most 15


def build_atr(historical: bytes = HISTORICAL_BYTES) -> bytes:
    """`3B 8C 80 01` + historical bytes + TCK (docs/card-profile.md, "Answer to reset").

    T0 = 8K (TD1 follows, K historical bytes); TD1 = 80 (TD2 follows); TD2 = 01 (T=1).
    TCK makes the XOR of T0..TCK zero (ISO 7816-3; mandatory when T=1 is offered).
    """
    if not 1 <= len(historical) <= 15:
        raise ValueError("1 to 15 historical bytes")
    body = bytes((0x80 | len(historical), 0x80, 0x01)) + historical
    tck = 0
    for b in body:
        tck ^= b
    return b"\x3b" + body + bytes((tck,))


def _sw(sw: int) -> bytes:
    return sw.to_bytes(2, "big")


@dataclass(frozen=True, slots=True)
class Reply:
    """What a handler answers; `process` turns it into wire bytes."""

    sw: int
    data: bytes = b""
    # Whether the "exact Le" knob (6Cxx) applies: answers of a fixed length do, answers
    # whose length the host chooses (READ BINARY, GET CHALLENGE, GET RESPONSE) do not.
    exact: bool = True


def _status(sw: int) -> Reply:
    return Reply(sw)


@dataclass(slots=True)
class _Chain:
    header: tuple[int, int, int]  # INS, P1, P2 of the chained command
    data: bytearray


@dataclass(slots=True)
class _Session:
    """Everything power-off / reset forgets."""

    current_df: DedicatedFile
    current_ef: ElementaryFile | None = None
    verified: bool = False
    security_env: p.AlgorithmRef | None = None
    pending: tuple[bytes, int] | None = None  # rest of an answer for GET RESPONSE, final SW
    chain: _Chain | None = None


def encode_card_info(state: CardState) -> bytes:
    """EF.CARDINFO: E1 { C1 number, C2 holder, C3 company, C4 USCC, C5 type, C6 code }."""
    fields = (
        encode_tlv(p.TAG_CARD_NUMBER, state.card_number.encode("ascii"))
        + encode_tlv(p.TAG_HOLDER_NAME, state.holder_name.encode("utf-8"))
        + encode_tlv(p.TAG_COMPANY_NAME, state.company_name.encode("utf-8"))
        + encode_tlv(p.TAG_USCC, state.uscc.encode("ascii"))
        + encode_tlv(p.TAG_CARD_TYPE, bytes((p.CARD_TYPE_CODES[state.card_type],)))
        + encode_tlv(p.TAG_ENTERPRISE_CODE, state.enterprise_code.encode("ascii"))
    )
    return encode_tlv(p.TAG_CARD_INFO, fields)


def build_filesystem(state: CardState) -> FileSystem:
    app = FileSystem.application_df(
        p.EPORT_AID,
        (
            ElementaryFile(p.FID_CARD_INFO, encode_card_info(state)),
            ElementaryFile(p.FID_SIGN_CERT, state.sign_cert),
            ElementaryFile(p.FID_ENC_CERT, state.enc_cert),
        ),
    )
    return FileSystem((app,))


class SimulatedCard:
    """A `simulator.virtual.VirtualCard` speaking the E-Port card profile.

    Thread-safe: a lock serialises APDUs, power and reset (the vpcd link and a test
    pulling the card may run on different threads).
    """

    def __init__(
        self,
        state: CardState,
        *,
        knobs: CardKnobs | None = None,
        sleep: Callable[[float], None] = time.sleep,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.state = state
        self.knobs = knobs if knobs is not None else CardKnobs()
        self._sleep = sleep
        self._random = random_bytes
        self._fs = build_filesystem(state)
        self._algorithm = (
            p.AlgorithmRef.SM2_SM3 if state.algorithm == "SM2" else p.AlgorithmRef.RSA_PKCS1
        )
        self._atr = build_atr()
        self._lock = threading.RLock()
        self._powered = True  # "inserted and powered": ready for an in-process transport
        self._session = self._new_session()
        self._handlers: dict[int, Callable[[CommandApdu], Reply]] = {
            p.INS_SELECT: self._select,
            p.INS_READ_BINARY: self._read_binary,
            p.INS_VERIFY: self._verify,
            p.INS_CHANGE_REFERENCE_DATA: self._change_pin,
            p.INS_RESET_RETRY_COUNTER: self._unblock,
            p.INS_MSE: self._mse,
            p.INS_PSO: self._pso,
            p.INS_GET_CHALLENGE: self._get_challenge,
            p.INS_GET_RESPONSE: self._get_response,
        }

    @classmethod
    def create(
        cls,
        profile: CardProfile | str,
        *,
        factory: CardFactory | None = None,
        knobs: CardKnobs | None = None,
        state_path: str | Path | None = None,
    ) -> SimulatedCard:
        """A card for `profile`. With `state_path`, the card's state is loaded from that
        file if it exists (a blocked card stays blocked), else made and saved there, and
        every PIN counter change is saved to it. Without, the card lives in memory."""
        factory = factory if factory is not None else CardFactory()
        if state_path is None:
            return cls(factory.make_state(profile), knobs=knobs)
        store = StateStore(state_path)
        state = store.load()
        name = profile if isinstance(profile, str) else profile.name
        if state is None:
            state = factory.make_state(profile)
            store.save(state)
        elif state.profile != name:
            raise ValueError(f"{store.path} holds a {state.profile!r} card, not {name!r}")
        store.attach(state)
        return cls(state, knobs=knobs)

    # --- VirtualCard ---------------------------------------------------------------

    @property
    def atr(self) -> bytes:
        return self._atr

    @property
    def powered(self) -> bool:
        return self._powered

    def power_on(self) -> None:
        with self._lock:
            self._powered = True
            self._session = self._new_session()

    def power_off(self) -> None:
        with self._lock:
            self._powered = False
            self._session = self._new_session()

    def reset(self) -> None:
        with self._lock:
            self._powered = True
            self._session = self._new_session()

    def process(self, apdu: bytes) -> bytes:
        with self._lock:
            try:
                delay = self.knobs.apdu_delay_s
                if delay > 0:
                    self._sleep(delay)
                return self._process(bytes(apdu))
            except Exception:
                # Only the INS: the data may be a PIN block. The traceback holds code,
                # not values.
                ins = f"{apdu[1]:02X}" if len(apdu) > 1 else "--"
                log.exception("simulated card: internal error processing INS %s", ins)
                return _sw(StatusWord.NO_PRECISE_DIAGNOSIS)

    # --- introspection for tests and the CLI (never the PIN) -----------------------

    @property
    def verified(self) -> bool:
        return self._session.verified

    # --- transport-level processing -----------------------------------------------

    def _new_session(self) -> _Session:
        return _Session(current_df=self._fs.mf)

    def _process(self, raw: bytes) -> bytes:
        if not self._powered:
            # A card without power answers nothing; whoever carries APDUs to us
            # should have powered it. Say so instead of pretending.
            log.warning("simulated card: APDU while powered off")
            return _sw(StatusWord.NO_PRECISE_DIAGNOSIS)
        try:
            cmd = CommandApdu.decode(raw)
        except ApduFormatError:
            return _sw(StatusWord.WRONG_LENGTH)
        injected = self.knobs.take_fault(cmd.ins)
        if injected is not None:
            return _sw(injected)  # executes nothing, changes no state
        if cmd.cla & ~CLA_CHAINING != 0x00:
            return _sw(StatusWord.CLA_NOT_SUPPORTED)
        handler = self._handlers.get(cmd.ins)
        if handler is None:
            return _sw(StatusWord.INS_NOT_SUPPORTED)
        extended = len(raw) >= 7 and raw[4] == 0x00
        if extended and not self.knobs.extended_length:
            return _sw(StatusWord.WRONG_LENGTH)
        if len(cmd.data) > self.knobs.effective_max_command_data:
            return _sw(StatusWord.WRONG_LENGTH)
        session = self._session
        if cmd.ins != p.INS_GET_RESPONSE:
            session.pending = None  # an answer not fetched right away is gone (ISO 7816-4)
        joined = self._chain(session, cmd)
        if isinstance(joined, bytes):
            return joined
        return self._frame(joined, handler(joined))

    def _chain(self, session: _Session, cmd: CommandApdu) -> CommandApdu | bytes:
        """Buffer CLA|0x10 chunks; return the whole command on the last chunk, or the
        status to answer now."""
        header = (cmd.ins, cmd.p1, cmd.p2)
        chain = session.chain
        if cmd.cla & CLA_CHAINING:
            if not self.knobs.chaining:
                session.chain = None
                return _sw(StatusWord.CHAINING_NOT_SUPPORTED)
            if chain is not None and chain.header != header:
                session.chain = None
                return _sw(StatusWord.LAST_COMMAND_EXPECTED)
            if chain is None:
                chain = session.chain = _Chain(header, bytearray())
            if len(chain.data) + len(cmd.data) > EXTENDED_MAX_LC:
                session.chain = None
                return _sw(StatusWord.WRONG_LENGTH)
            chain.data += cmd.data
            return _sw(StatusWord.OK)
        if chain is None:
            return cmd
        session.chain = None
        if chain.header != header:
            # Another command in the middle of a chain: refuse it and drop the chain,
            # so that neither half is executed.
            return _sw(StatusWord.LAST_COMMAND_EXPECTED)
        data = bytes(chain.data) + cmd.data
        if len(data) > EXTENDED_MAX_LC:
            return _sw(StatusWord.WRONG_LENGTH)
        return CommandApdu(0x00, cmd.ins, cmd.p1, cmd.p2, data, cmd.le)

    def _frame(self, cmd: CommandApdu, reply: Reply) -> bytes:
        data = reply.data
        if not data:
            return _sw(reply.sw)
        if cmd.le is None:
            # Case 4 sent without Le (T=0 style): offer the answer through GET RESPONSE
            # rather than return data nobody asked for.
            self._session.pending = (data, reply.sw)
            return _sw(0x6100 | (min(len(data), SHORT_MAX_LE) & 0xFF))
        if self.knobs.exact_le and reply.exact:
            exact = min(len(data), SHORT_MAX_LE)
            if cmd.le not in (len(data), exact):
                return _sw(0x6C00 | (exact & 0xFF))
        return self._deliver(data, reply.sw, cmd.le)

    def _deliver(self, data: bytes, sw: int, le: int) -> bytes:
        """At most Le and at most max_response_data bytes now; the rest after 61xx."""
        n = min(le, self.knobs.max_response_data, len(data))
        chunk, rest = data[:n], data[n:]
        if rest:
            self._session.pending = (rest, sw)
            return chunk + _sw(0x6100 | (min(len(rest), SHORT_MAX_LE) & 0xFF))
        return chunk + _sw(sw)

    # --- SELECT ----------------------------------------------------------------------

    def _select(self, cmd: CommandApdu) -> Reply:
        session = self._session
        if cmd.p2 not in (p.SELECT_RETURN_FCI, p.SELECT_NO_RESPONSE):
            return _status(StatusWord.INCORRECT_P1P2)
        if cmd.p1 == p.SELECT_BY_AID:
            if len(cmd.data) not in _AID_LC_RANGE:
                return _status(StatusWord.WRONG_LENGTH)
            app = self._fs.application(cmd.data)
            if app is None:
                return _status(StatusWord.FILE_NOT_FOUND)  # selection stays as it was
            # The PIN's verified state and the security environment belong to the card
            # session, not to the selection: they survive a re-select.
            session.current_df, session.current_ef = app, None
            if cmd.p2 == p.SELECT_NO_RESPONSE:
                return _status(StatusWord.OK)
            return Reply(StatusWord.OK, self._fci())
        if cmd.p1 == p.SELECT_BY_FID:
            if len(cmd.data) != 2:
                return _status(StatusWord.WRONG_LENGTH)
            fid = int.from_bytes(cmd.data, "big")
            ef = session.current_df.find(fid)  # the MF holds no EFs: 6A82 before the app
            if ef is None:
                return _status(StatusWord.FILE_NOT_FOUND)
            session.current_ef = ef
            if cmd.p2 == p.SELECT_NO_RESPONSE:
                return _status(StatusWord.OK)
            return Reply(StatusWord.OK, self._fcp(ef))
        return _status(StatusWord.INCORRECT_P1P2)

    def _fci(self) -> bytes:
        knobs = self.knobs
        flags = (p.FLAG_EXTENDED_LENGTH if knobs.extended_length else 0) | (
            p.FLAG_CHAINING if knobs.chaining else 0
        )
        proprietary = (
            encode_tlv(p.TAG_PROFILE_VERSION, bytes((p.PROFILE_VERSION,)))
            + encode_tlv(p.TAG_ALGORITHM, bytes((self._algorithm,)))
            + encode_tlv(p.TAG_MAX_COMMAND_DATA, knobs.effective_max_command_data.to_bytes(2))
            + encode_tlv(p.TAG_MAX_RESPONSE_DATA, knobs.effective_max_response_data.to_bytes(2))
            + encode_tlv(p.TAG_FLAGS, bytes((flags,)))
        )
        return encode_tlv(
            p.TAG_FCI,
            encode_tlv(p.TAG_DF_NAME, p.EPORT_AID) + encode_tlv(p.TAG_PROPRIETARY, proprietary),
        )

    @staticmethod
    def _fcp(ef: ElementaryFile) -> bytes:
        return encode_tlv(
            _TAG_FCP,
            encode_tlv(_TAG_FCP_SIZE, ef.size.to_bytes(2, "big"))
            + encode_tlv(_TAG_FCP_DESCRIPTOR, bytes((_FD_TRANSPARENT_EF,)))
            + encode_tlv(_TAG_FCP_FID, ef.fid.to_bytes(2, "big")),
        )

    # --- READ BINARY -----------------------------------------------------------------

    def _read_binary(self, cmd: CommandApdu) -> Reply:
        if cmd.p1 & 0x80:
            return _status(StatusWord.FUNCTION_NOT_SUPPORTED)  # short EF identifier
        if cmd.data or cmd.le is None:
            return _status(StatusWord.WRONG_LENGTH)
        session = self._session
        ef = session.current_ef
        if ef is None:
            return _status(StatusWord.COMMAND_NOT_ALLOWED_NO_EF)
        if ef.read is Access.NEVER or (ef.read is Access.PIN and not session.verified):
            return _status(StatusWord.SECURITY_STATUS_NOT_SATISFIED)
        offset = (cmd.p1 << 8) | cmd.p2
        if offset >= ef.size:
            return _status(StatusWord.WRONG_P1P2)
        left = ef.size - offset
        if cmd.le <= left:
            return Reply(StatusWord.OK, ef.data[offset : offset + cmd.le], exact=False)
        if self.knobs.exact_le:
            return _status(0x6C00 | (min(left, SHORT_MAX_LE) & 0xFF))
        return Reply(StatusWord.END_OF_FILE, ef.data[offset:], exact=False)

    # --- PIN ---------------------------------------------------------------------------

    @staticmethod
    def _tries_sw(pin: PinObject) -> Reply:
        return _status(0x63C0 | min(pin.tries_left, _TRIES_NIBBLE_MAX))

    def _verify(self, cmd: CommandApdu) -> Reply:
        session = self._session
        pin = self.state.pin
        if cmd.p2 != p.PIN_REF:
            return _status(StatusWord.INCORRECT_P1P2)
        if cmd.p1 == p.VERIFY_RESET_P1:
            if cmd.data:
                return _status(StatusWord.WRONG_LENGTH)
            session.verified = False
            return _status(StatusWord.OK)
        if cmd.p1 != 0x00:
            return _status(StatusWord.INCORRECT_P1P2)
        if not cmd.data:  # status: spends nothing
            if session.verified:
                return _status(StatusWord.OK)
            if pin.blocked:
                return _status(StatusWord.AUTH_METHOD_BLOCKED)
            return self._tries_sw(pin)
        if len(cmd.data) != p.PIN_BLOCK_LEN:
            return _status(StatusWord.WRONG_LENGTH)
        if parse_pin_block(cmd.data) is None:
            return _status(StatusWord.WRONG_DATA)
        result = pin.check(cmd.data)
        if result is CheckResult.OK:
            session.verified = True
            return _status(StatusWord.OK)
        session.verified = False  # a failed VERIFY ends any earlier verified state
        if result is CheckResult.BLOCKED:
            return _status(StatusWord.AUTH_METHOD_BLOCKED)
        return self._tries_sw(pin)

    def _two_blocks(self, cmd: CommandApdu) -> tuple[bytes, bytes] | Reply:
        if cmd.p1 != 0x00 or cmd.p2 != p.PIN_REF:
            return _status(StatusWord.INCORRECT_P1P2)
        if len(cmd.data) != 2 * p.PIN_BLOCK_LEN:
            return _status(StatusWord.WRONG_LENGTH)
        first, second = cmd.data[: p.PIN_BLOCK_LEN], cmd.data[p.PIN_BLOCK_LEN :]
        new_value = parse_pin_block(second)
        if parse_pin_block(first) is None or new_value is None:
            return _status(StatusWord.WRONG_DATA)  # no try spent on a malformed block
        return first, new_value

    def _change_pin(self, cmd: CommandApdu) -> Reply:
        parsed = self._two_blocks(cmd)
        if isinstance(parsed, Reply):
            return parsed
        old_block, new_value = parsed
        pin = self.state.pin
        result = pin.check(old_block)
        if result is CheckResult.OK:
            pin.set_value(new_value)  # verified state unchanged
            return _status(StatusWord.OK)
        self._session.verified = False  # like a failed VERIFY
        if result is CheckResult.BLOCKED:
            return _status(StatusWord.AUTH_METHOD_BLOCKED)
        return self._tries_sw(pin)

    def _unblock(self, cmd: CommandApdu) -> Reply:
        parsed = self._two_blocks(cmd)
        if isinstance(parsed, Reply):
            return parsed
        code_block, new_value = parsed
        unblock = self.state.unblock
        result = unblock.check(code_block)
        if result is CheckResult.BLOCKED:
            return _status(StatusWord.AUTH_METHOD_BLOCKED)
        if result is CheckResult.WRONG:
            return self._tries_sw(unblock)
        self.state.pin.set_value(new_value)
        # A PIN nobody has presented yet: the holder verifies the new one.
        self._session.verified = False
        return _status(StatusWord.OK)

    # --- signature ---------------------------------------------------------------------

    def _mse(self, cmd: CommandApdu) -> Reply:
        if cmd.p1 != p.MSE_SET_DST_P1 or cmd.p2 != p.MSE_SET_DST_P2:
            return _status(StatusWord.INCORRECT_P1P2)
        session = self._session
        session.security_env = None  # any MSE:SET replaces it; a refused one leaves none
        if not cmd.data:
            return _status(StatusWord.WRONG_LENGTH)
        try:
            fields = tlv_dict(cmd.data)
        except ProtocolError:
            return _status(StatusWord.WRONG_DATA)
        key_ref = fields.get(0x84)
        alg = fields.get(0x80)
        if set(fields) != {0x80, 0x84} or key_ref != bytes((p.KEY_REF_SIGN,)):
            return _status(StatusWord.WRONG_DATA)
        if alg is None or len(alg) != 1 or alg[0] != self._algorithm:
            return _status(StatusWord.WRONG_DATA)  # unknown, or not what the key does
        session.security_env = self._algorithm
        return _status(StatusWord.OK)

    def _pso(self, cmd: CommandApdu) -> Reply:
        if cmd.p1 != p.PSO_CDS_P1 or cmd.p2 != p.PSO_CDS_P2:
            return _status(StatusWord.INCORRECT_P1P2)
        session = self._session
        if not session.verified:
            return _status(StatusWord.SECURITY_STATUS_NOT_SATISFIED)
        if session.security_env is None:
            return _status(StatusWord.CONDITIONS_NOT_SATISFIED)
        key = self.state.signing_key()
        if session.security_env is p.AlgorithmRef.SM2_SM3:
            if len(cmd.data) != 32 or not isinstance(key, Sm2PrivateKey):
                return _status(StatusWord.WRONG_DATA)
            signature = key.sign_digest(cmd.data)
        else:
            if not isinstance(key, rsa.RSAPrivateKey):
                return _status(StatusWord.WRONG_DATA)
            try:
                parse_digest_info(cmd.data)
            except (ProtocolError, ValueError):
                return _status(StatusWord.WRONG_DATA)
            signature = rsa_sign_digest_info(key, cmd.data)
        delay = self.knobs.signature_delay_s(session.security_env, self.state.key_bits)
        if delay > 0:
            self._sleep(delay)
        return Reply(StatusWord.OK, signature)

    # --- GET CHALLENGE / GET RESPONSE ----------------------------------------------------

    def _get_challenge(self, cmd: CommandApdu) -> Reply:
        if cmd.p1 or cmd.p2:
            return _status(StatusWord.INCORRECT_P1P2)
        if cmd.data or cmd.le is None or cmd.le > SHORT_MAX_LE:
            return _status(StatusWord.WRONG_LENGTH)
        return Reply(StatusWord.OK, self._random(cmd.le), exact=False)

    def _get_response(self, cmd: CommandApdu) -> Reply:
        if cmd.p1 or cmd.p2:
            return _status(StatusWord.INCORRECT_P1P2)
        if cmd.data:
            return _status(StatusWord.WRONG_LENGTH)
        session = self._session
        if session.pending is None:
            return _status(StatusWord.CONDITIONS_NOT_SATISFIED)
        if cmd.le is None:
            return _status(StatusWord.WRONG_LENGTH)
        rest, final_sw = session.pending
        if self.knobs.exact_le and cmd.le > len(rest):
            return _status(0x6C00 | (min(len(rest), SHORT_MAX_LE) & 0xFF))  # still pending
        session.pending = None
        return Reply(final_sw, rest, exact=False)


__all__ = [
    "HISTORICAL_BYTES",
    "Reply",
    "SimulatedCard",
    "build_atr",
    "build_filesystem",
    "encode_card_info",
]
