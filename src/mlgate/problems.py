"""The one place errors become HTTP answers: RFC 9457 problem+json everywhere, RFC 6749
§5.2 JSON on the token endpoint. No stack trace, SQL text or secret reaches a client."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlgate.auth.principal import principal_from_scope
from mlgate.context import META_KEY, RequestMeta
from mlgate.db import map_db_error
from mlgate.errors import ErrorCode, MlgateError, OAuthError

log = logging.getLogger("mlgate.errors")
PROBLEM_TYPE = "application/problem+json"

HTTP_CODES: dict[int, tuple[ErrorCode, str]] = {
    400: (ErrorCode.INVALID_REQUEST, "Invalid request"),
    401: (ErrorCode.NOT_AUTHENTICATED, "Not authenticated"),
    403: (ErrorCode.PERMISSION_DENIED, "Permission denied"),
    404: (ErrorCode.NOT_FOUND, "Not found"),
    405: (ErrorCode.METHOD_NOT_ALLOWED, "Method not allowed"),
    409: (ErrorCode.CONFLICT, "Conflict"),
    413: (ErrorCode.PAYLOAD_TOO_LARGE, "Payload too large"),
    415: (ErrorCode.UNSUPPORTED_MEDIA_TYPE, "Unsupported media type"),
    422: (ErrorCode.VALIDATION_ERROR, "Validation error"),
    429: (ErrorCode.RATE_LIMITED, "Too many requests"),
    503: (ErrorCode.UNAVAILABLE, "Service unavailable"),
}


def request_id_of(scope: MutableMapping[str, Any]) -> str:
    meta = scope.get(META_KEY)
    return meta.request_id if isinstance(meta, RequestMeta) else "-"


def problem_body(
    *,
    status: int,
    code: str,
    title: str,
    detail: str,
    request_id: str,
    errors: list[dict[str, Any]] | None = None,
    path: str = "",
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": f"urn:mlgate:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "request_id": request_id,
    }
    if errors is not None:
        body["errors"] = errors
    if path.startswith("/v2"):
        body["error"] = detail  # KServe and Triton clients read this field
    return body


def problem_response(request: Request, exc: MlgateError) -> JSONResponse:
    body = problem_body(
        status=exc.status,
        code=str(exc.code),
        title=exc.title,
        detail=exc.detail,
        request_id=request_id_of(request.scope),
        errors=exc.errors,
        path=request.url.path,
    )
    return JSONResponse(body, status_code=exc.status, headers=exc.headers, media_type=PROBLEM_TYPE)


def _pointer(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc[1:]] if loc and loc[0] in ("body", "query", "path") else []
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def install(app: FastAPI) -> None:
    async def on_mlgate_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, MlgateError)
        if exc.status in (401, 403):
            try:
                await record_denied(request, exc)
            except MlgateError as failure:  # the audit store is down: fail closed (503)
                return problem_response(request, failure)
        return problem_response(request, exc)

    async def on_oauth_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, OAuthError)
        headers = {"Cache-Control": "no-store", "Pragma": "no-cache", **exc.headers}
        return JSONResponse(
            {"error": exc.error, "error_description": exc.description},
            status_code=exc.status,
            headers=headers,
        )

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {
                "loc": list(err.get("loc", ())),
                "msg": str(err.get("msg", "invalid")),
                "pointer": _pointer(tuple(err.get("loc", ()))),
            }
            for err in exc.errors()
        ]
        first = errors[0] if errors else None
        detail = (
            f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
            if first
            else "Invalid input"
        )
        return problem_response(request, _validation(detail, errors))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code, title = HTTP_CODES.get(exc.status_code, (ErrorCode.INTERNAL_ERROR, "Error"))
        error = MlgateError(
            str(exc.detail) if exc.detail else title,
            status=exc.status_code,
            code=code,
            title=title,
            headers=dict(exc.headers or {}),
        )
        return problem_response(request, error)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        mapped = map_db_error(exc)
        if mapped is not None:
            log.warning(
                "database error answered as %s: %s (request %s)",
                mapped.status,
                type(exc).__name__,
                request_id_of(request.scope),
            )
            return problem_response(request, mapped)
        log.error("unhandled error (request %s)", request_id_of(request.scope), exc_info=exc)
        return problem_response(
            request, MlgateError("An unexpected error occurred; it has been logged")
        )

    app.add_exception_handler(MlgateError, on_mlgate_error)
    app.add_exception_handler(OAuthError, on_oauth_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    # Database and socket failures are answered by the exception middleware (inside ours,
    # so the answer still carries the request id); anything else reaches
    # RequestContextMiddleware, which renders the same 500 problem.
    app.add_exception_handler(SQLAlchemyError, on_unexpected)
    app.add_exception_handler(OSError, on_unexpected)


async def record_denied(request: Request, exc: MlgateError) -> None:
    """`access.denied` for a 401/403 on a guarded route (by its guard or decided inside
    it), committed before the answer leaves. Anonymous 401s are aggregated per IP and
    minute into one event with `details.count`."""
    from mlgate.audit.events import Action, AuditEvent
    from mlgate.deps import guard_of, meta_of

    route = request.scope.get("route")
    guard = guard_of(route)
    ctx = getattr(request.app.state, "ctx", None)
    if ctx is None or guard is None or guard == "public":
        return
    meta = meta_of(request)
    principal = principal_from_scope(request.scope)
    details: dict[str, Any] = {"code": str(exc.code)}
    if exc.status == 403 and guard.startswith("require:"):
        details["permission"] = guard.removeprefix("require:")
    event = AuditEvent.of(
        Action.ACCESS_DENIED,
        "denied",
        meta=meta,
        principal=principal,
        resource=f"route:{request.method} {getattr(route, 'path', request.url.path)}",
        status=exc.status,
        details=details,
    )
    if principal is None:
        await ctx.audit.submit_aggregated(event, f"{Action.ACCESS_DENIED}|{exc.status}|{meta.ip}")
    else:
        await ctx.audit.submit(event)


def _validation(detail: str, errors: list[dict[str, Any]]) -> MlgateError:
    from mlgate.errors import ValidationFailed

    return ValidationFailed(detail, errors=errors)
