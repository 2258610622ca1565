"""The transport-independent exchange layer.

Turns "send this command, give me the answer" into what ISO 7816-4 actually needs on
the wire: GET RESPONSE on 61xx (joined, capped), one resend with the corrected Le on
6Cxx, command chaining (CLA | 0x10) when the data is longer than the card accepts in
one command, and extended length when the card says it supports it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from card.apdu import (
    CLA_CHAINING,
    EXTENDED_MAX_LC,
    EXTENDED_MAX_LE,
    SHORT_MAX_LC,
    SHORT_MAX_LE,
    CommandApdu,
    ResponseApdu,
)
from card.errors import ApduFormatError, ProtocolError, WrongLength, error_for_sw
from card.transport import Transport

log = logging.getLogger("card.apdu")

INS_GET_RESPONSE = 0xC0


@dataclass(slots=True)
class ExchangeConfig:
    """What the card accepts. Starts conservative (short APDUs, chaining allowed);
    the card session widens it from what the card announces."""

    extended_length: bool = False
    chaining: bool = True
    max_command_data: int = SHORT_MAX_LC  # per command, in the chosen encoding
    max_get_response: int = 300  # cap on 61xx rounds for one command
    max_response_size: int = 128 * 1024  # cap on the joined response


class ApduExchange:
    def __init__(self, transport: Transport, config: ExchangeConfig | None = None) -> None:
        self.transport = transport
        self.config = config or ExchangeConfig()

    def send(self, command: CommandApdu) -> bytes:
        """Send `command`; return the response data, or raise the typed error for its SW."""
        response = self.transmit(command)
        if response.sw != 0x9000:
            raise error_for_sw(response.sw)
        return response.data

    def transmit(self, command: CommandApdu) -> ResponseApdu:
        """Send `command` with chaining / 61xx / 6Cxx handled; return the final response
        whatever its SW (callers that want exceptions use `send`)."""
        data, le = command.data, command.le
        if (
            len(data) <= min(self.config.max_command_data, SHORT_MAX_LC)
            and (le is None or le <= SHORT_MAX_LE)
            and not log.isEnabledFor(logging.DEBUG)
        ):
            # The common case, one short APDU, without the general path's layers. Through
            # pcscd the host's CPU time between two APDUs costs about 2.5 times its own
            # length in throughput (measured: bench/bench_pcsc.py), so this path is lean.
            raw = self.transport.transmit(command.encode(extended=False))
            if len(raw) < 2:
                raise ApduFormatError(f"response APDU too short: {len(raw)} bytes")
            sw1 = raw[-2]
            if sw1 != 0x61 and sw1 != 0x6C:
                if len(raw) - 2 > EXTENDED_MAX_LE:
                    raise ProtocolError(f"response of {len(raw) - 2} bytes is not an APDU")
                if len(raw) - 2 > self.config.max_response_size:
                    self._check_size(len(raw) - 2)
                return ResponseApdu(raw[:-2], (sw1 << 8) | raw[-1])
            response, complete = ResponseApdu.decode(raw), True
        else:
            response, complete = self._send_command(command)
        if not complete:
            # A chained chunk was refused: the command never completed. The refusal may
            # still carry data, and the size cap holds for every response returned.
            self._check_size(len(response.data))
            return response
        if response.sw >> 8 == 0x6C:
            # Wrong Le: resend once with the exact length the card told us. A chained
            # command is resent whole: the card has ended the chain, so the last chunk
            # alone would be a different command.
            response, complete = self._send_command(
                command.with_le((response.sw & 0xFF) or SHORT_MAX_LE)
            )
            if not complete:
                self._check_size(len(response.data))
                return response
            if response.sw >> 8 == 0x6C:
                raise WrongLength(response.sw, "card asked for a second Le correction")
        if response.sw >> 8 == 0x61:
            return self._get_remaining(command.cla, response)
        self._check_size(len(response.data))
        return response

    def _send_command(self, command: CommandApdu) -> tuple[ResponseApdu, bool]:
        """Put `command` on the wire (chained if it must be). Returns the last response
        and whether the command was sent completely (False: a chunk was refused)."""
        cfg = self.config
        data = command.data
        limit = min(cfg.max_command_data, EXTENDED_MAX_LC if cfg.extended_length else SHORT_MAX_LC)
        if command.le is not None and command.le > SHORT_MAX_LE and not cfg.extended_length:
            # Ask for what a short APDU can carry; the card announces the rest with 61xx.
            command = command.with_le(SHORT_MAX_LE)
        if len(data) <= limit:
            return self._exchange(command), True
        if limit < 1:
            raise ApduFormatError(f"max_command_data must be positive, not {limit}")
        if not cfg.chaining:
            raise ApduFormatError(
                f"{len(data)} bytes of command data exceed the card's limit of {limit} "
                "and the card does not accept command chaining"
            )
        # Chained: every chunk but the last carries CLA|0x10 and no Le; each must be 9000.
        last = len(data) - ((len(data) - 1) % limit + 1)
        for offset in range(0, last, limit):
            chunk = CommandApdu(
                command.cla | CLA_CHAINING,
                command.ins,
                command.p1,
                command.p2,
                data[offset : offset + limit],
            )
            response = self._exchange(chunk)
            if response.sw != 0x9000:
                return response, False
        final = CommandApdu(
            command.cla, command.ins, command.p1, command.p2, data[last:], command.le
        )
        return self._exchange(final), True

    def _check_size(self, size: int) -> None:
        if size > self.config.max_response_size:
            raise ProtocolError(f"response exceeds {self.config.max_response_size} bytes")

    def _get_remaining(self, cla: int, first: ResponseApdu) -> ResponseApdu:
        parts = [first.data]
        size = len(first.data)
        self._check_size(size)
        response = first
        rounds = 0
        while response.sw >> 8 == 0x61:
            rounds += 1
            if rounds > self.config.max_get_response:
                raise ProtocolError(f"card kept answering 61xx after {rounds - 1} GET RESPONSE")
            le = (response.sw & 0xFF) or SHORT_MAX_LE
            get = CommandApdu(_get_response_cla(cla), INS_GET_RESPONSE, 0, 0, b"", le)
            response = self._exchange(get)
            size += len(response.data)
            self._check_size(size)
            parts.append(response.data)
        return ResponseApdu(b"".join(parts), response.sw)

    def _exchange(self, command: CommandApdu) -> ResponseApdu:
        extended = self.config.extended_length and command.needs_extended
        raw = command.encode(extended=extended)
        debug = log.isEnabledFor(logging.DEBUG)
        if debug:
            log.debug("> %s", command.redacted())
        response = ResponseApdu.decode(self.transport.transmit(raw))
        if debug:
            log.debug("< %s", response.redacted())
        if len(response.data) > EXTENDED_MAX_LE:
            raise ProtocolError(f"response of {len(response.data)} bytes is not an APDU")
        return response


def _get_response_cla(cla: int) -> int:
    """CLA for GET RESPONSE: interindustry, on the logical channel of the command.

    Channels 0-3 sit in b2-b1 of the first interindustry class (and of proprietary
    classes coded like it); channels 4-19 in b4-b1 of the further interindustry class
    (b7 set). Chaining and secure-messaging bits are dropped.
    """
    if cla & 0x40:
        return 0x40 | (cla & 0x0F)
    return cla & 0x03
