"""The card: present and recognised, its data, its signing certificate (chain, expiry),
the PIN's tries, and (with --sign) a test signature."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
from datetime import UTC, datetime

from agent.access import CardCommandError
from agent.selftest.card_errors import card_failure
from agent.selftest.context import SelftestContext
from agent.selftest.registry import Need, Outcome, check
from agent.selftest.trust import load_pem_bundle, simulator_anchors
from card import errors as ce
from card.crypto.certs import CertificateChainError, CertificateInfo, days_left, verify_chain
from card.crypto.rsa import rsa_verify_pkcs1
from card.crypto.sm2 import sm2_verify
from card.crypto.verify import verify_digest
from card.eport.atr import describe_atr
from card.eport.driver import CertSlot, SignAlgorithm
from card.identify import DriverInfo

EXPIRY_WARN_DAYS = 30  # the Single Window warns under 30 days
NO_CARD = Outcome(
    "warn",
    "no card in the reader: card checks skipped",
    "insert an E-Port card and run the selftest again",
)


def _hex(data: bytes | None) -> str | None:
    return data.hex().upper() if data is not None else None


@check("card", "card present and recognised", order=50, needs=(Need.CARD,), provides=Need.CARD)
async def card(ctx: SelftestContext) -> Outcome:
    if ctx.reader is not None and not ctx.reader.card_present:
        ctx.block(Need.CARD, "no card")
        return NO_CARD
    try:
        atr = await ctx.access.card_atr()
    except CardCommandError as exc:
        ctx.block(Need.CARD, "card not usable")
        return NO_CARD if exc.code == "card_missing" else card_failure(exc, "card")
    if atr is None and ctx.reader is not None:
        atr = ctx.reader.atr
    try:
        driver: DriverInfo | None = await ctx.access.driver_info()
    except CardCommandError:  # an agent older than the driver endpoint; the card opened
        driver = None
    known = describe_atr(atr) if atr else None
    details = {
        "atr": _hex(atr) if atr else None,
        "known_atr": known,
        "driver": dataclasses.asdict(driver) if driver is not None else None,
    }
    opened = "E-Port application selected"
    if driver is not None:
        opened = f"driver {driver.describe()}"
    if not atr:
        hidden = "an SKF library hides it" if driver and driver.driver == "skf" else "not visible"
        return Outcome("pass", f"ATR {hidden}; {opened}", details=details)
    what = known or "ATR not in the known-ATR table"
    return Outcome("pass", f"ATR {_hex(atr)} ({what}); {opened}", details=details)


@check("card_info", "card info readable", order=60, needs=(Need.CARD,))
async def card_info(ctx: SelftestContext) -> Outcome:
    try:
        info = await ctx.access.card_info()
    except CardCommandError as exc:
        return card_failure(exc, "card info")
    problems = []
    if not (info.card_number.isascii() and info.card_number.isdigit()):
        problems.append("card number is not digits")
    if len(info.uscc) != 18:
        problems.append("USCC is not 18 characters")
    details = {"card": info.masked_card_number, "card_type": info.card_type.value}
    if problems:
        return Outcome(
            "warn", "; ".join(problems), "the card's data looks damaged: ask the issuer", details
        )
    return Outcome(
        "pass", f"card {info.masked_card_number} ({info.card_type.value})", details=details
    )


@check(
    "certificate",
    "signing certificate readable",
    order=70,
    needs=(Need.CARD,),
    provides=Need.CERTIFICATE,
)
async def certificate(ctx: SelftestContext) -> Outcome:
    try:
        certs = await ctx.access.certificates()
    except CardCommandError as exc:
        ctx.block(Need.CERTIFICATE, "certificate not readable")
        return card_failure(exc, "certificate")
    except ce.ProtocolError as exc:
        ctx.block(Need.CERTIFICATE, "certificate not readable")
        return Outcome(
            "fail", f"certificate does not parse: {exc}", "the card is damaged: ask the issuer"
        )
    cert = ctx.sign_cert = certs[CertSlot.SIGN]
    details = {
        "certificate_number": cert.serial_hex,
        "issuer_cn": cert.issuer_cn,
        "key": f"{cert.key_algorithm}-{cert.key_bits}",
        "not_after": cert.not_after.isoformat(),
    }
    return Outcome(
        "pass",
        f"no. {cert.serial_hex}, {cert.key_algorithm}-{cert.key_bits}, issuer {cert.issuer_cn}",
        details=details,
    )


@check("chain", "certificate chain valid", order=80, needs=(Need.CERTIFICATE,))
async def chain(ctx: SelftestContext) -> Outcome:
    cert = ctx.sign_cert
    assert cert is not None  # Need.CERTIFICATE
    bundle = ctx.config.card.ca_bundle
    if bundle is None:
        if ctx.config.card.backend != "simulated":
            return Outcome(
                "warn",
                "no CA bundle configured: chain not checked",
                "set card.ca_bundle to the China E-Port CA certificates (PEM)",
            )
        anchors = await asyncio.to_thread(simulator_anchors, ctx.config)
        source = "the simulator's test CA"
        if not anchors:
            return Outcome(
                "warn",
                "simulated card kept in memory: its CA is not available",
                "set card.ca_bundle, or card.sim_state_file",
            )
    else:
        try:
            anchors = await asyncio.to_thread(load_pem_bundle, bundle)
        except (OSError, ce.ProtocolError) as exc:
            return Outcome(
                "warn",
                f"CA bundle {bundle} not readable: {exc}",
                "install the CA bundle or fix card.ca_bundle",
            )
        source = str(bundle)
        if not anchors:
            return Outcome("warn", f"no certificate in CA bundle {bundle}", "fix card.ca_bundle")
    try:
        await asyncio.to_thread(verify_chain, cert.der, [], anchors)
    except (CertificateChainError, ce.ProtocolError) as exc:
        return Outcome(
            "fail",
            f"does not chain to {source}: {exc}",
            "a card from another CA, or the wrong card.ca_bundle: check both",
        )
    return Outcome("pass", f"issued by {cert.issuer_cn} (trusted: {source})")


@check("expiry", "certificate not expiring", order=90, needs=(Need.CERTIFICATE,))
async def expiry(ctx: SelftestContext) -> Outcome:
    cert, now = ctx.sign_cert, datetime.now(UTC)
    assert cert is not None  # Need.CERTIFICATE
    left = days_left(cert, now)
    details = {"days_left": round(left, 1), "not_after": cert.not_after.isoformat()}
    if now < cert.not_before:
        return Outcome(
            "fail",
            f"not valid before {cert.not_before:%Y-%m-%d}",
            "check the system clock (timedatectl); else the card is not yet valid",
            details,
        )
    if left < 0:
        return Outcome(
            "fail",
            f"expired on {cert.not_after:%Y-%m-%d}",
            "the holder must renew the certificate with China E-Port",
            details,
        )
    if left < EXPIRY_WARN_DAYS:
        return Outcome(
            "warn",
            f"expires in {int(left)} days ({cert.not_after:%Y-%m-%d})",
            "the holder should renew the certificate; the Single Window warns from now on",
            details,
        )
    return Outcome(
        "pass", f"valid until {cert.not_after:%Y-%m-%d} ({int(left)} days)", details=details
    )


@check("pin", "PIN tries left", order=100, needs=(Need.CARD,))
async def pin(ctx: SelftestContext) -> Outcome:
    try:
        st = ctx.pin_status = await ctx.access.pin_status()
    except CardCommandError as exc:
        return card_failure(exc, "PIN status")
    floor = ctx.config.security.pin_floor
    details = {"tries_left": st.tries_left, "blocked": st.blocked, "verified": st.verified}
    if st.blocked:
        return Outcome(
            "fail",
            "PIN blocked",
            "the holder must have the PIN unblocked by the issuer (China E-Port)",
            details,
        )
    if st.tries_left is None:
        return Outcome("pass", "PIN verified (a session is open)", details=details)
    if st.tries_left <= floor + 1:
        return Outcome(
            "warn",
            f"only {st.tries_left} PIN tries left",
            "the holder must use the right PIN; the agent keeps the last "
            f"{floor} for an explicit confirmation",
            details,
        )
    return Outcome("pass", f"{st.tries_left} tries left (none spent)", details=details)


def verify_test_signature(cert: CertificateInfo, message: bytes, value: bytes, algo: str) -> bool:
    """Check a signature over `message` itself (not a digest someone else computed)."""
    algorithm = SignAlgorithm(algo)
    if algorithm is SignAlgorithm.SM2_SM3:
        return cert.sm2_point is not None and sm2_verify(cert.sm2_point, message, value)
    if cert.rsa_public_key is None:
        return False
    name = "sha1" if algorithm is SignAlgorithm.RSA_SHA1 else "sha256"
    return rsa_verify_pkcs1(cert.rsa_public_key, value, message, name)


@check(
    "sign",
    "test signature verifies",
    order=110,
    needs=(Need.SIGN_REQUEST, Need.CARD, Need.CERTIFICATE),
)
async def sign(ctx: SelftestContext) -> Outcome:
    request = ctx.sign
    assert request is not None  # Need.SIGN_REQUEST
    if ctx.pin_status is not None and ctx.pin_status.blocked:
        return Outcome("skip", "PIN blocked")
    message = f"card-agent selftest {datetime.now(UTC).isoformat()} {secrets.token_hex(8)}"
    data = message.encode()
    started = time.monotonic()
    try:
        # The card service verifies the PIN (its floor applies), signs, checks the
        # signature against the certificate, audits and ends the session.
        test = await ctx.access.sign_test(
            request.pin, data, confirm_final_try=request.confirm_final_try
        )
    except CardCommandError as exc:
        if exc.code == "pin_tries_low":
            return Outcome(
                "warn",
                f"not attempted: {exc.message}",
                "add --confirm-final-try only if the PIN is certainly right",
            )
        if exc.code == "pin_incorrect":
            return Outcome(
                "fail",
                f"wrong PIN ({exc.details.get('tries_left')} tries left)",
                "the holder must give the right PIN",
            )
        return card_failure(exc, "signing")
    ms = (time.monotonic() - started) * 1000
    signature, cert = test.signature, test.certificate
    details = {"algorithm": signature.algorithm.value, "duration_ms": round(ms, 1)}
    # Checked here again, over the message itself: what the selftest reports is what
    # it saw, whichever way the card was reached.
    ok = verify_digest(
        cert, signature.algorithm, signature.digest, signature.value
    ) and verify_test_signature(cert, data, signature.value, signature.algorithm.value)
    if not ok:
        return Outcome(
            "fail",
            f"{signature.algorithm.value} signature does NOT verify against the certificate",
            "the card or its key is faulty: do not use it; contact the issuer",
            details,
        )
    return Outcome(
        "pass",
        f"{signature.algorithm.value} signature verified against no. {cert.serial_hex} "
        f"({ms:.0f} ms)",
        details=details,
    )
