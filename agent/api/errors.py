"""One error format for every answer that is not a success:
`{"error": {"code", "message", "details"?}}`, stable codes, no traces, no echoed input.

Expected errors get handlers of their own classes: Starlette answers those in its
ExceptionMiddleware, inside SecurityMiddleware, so the listed origin's CORS headers are
added and the connection stays open. (A handler for `Exception` runs in the outermost
ServerErrorMiddleware, which re-raises after answering: uvicorn then logged a traceback
for every wrong PIN, closed the connection, and the page could not read the error.)
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent.api.models import ErrorAnswer, ErrorBody
from agent.errors import AgentError, OwnerError, WireError, wire_error
from agent.vocabulary import ErrorCode
from card.errors import CardError

log = logging.getLogger(__name__)

_HTTP_CODES = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED}


def error_response(wire: WireError) -> JSONResponse:
    body = ErrorAnswer(
        error=ErrorBody(code=wire.code, message=wire.message, details=wire.details or None)
    )
    headers = {"Cache-Control": "no-store"}
    if wire.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, round(wire.retry_after_s)))
    return JSONResponse(
        body.model_dump(exclude_none=True), status_code=wire.http_status, headers=headers
    )


async def _invalid(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Name the fields, never echo the input: it may hold a PIN.
    fields = [".".join(str(p) for p in e.get("loc", ()) if p != "body") for e in exc.errors()]
    return error_response(
        WireError(ErrorCode.INVALID_INPUT, 422, "Invalid request.", {"fields": sorted(set(fields))})
    )


async def _http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, ErrorCode.INVALID_INPUT)
    return error_response(WireError(code, exc.status_code, str(exc.detail)))


async def _known(_: Request, exc: Exception) -> JSONResponse:
    return error_response(wire_error(exc))


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error: %s", type(exc).__name__)
    return error_response(wire_error(exc))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http)
    # Only the project's own errors answer with their codes; anything else is a bug.
    for known in (AgentError, CardError, OwnerError):
        app.add_exception_handler(known, _known)
    app.add_exception_handler(Exception, _unexpected)
