"""The official client's card methods, mapped onto CardService.

Every card operation goes through the service: the card owner serialises them, the
service applies the PIN floor, sessions, signature checks and the audit log. This module
only translates arguments and answers, and maps the agent's error vocabulary
(`agent.errors`) onto the strings Single Window pages read (`Error: [message, code]`).

Signing needs a PIN verified in the same WebSocket connection: a request carrying
`passwd` verifies first; without it, an earlier SpcVerifyPIN on this connection must
have opened a session. docs/compat.md has the method matrix and the format decisions.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta, timezone
from typing import Any

from agent.errors import AgentError, WireError, wire_error
from agent.service import Caller, CardService
from agent.vocabulary import ErrorCode, Purpose
from card import errors as ce
from card.crypto.algorithms import KeyAlgorithm
from card.crypto.certs import CertificateInfo, certificate_from_pem, parse_certificate
from card.crypto.sm2 import der_to_raw
from card.crypto.verify import verify_digest, verify_message
from card.eport.driver import CardInfo, CardType, CertSlot, SignAlgorithm

from .protocol import ErrorPair, Request, function_name, reply

log = logging.getLogger(__name__)

# --- the official error vocabulary ------------------------------------------------------

# Codes Single Window pages react to (seen in the published page scripts).
ERR_BAD_ARGS = "Err:Base50000"  # missing or illegal arguments
ERR_INSERT_CARD = "Err:Custom51590"  # pages: "请插入IC卡或者Key"
ERR_OPEN_READER = "Err:Custom50200"  # open reader failed; pages treat it like 51590
AGENT_CODE_PREFIX = "Err:CardAgent."  # ours: no page reacts to these by code

_OFFICIAL: dict[ErrorCode, str] = {
    ErrorCode.INVALID_INPUT: ERR_BAD_ARGS,
    ErrorCode.PAYLOAD_TOO_LARGE: ERR_BAD_ARGS,
    ErrorCode.PIN_FORMAT: ERR_BAD_ARGS,  # refused before VERIFY: no try spent
    ErrorCode.CARD_MISSING: ERR_INSERT_CARD,
    ErrorCode.CARD_REMOVED: ERR_INSERT_CARD,
    ErrorCode.READER_MISSING: ERR_OPEN_READER,
    ErrorCode.READER_SERVICE_DOWN: ERR_OPEN_READER,
    ErrorCode.READER_BUSY: ERR_OPEN_READER,
}

# Messages for people at a Chinese kiosk; `{n}` is details["tries_left"].
_MESSAGES: dict[ErrorCode, str] = {
    ErrorCode.CARD_MISSING: "请插入IC卡或者Key",
    ErrorCode.CARD_REMOVED: "IC卡已拔出，请重新插入IC卡或者Key",
    ErrorCode.READER_MISSING: "未检测到读卡器，请连接读卡器并插入IC卡",
    ErrorCode.READER_SERVICE_DOWN: "读卡器服务未运行，请联系工作人员",
    ErrorCode.READER_BUSY: "读卡器正被其他程序使用，请稍后重试",
    ErrorCode.CARD_RESET: "IC卡已复位，请重新操作",
    ErrorCode.CARD_CHANGED: "读卡器中的IC卡已更换，请重新验证密码",
    ErrorCode.CARD_TIMEOUT: "IC卡无响应，请重新插卡后重试",
    ErrorCode.CARD_IO_ERROR: "与IC卡通讯失败，请重新插卡后重试",
    ErrorCode.UNSUPPORTED_CARD: "本机不支持此IC卡",
    ErrorCode.CARD_ERROR: "IC卡拒绝了此操作",
    ErrorCode.PIN_INCORRECT: "IC卡密码错误，还可以尝试{n}次",
    ErrorCode.PIN_TRIES_LOW: (
        "IC卡密码只剩{n}次尝试机会。为防止锁卡，本机不会在网页上使用最后的尝试机会，请联系工作人员"
    ),
    ErrorCode.PIN_BLOCKED: "IC卡密码已锁定，请联系发卡机构解锁",
    ErrorCode.PIN_FORMAT: "IC卡密码格式不正确(应为6至16位字母、数字或符号)",
    ErrorCode.SESSION_REQUIRED: "请先验证IC卡密码",
    ErrorCode.BUSY: "读卡器正忙，请稍后重试",
    ErrorCode.TIMEOUT: "IC卡操作超时，请重试",
    ErrorCode.SIGNATURE_INVALID: "签名验证未通过",
    ErrorCode.AUDIT_UNAVAILABLE: "本机无法记录签名日志，未返回签名，请联系工作人员",
    ErrorCode.PAYLOAD_TOO_LARGE: "数据过大",
    ErrorCode.NOT_FOUND: "本机不支持此功能",
    ErrorCode.INTERNAL_ERROR: "内部错误，请重试",
}


def compat_error(wire: WireError) -> ErrorPair:
    """`[message, "Err:..."]` for a wire error. `invalid_input` keeps its own message
    (ours, written for the page's developer); the others get the kiosk wording."""
    code = _OFFICIAL.get(wire.code, AGENT_CODE_PREFIX + wire.code)
    if wire.code is ErrorCode.INVALID_INPUT:
        return wire.message, code
    template = _MESSAGES.get(wire.code, "操作失败")
    return template.format(n=wire.details.get("tries_left", "?")), code


def bad_args(message: str) -> AgentError:
    return AgentError(ErrorCode.INVALID_INPUT, 422, message)


# --- per-connection context --------------------------------------------------------------

# Validity times as the Windows client prints them: local time on a Chinese kiosk.
CHINA_TIME = timezone(timedelta(hours=8), "CST")
_MAX_TITLE = 200


@dataclass
class Connection:
    """One WebSocket connection: its caller identity and whether it opened a session."""

    service: CardService
    caller: Caller
    max_data_bytes: int
    verified: bool = False  # a PIN was verified on this connection (a session may be open)

    async def close(self) -> None:
        """The page went away: end its session and clear the card's verified state, so
        the next visitor starts with a card that needs the PIN."""
        if self.verified:
            self.verified = False
            await self.service.end_session(self.caller)


Handler = Callable[[Connection, dict[str, Any], str], Awaitable[list[Any]]]


async def handle(conn: Connection, request: Request) -> str:
    """Serve one request; always returns the reply frame (errors included)."""
    func = function_name(request.method)
    handler = HANDLERS.get(func) if func is not None else None
    try:
        if handler is None or func is None:  # other modules (ra_, pdf-sign_, ...) too
            raise AgentError(ErrorCode.NOT_FOUND, 404, "unknown method")
        data = await handler(conn, request.args, func)
    except Exception as exc:
        wire = wire_error(exc)
        if wire.code == "internal_error":
            log.error("compat %.128r failed: %s", request.method, type(exc).__name__)
        else:
            log.info("compat %.128r -> %s", request.method, wire.code)
        return reply(request.id, request.method, result=False, error=compat_error(wire))
    return reply(request.id, request.method, result=True, data=data)


# --- argument helpers ------------------------------------------------------------------------


def _text(args: dict[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str) or value == "":
        raise bad_args(f"args中必须包含非空的字符串参数{name}")
    return value


def _optional_pin(args: dict[str, Any], name: str) -> str | None:
    value = args.get(name)
    if value is None or value == "":  # the page library drops an empty passwd too
        return None
    if not isinstance(value, str):
        raise bad_args(f"参数{name}必须是字符串")  # never echo it: it is a PIN
    return value


def _data_bytes(conn: Connection, text: str) -> bytes:
    data = text.encode("utf-8")  # the client signs the UTF-8 bytes of the string
    if len(data) > conn.max_data_bytes:
        raise AgentError(ErrorCode.PAYLOAD_TOO_LARGE, 413, f"data over {conn.max_data_bytes} bytes")
    return data


def _b64decode(value: str, what: str) -> bytes:
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise bad_args(f"参数{what}不是有效的Base64") from None


def _digest_arg(value: str, size: int) -> bytes:
    """A digest the page computed: hex (2*size digits) or Base64 (what SpcSHA1DigestAsPEM
    returns). The expected size keeps the two apart: 40 hex digits are not 20 bytes of
    Base64."""
    text = value.strip()
    if len(text) == 2 * size:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    raw = _b64decode(text, "inData")
    if len(raw) != size:
        raise bad_args(f"inData应为{size}字节的摘要(十六进制或Base64)")
    return raw


def _certificate_arg(value: Any) -> CertificateInfo:
    """A certificate the page passed: PEM, Base64 DER, or a byte array."""
    try:
        if isinstance(value, list) and all(isinstance(b, int) and 0 <= b < 256 for b in value):
            der = bytes(value)
        elif isinstance(value, str) and "-----BEGIN" in value:
            der = certificate_from_pem(value)
        elif isinstance(value, str):
            der = _b64decode(value, "cert")
        else:
            raise bad_args("证书参数格式不正确")
        return parse_certificate(der)
    except ce.ProtocolError:
        raise bad_args("证书无法解析") from None


def _purpose(args: dict[str, Any], default: Purpose) -> Purpose:
    """Pages may pass a purpose hint for the audit log; otherwise inferred."""
    value = args.get("purpose")
    if value is None:
        return default
    try:
        return Purpose(value)
    except ValueError:
        raise bad_args("purpose must be one of " + ", ".join(Purpose)) from None


def _title(args: dict[str, Any], conn: Connection, func: str) -> str:
    value = args.get("title")
    if isinstance(value, str) and value.strip():
        return value.strip()[:_MAX_TITLE]
    return f"{func} ({conn.caller.origin})"[:_MAX_TITLE]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- card reads ---------------------------------------------------------------------------------


async def _verify_if_given(conn: Connection, pin: str | None) -> None:
    if pin is None:
        return
    # A page cannot confirm a final try (the protocol has no such argument): at the PIN
    # floor the service refuses with pin_tries_low, and the holder is sent to staff.
    await conn.service.verify_pin(conn.caller, pin, confirm_final_try=False)
    conn.verified = True


async def _cert(conn: Connection, slot: CertSlot = CertSlot.SIGN) -> CertificateInfo:
    return (await conn.service.certificates())[slot]


def _ent_id(info: CardInfo) -> str:
    return info.enterprise_code or info.uscc


def _ent_mode(info: CardInfo) -> str:
    # The client's "单位类别" values are not public; the card type code stands in.
    return "01" if info.card_type is CardType.LEGAL_PERSON else "02"


async def init_env(conn: Connection, args: dict[str, Any], func: str) -> list[Any]:
    await conn.service.card_info()  # "open the card": fails with 51590 when there is none
    return []


async def clear_env(conn: Connection, args: dict[str, Any], func: str) -> list[Any]:
    await conn.close()
    return []


async def set_priority(conn: Connection, args: dict[str, Any], func: str) -> list[Any]:
    return []  # one reader, one card: there is nothing to prioritise


async def card_id(conn: Connection, args: dict[str, Any], func: str) -> list[Any]:
    return [(await conn.service.card_info()).card_number]


async def cert_no(conn: Connection, args: dict[str, Any], func: str) -> list[Any]:
    return [(await _cert(conn)).serial_hex]


async def user_name(conn: Connection, args: dict[str, Any], func: str) -> list[Any]:
    return [(await conn.service.card_info()).holder_name]


async def ent_id(conn: Connection, args: dict[str, Any], func: str) -> list[Any]:
    return [_ent_id(await conn.service.card_info())]


async def ent_name(conn: Connection, args: dict[str, Any], func: str) -> list[Any]:
    return [(await conn.service.card_info()).company_name]


async def ent_mode(conn: Connection, args: dict[str, Any], func: str) -> list[Any]:
    return [_ent_mode(await conn.service.card_info())]


async def card_user_info(conn: Connection, args: dict[str, Any], func: str) -> list[Any]:
    """`||`-joined: field 0 certificate number and field 5 card number are what pages
    read (the CAS login page); the others are our best reading of the client."""
    pin = _optional_pin(args, "userpin" if func == "getGetCardUserInfoAll" else "passwd")
    await _verify_if_given(conn, pin)
    info = await conn.service.card_info()
    cert = await _cert(conn)
    fields = [
        cert.serial_hex,
        info.holder_name,
        info.company_name,
        _ent_id(info),
        info.uscc,
        info.card_number,
        _ent_mode(info),
    ]
    return ["||".join(fields)]


async def sign_cert(conn: Connection, args: dict[str, Any], func: str) -> list[Any]:
    return [_b64((await _cert(conn, CertSlot.SIGN)).der)]


async def env_cert(conn: Connection, args: dict[str, Any], func: str) -> list[Any]:
    return [_b64((await _cert(conn, CertSlot.ENCRYPT)).der)]


async def valid_time(conn: Connection, args: dict[str, Any], func: str) -> list[Any]:
    # `cert` (cus-sec_) or `certByteArray` (security_); absent: the card's signing cert.
    given = args.get("cert", args.get("certByteArray"))
    cert = _certificate_arg(given) if given not in (None, "", []) else await _cert(conn)
    fmt = "%Y%m%d%H%M%S"
    return [
        {
            "szStartTime": cert.not_before.astimezone(CHINA_TIME).strftime(fmt),
            "szEndTime": cert.not_after.astimezone(CHINA_TIME).strftime(fmt),
        }
    ]


# --- PIN ----------------------------------------------------------------------------------------


async def verify_pin(conn: Connection, args: dict[str, Any], func: str) -> list[Any]:
    pin = _optional_pin(args, "passwd")
    if pin is None:
        raise bad_args("args中必须包含非空的字符串参数passwd")
    await _verify_if_given(conn, pin)
    if func == "SpcVerifyPINAll":
        await conn.close()  # "open, check, close": the card is not left verified
    return []


async def change_pin(conn: Connection, args: dict[str, Any], func: str) -> list[Any]:
    old, new = _optional_pin(args, "oldPin"), _optional_pin(args, "newPin")
    if old is None or new is None:
        raise bad_args("args中必须包含非空的字符串参数oldPin和newPin")
    # A page cannot confirm the last tries: the service's PIN floor applies unconfirmed.
    await conn.service.change_pin(conn.caller, old, new)
    return []


# --- signatures ----------------------------------------------------------------------------------


async def _sign(
    conn: Connection,
    args: dict[str, Any],
    func: str,
    *,
    message: bytes | None = None,
    digest_text: str | None = None,
    purpose: Purpose,
) -> list[Any]:
    # Arguments first: a malformed request must not touch the card or spend a try.
    pin = _optional_pin(args, "passwd")
    purpose = _purpose(args, purpose)
    title = _title(args, conn, func)
    cert = await _cert(conn)
    algorithm = _protocol_algorithm(cert)
    digest = None
    if digest_text is not None:
        digest = _digest_arg(digest_text, algorithm.digest_size)
    await _verify_if_given(conn, pin)
    outcome = await conn.service.sign(
        conn.caller,
        purpose=purpose,
        title=title,
        data=message,
        digest=digest,
        algorithm=algorithm,
    )
    # Data[1] is the certificate number (pages put it in the signed XML's KeyName).
    return [_b64(outcome.signature.value), outcome.certificate.serial_hex]


async def sign_data(conn: Connection, args: dict[str, Any], func: str) -> list[Any]:
    message = _data_bytes(conn, _text(args, "inData"))
    return await _sign(conn, args, func, message=message, purpose=Purpose.OTHER)


async def sign_no_hash(conn: Connection, args: dict[str, Any], func: str) -> list[Any]:
    return await _sign(conn, args, func, digest_text=_text(args, "inData"), purpose=Purpose.OTHER)


async def sign_random(conn: Connection, args: dict[str, Any], func: str) -> list[Any]:
    message = _data_bytes(conn, _text(args, "random"))
    return await _sign(conn, args, func, message=message, purpose=Purpose.LOGIN)


async def _verify_cert(conn: Connection, args: dict[str, Any]) -> CertificateInfo:
    given = args.get("certDataPEM")
    return _certificate_arg(given) if given not in (None, "") else await _cert(conn)


def _check(ok: bool) -> list[Any]:
    if not ok:
        raise AgentError(ErrorCode.SIGNATURE_INVALID, 422, "signature does not verify")
    return []


def _sm2_signature(signature: bytes) -> bytes:
    if len(signature) == 64:
        return signature
    try:
        return der_to_raw(signature)  # tolerate the DER form too
    except ce.ProtocolError:
        raise bad_args("signData不是有效的SM2签名") from None


def _protocol_algorithm(cert: CertificateInfo) -> SignAlgorithm:
    # The official client signs SM2 with SM3, and SHA-1 on every RSA card (the driver's
    # default for RSA-2048 is SHA-256, which a Single Window server would reject).
    if cert.key_algorithm is KeyAlgorithm.SM2:
        return SignAlgorithm.SM2_SM3
    return SignAlgorithm.RSA_SHA1


def _signature_arg(cert: CertificateInfo, args: dict[str, Any]) -> bytes:
    signature = _b64decode(_text(args, "signData"), "signData")
    return _sm2_signature(signature) if cert.key_algorithm is KeyAlgorithm.SM2 else signature


async def verify_sign(conn: Connection, args: dict[str, Any], func: str) -> list[Any]:
    message = _data_bytes(conn, _text(args, "inData"))
    cert = await _verify_cert(conn, args)
    signature = _signature_arg(cert, args)
    return _check(verify_message(cert, _protocol_algorithm(cert), message, signature))


async def verify_sign_no_hash(conn: Connection, args: dict[str, Any], func: str) -> list[Any]:
    cert = await _verify_cert(conn, args)
    signature = _signature_arg(cert, args)
    algorithm = _protocol_algorithm(cert)
    digest = _digest_arg(_text(args, "inData"), algorithm.digest_size)
    return _check(verify_digest(cert, algorithm, digest, signature))


async def sha1_digest(conn: Connection, args: dict[str, Any], func: str) -> list[Any]:
    data = _data_bytes(conn, _text(args, "szInfo"))
    return [_b64(hashlib.sha1(data).digest())]  # noqa: S324 - the protocol's hash


# Function name (after the cus-sec_ / security_ prefix) -> handler. The byte-returning
# functions and their AsPEM twins answer the same Base64 text (docs/compat.md).
HANDLERS: dict[str, Handler] = {
    "SpcInitEnvEx": init_env,
    "SpcClearEnv": clear_env,
    "SpcSetInitEnvPriority": set_priority,
    "SpcVerifyPIN": verify_pin,
    "SpcVerifyPINAll": verify_pin,
    "SpcChangePIN": change_pin,
    "SpcGetCardID": card_id,
    "SpcGetCertNo": cert_no,
    "SpcGetUName": user_name,
    "SpcGetEntID": ent_id,
    "SpcGetEntName": ent_name,
    "SpcGetEntMode": ent_mode,
    "SpcGetCardUserInfo": card_user_info,
    "getGetCardUserInfoAll": card_user_info,
    "SpcGetSignCert": sign_cert,
    "SpcGetSignCertAsPEM": sign_cert,
    "SpcGetEnvCert": env_cert,
    "SpcGetEnvCertAsPEM": env_cert,
    "SpcGetValidTimeFromCert": valid_time,
    "SpcSignData": sign_data,
    "SpcSignDataAsPEM": sign_data,
    "SpcSignDataNoHash": sign_no_hash,
    "SpcSignDataNoHashAsPEM": sign_no_hash,
    "SpcSignRandom": sign_random,
    "SpcVerifySignData": verify_sign,
    "SpcVerifySignDataNoHash": verify_sign_no_hash,
    "SpcSHA1Digest": sha1_digest,
    "SpcSHA1DigestAsPEM": sha1_digest,
}
