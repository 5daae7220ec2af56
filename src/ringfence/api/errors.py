"""Every error a client can cause becomes one JSON shape, translated here and nowhere else.

    {"error": {"code": "invalid_input", "message": "...", "field": "body.username"}}

Domain errors never know HTTP; this module maps them (the reverse of raising HTTP errors in
handlers). Anything unexpected is logged and answered 500 without detail.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ringfence.auth.errors import (
    AccountSuspendedError,
    AuthError,
    InvalidCredentialsError,
    RateLimitedError,
)
from ringfence.privacy.erasure import LegalHoldError
from ringfence.privacy.verification import CodeNotSentError
from ringfence.provisioning.errors import (
    ConflictError,
    FeatureDisabledError,
    InsecureTransportError,
    InvalidInputError,
    NotFoundError,
    ProvisioningError,
)

logger = logging.getLogger(__name__)


def error_body(code: str, message: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    error.update(extra)
    return {"error": error}


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def _loc(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


async def _validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [{"field": _loc(err["loc"]), "reason": str(err["msg"])} for err in exc.errors()]
    first = details[0] if details else {"field": "body", "reason": "invalid request"}
    return _json(
        422,
        error_body(
            "invalid_input",
            f"{first['field']}: {first['reason']}",
            first["field"],
            details=details,
        ),
    )


_PROVISIONING_STATUS: dict[type[ProvisioningError], tuple[int, str]] = {
    NotFoundError: (404, "not_found"),
    ConflictError: (409, "conflict"),
    LegalHoldError: (409, "legal_hold"),
    CodeNotSentError: (502, "not_sent"),
    InvalidInputError: (422, "invalid_input"),
    InsecureTransportError: (403, "https_required"),
}


async def _provisioning(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProvisioningError)
    if isinstance(exc, FeatureDisabledError):
        return _json(
            403,
            error_body("feature_disabled", exc.message, feature=exc.feature, reason=exc.reason),
        )
    # The nearest class with a status: a subclass (LegalHoldError) answers as its base does.
    status, code = next(
        (_PROVISIONING_STATUS[cls] for cls in type(exc).__mro__ if cls in _PROVISIONING_STATUS),
        (400, "bad_request"),
    )
    return _json(status, error_body(code, exc.message, exc.field))


async def _auth(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AuthError)
    if isinstance(exc, RateLimitedError):
        retry = max(1, math.ceil(exc.retry_after_s))
        return _json(
            429,
            error_body("rate_limited", str(exc), retry_after_s=retry),
            {"Retry-After": str(retry)},
        )
    if isinstance(exc, AccountSuspendedError):
        return _json(403, error_body("account_suspended", str(exc)))
    assert isinstance(exc, InvalidCredentialsError)
    return _json(401, error_body("unauthorized", str(exc)), {"WWW-Authenticate": "Bearer"})


async def _http(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}.get(
        exc.status_code, "http_error"
    )
    return _json(exc.status_code, error_body(code, str(exc.detail)), dict(exc.headers or {}))


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(ProvisioningError, _provisioning)
    app.add_exception_handler(AuthError, _auth)
    app.add_exception_handler(StarletteHTTPException, _http)
