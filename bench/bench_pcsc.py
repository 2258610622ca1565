"""APDU/s through pcscd + vpcd: raw pyscard transmit vs. PcscTransport.transmit vs.
the exchange layer on top of it; then signatures/s through the same stack.

The APDU loops talk to the same virtual card in the same run, so the ratios are the
cost of our layers. Signatures use the simulated E-Port card with its timing model off
(the stack's own cost) and on (what a kiosk would see with a real card). The card runs
in its own process (`card-sim vpcd`). By default a private pcscd is started (mount namespace, own
socket and vpcd ports, like the test tier); `--system` uses the running pcscd and
vpcd's default port (reader "Virtual PCD 00 00").

    .venv/bin/python bench/bench_pcsc.py [-n 5000] [--rounds 3] [--system]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from smartcard import scard

from card.apdu import CommandApdu
from card.eport.session import EPortSession
from card.exchange import ApduExchange
from card.pcsc import PcscContext, PcscTransport
from simulator.pcscd import (
    free_port_pair,
    pcscd_command,
    unshare_prefix,
    vpcd_driver,
    write_vpcd_conf,
)
from simulator.profiles import get_profile
from simulator.vpcd import VPCD_PORT

READER = "Virtual PCD 00 00"
APDU = bytes.fromhex("0084000004")  # GET CHALLENGE, 4 bytes back


@contextlib.contextmanager
def private_pcscd(port: int) -> Iterator[None]:
    """pcscd with its own /run/pcscd (bind-mounted) and vpcd on `port`/`port+1`."""
    driver, prefix = vpcd_driver(), unshare_prefix(probe=False)
    if driver is None or prefix is None:
        sys.exit("needs pcscd, vsmartcard-vpcd and unshare (or use --system)")
    workdir = Path(tempfile.mkdtemp(prefix="ca-bench-"))
    (workdir / "sock").mkdir()
    write_vpcd_conf(workdir / "conf", port, driver)
    os.environ["PCSCLITE_CSOCK_NAME"] = str(workdir / "sock" / "pcscd.comm")
    cmd = pcscd_command(workdir / "conf", workdir / "sock", prefix)
    with (workdir / "pcscd.log").open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def wait_for_card(reader: str, timeout: float = 10.0, *, present: bool = True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ctx = PcscContext()
        except Exception:
            time.sleep(0.02)  # pcscd still starting
            continue
        try:
            hr, states = ctx.get_status_change(200, [(reader, scard.SCARD_STATE_UNAWARE)])
            if hr == 0 and bool(states[0][1] & scard.SCARD_STATE_PRESENT) == present:
                return
            if hr == 0:
                state = states[0][1] & ~scard.SCARD_STATE_CHANGED
                ctx.get_status_change(500, [(reader, state)])
        finally:
            ctx.release()
    sys.exit(f"card still {'absent' if present else 'present'} in {reader!r} after {timeout}s")


def rate(n: int, step: Callable[[], object]) -> float:
    start = time.perf_counter()
    for _ in range(n):
        step()
    return n / (time.perf_counter() - start)


def bench_raw(reader: str, n: int) -> float:
    ctx = PcscContext()
    hr, handle, protocol = scard.SCardConnect(
        ctx.handle, reader, scard.SCARD_SHARE_EXCLUSIVE, scard.SCARD_PROTOCOL_T1
    )
    if hr != 0:
        raise RuntimeError(f"SCardConnect: {scard.SCardGetErrorMessage(hr)}")
    apdu = list(APDU)

    def step() -> None:
        hr, response = scard.SCardTransmit(handle, protocol, apdu)
        if hr != 0 or response[-2:] != [0x90, 0x00]:
            raise RuntimeError(f"raw transmit failed: {hr:#x} {response}")

    try:
        rate(min(n, 200), step)  # warm-up
        return rate(n, step)
    finally:
        scard.SCardDisconnect(handle, scard.SCARD_LEAVE_CARD)
        ctx.release()


def bench_transport(reader: str, n: int) -> float:
    with PcscTransport(reader) as transport:

        def step() -> None:
            if transport.transmit(APDU)[-2:] != b"\x90\x00":
                raise RuntimeError("transport transmit failed")

        rate(min(n, 200), step)
        return rate(n, step)


def bench_exchange(reader: str, n: int) -> float:
    with PcscTransport(reader) as transport:
        exchange = ApduExchange(transport)
        command = CommandApdu(0x00, 0x84, 0x00, 0x00, b"", 4)

        def step() -> None:
            if exchange.transmit(command).sw != 0x9000:
                raise RuntimeError("exchange transmit failed")

        rate(min(n, 200), step)
        return rate(n, step)


@contextlib.contextmanager
def card_process(port: int, profile: str, timing: str = "instant") -> Iterator[None]:
    """The simulated card in its own process (`card-sim vpcd`), like a real card is
    outside the host process: no GIL shared between card and host."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulator.cli",
            "vpcd",
            profile,
            "--port",
            str(port),
            "--timing",
            timing,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_card(READER)
        yield
    finally:
        proc.terminate()
        proc.wait(10)
        wait_for_card(READER, present=False)


