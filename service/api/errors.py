"""The HTTP face of errors: each core error kind's status, and the handlers that write the one error shape."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.runtime.exceptions import (
    BackendUnavailable,
    ClientDisconnected,
    InputRejected,
    InvalidRequest,
    Overloaded,
    ServiceError,
    redact,
)
from service.runtime.wire import ErrorDetail, ErrorResponse

log = logging.getLogger("medix.errors")


# Each core error kind and the HTTP status and type it is answered with; the one place statuses are chosen.
STATUS: dict[type[ServiceError], tuple[int, str]] = {
    InvalidRequest: (422, "invalid_request"),
    InputRejected: (422, "input_rejected"),
    Overloaded: (429, "overloaded"),
    ClientDisconnected: (499, "client_closed"),  # nobody reads it; the status is for metrics and logs
    BackendUnavailable: (503, "backend_unavailable"),
}


# The error statuses a scoring route documents in the OpenAPI schema, each with the one error shape.
SCORING_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (401, 408, 413, 422, 429, 503)}


def error_response(status: int, type_: str, message: str, param: str | None = None,
                   retry_after: int | None = None) -> JSONResponse:
    body = ErrorResponse(error=ErrorDetail(type=type_, message=redact(message), param=param))
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def core_error_response(exc: ServiceError, retry_after_s: int) -> JSONResponse:
    """A core error as the one error shape, with the status its kind maps to (and Retry-After on 429/503)."""
    status, type_ = next((v for k, v in STATUS.items() if isinstance(exc, k)), (500, "internal_error"))
    retry = exc.retry_after_s if exc.retry_after_s is not None else (retry_after_s if status in (429, 503) else None)
    return error_response(status, type_, exc.message, exc.param, retry)


def loc_to_param(loc: Sequence[Any]) -> str:
    """("body", "items", 3, "ground_truth") -> "items[3].ground_truth"."""
    out = ""
    for part in loc:
        if part == "body" and not out:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "GroundTruthObject") or "[" in str(part):
            continue  # union-branch names pydantic adds to the location
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def _validation_message(err: dict[str, Any]) -> str:
    msg = str(err.get("msg", "invalid value"))
    return msg.removeprefix("Value error, ")


def install_error_handlers(app: FastAPI, retry_after_s: int) -> None:
    @app.exception_handler(ServiceError)
    async def _core(_: Request, exc: ServiceError) -> JSONResponse:
        return core_error_response(exc, retry_after_s)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        # A list over its bound says the most (its elements were never validated); else prefer the most specific
        # error: the one whose location is deepest.
        too_long = [e for e in errors if e.get("type") == "too_long" and len(e.get("loc", ())) <= 2]
        err = too_long[0] if too_long else max(errors, key=lambda e: len(e.get("loc", ()))) if errors else {}
        param = loc_to_param(err.get("loc", ()))
        type_ = "invalid_json" if err.get("type") == "json_invalid" else "invalid_request"
        message = f"{param}: {_validation_message(err)}"
        if too_long:
            ctx = err.get("ctx") or {}
            message = (f"{param}: {ctx.get('actual_length')} items is over the limit of {ctx.get('max_length')} "
                       "per request (MEDIX_MAX_ITEMS_PER_REQUEST); split the batch")
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more)"
        return error_response(422, type_, message, param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI could not read the body at all (e.g. invalid UTF-8)
            return error_response(400, "invalid_json", f"body: {exc.detail}", "body")
        return error_response(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal_error", "internal error; see the service log")
