"""The native API's routes, one module per resource."""

from fastapi import APIRouter

from agent.api.routers import card, events, pairing, pin, sign, status

ALL: tuple[APIRouter, ...] = (
    status.router,
    pairing.router,
    card.router,
    pin.router,
    sign.router,
    events.router,
)