def bench_signatures(port: int, profile: str, timing: str, n: int) -> float:
    with card_process(port, profile, timing), PcscTransport(READER) as transport:
        session = EPortSession.open(transport)
        session.verify_pin(get_profile(profile).pin)
        message = b"x" * 1024
        session.sign(message)  # warm-up (reads and parses the certificate)
        return rate(n, lambda: session.sign(message))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="APDUs per measurement")
    parser.add_argument("--rounds", type=int, default=21, help="interleaved rounds")
    parser.add_argument("--system", action="store_true", help="use the running pcscd")
    parser.add_argument("--signatures", type=int, default=200, help="signatures per figure")
    args = parser.parse_args(argv)

    port = VPCD_PORT if args.system else free_port_pair()
    daemon = contextlib.nullcontext() if args.system else private_pcscd(port)
    with daemon:
        with card_process(port, "legal-person-sm2"):
            # Many short rounds, the three loops in rotating order within each round:
            # pcscd/vpcd round-trip times drift by +-10% over seconds, far more than our
            # layers cost, so only per-round ratios compare like with like.
            loops: tuple[tuple[str, Callable[[], float]], ...] = (
                ("raw", lambda: bench_raw(READER, args.n)),
                ("transport", lambda: bench_transport(READER, args.n)),
                ("exchange", lambda: bench_exchange(READER, args.n)),
            )
            results: dict[str, list[float]] = {name: [] for name, _ in loops}
            for r in range(args.rounds):
                for name, run in loops[r % 3 :] + loops[: r % 3]:
                    results[name].append(run())
            raws, ours, exch = results["raw"], results["transport"], results["exchange"]
        sigs = []
        for profile in ("legal-person-sm2", "rsa2048"):
            for name, n in (
                ("instant", args.signatures),
                ("realistic", max(3, args.signatures // 40)),
            ):
                sigs.append((profile, name, bench_signatures(port, profile, name, n)))
    raw, tr, ex = (statistics.median(v) for v in (raws, ours, exch))
    tr_ratio = statistics.median(t / r for t, r in zip(ours, raws, strict=True))
    ex_ratio = statistics.median(e / r for e, r in zip(exch, raws, strict=True))
    print(
        f"APDUs through pcscd + vpcd ({args.rounds} interleaved rounds of {args.n}; ratio ="
        " median of per-round ratios; "
        f"{os.cpu_count()} cores)"
    )
    print(f"  raw pyscard SCardTransmit          : {raw:8.0f} APDU/s  1.000")
    print(f"  PcscTransport.transmit             : {tr:8.0f} APDU/s  {tr_ratio:5.3f}")
    print(
        f"  ApduExchange + PcscTransport       : {ex:8.0f} APDU/s  {ex_ratio:5.3f}"
        f"  (target >= 0.95)"
    )
    for name, values in (("raw", raws), ("transport", ours), ("exchange", exch)):
        print(
            f"    {name:9s} min/median/max: {min(values):7.0f} {statistics.median(values):7.0f}"
            f" {max(values):7.0f}"
        )
    print("signatures through EPortSession + pcscd (1 KiB message)")
    for profile, name, per_s in sigs:
        print(f"  {profile:18s} timing {name:9s}: {per_s:8.1f} /s  {1000 / per_s:7.1f} ms each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
