"""The PC/SC readers pcscd knows, read-only: no card is connected to.

Works while the agent holds the card exclusively (it asks pcscd about reader states,
not the card). Blocking: from an event loop, call it in a thread.
"""

from __future__ import annotations

from agent.access import ReaderView


def pcsc_readers() -> list[ReaderView]:
    """Every reader with card presence and ATR.

    Raises card.errors (ServiceUnavailable when pcscd cannot be reached) and
    ModuleNotFoundError without pyscard (the `pcsc` extra).
    """
    from smartcard import scard

    from card.pcsc import PcscContext, error_for_result

    ctx = PcscContext()
    try:
        names = ctx.list_readers()
        if not names:
            return []
        hr, states = ctx.get_status_change(0, [(n, scard.SCARD_STATE_UNAWARE) for n in names])
        if hr not in (scard.SCARD_S_SUCCESS, scard.SCARD_E_TIMEOUT):
            raise error_for_result(hr, "SCardGetStatusChange")
        if not states:  # nothing reported: say what we know
            return [ReaderView(n, False) for n in names]
        views = []
        for name, state, atr in states:
            present = bool(state & scard.SCARD_STATE_PRESENT)
            views.append(ReaderView(name, present, atr if present and atr else None))
        return views
    finally:
        ctx.release()
