"""The in-process demo (`card-sim demo`, `card-agent demo`): the card layer end to end
on a simulated card, no server.

Opens a software E-Port card in-process, reads what the Single Window reads, verifies
the factory PIN, signs a message the way the official client does and checks the
signature against the card's certificate. Prints no PIN.
"""

from __future__ import annotations

import time

import click

from card.crypto.certs import parse_certificate
from card.crypto.rsa import rsa_verify_pkcs1
from card.crypto.sm2 import sm2_verify
from card.eport.driver import CertSlot, SignAlgorithm
from card.eport.session import EPortSession
from simulator.card_os import SimulatedCard
from simulator.inprocess import InProcessTransport
from simulator.profiles import get_profile


def run_demo(profile_name: str, message: str) -> bool:
    profile = get_profile(profile_name)
    card = SimulatedCard.create(profile)
    session = EPortSession.open(InProcessTransport(card))

    info = session.card_info()
    cert = parse_certificate(session.certificate(CertSlot.SIGN))
    click.echo(f"card         {info.masked_card_number} ({info.card_type.value})")
    click.echo(f"holder       {info.holder_name}")
    click.echo(f"company      {info.company_name}  USCC {info.uscc}")
    click.echo(f"certificate  no. {cert.serial_hex}  {cert.key_algorithm}-{cert.key_bits}")
    click.echo(f"             CN={cert.subject_cn}, OU={cert.subject_ou}")
    click.echo(f"             valid {cert.not_before:%Y-%m-%d} .. {cert.not_after:%Y-%m-%d}")

    status = session.pin_status()
    if status.blocked:
        click.echo("PIN          blocked: this card cannot sign (as on a real card)")
        return False
    click.echo(f"PIN          {status.tries_left} tries left; verifying the factory PIN")
    session.verify_pin(profile.pin)

    started = time.perf_counter()
    signature = session.sign(message.encode("utf-8"))
    elapsed_ms = (time.perf_counter() - started) * 1000
    click.echo(f"signed       {message!r} with {signature.algorithm.value} in {elapsed_ms:.1f} ms")
    click.echo(f"signature    {signature.value.hex()}")
    if signature.algorithm is SignAlgorithm.SM2_SM3:
        assert cert.sm2_point is not None
        ok = sm2_verify(cert.sm2_point, message.encode("utf-8"), signature.value)
    else:
        assert cert.rsa_public_key is not None
        name = "sha1" if signature.algorithm is SignAlgorithm.RSA_SHA1 else "sha256"
        ok = rsa_verify_pkcs1(cert.rsa_public_key, signature.value, message.encode("utf-8"), name)
    click.echo(f"verified     {'yes' if ok else 'NO'} (against the card's signing certificate)")
    session.logout()
    return ok
