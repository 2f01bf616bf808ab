"""Dependencies routes declare. Authentication already happened in middleware; these
only read its result from the scope and enforce one guard per route.

Every route states exactly one guard: `Public()`, `Authenticated()` or `Require(perm)`.
A test walks the app's routes and fails on any route without one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from mlgate.auth.principal import Principal, auth_error_from_scope, principal_from_scope
from mlgate.context import META_KEY, RequestMeta
from mlgate.errors import MlgateError, NotAuthenticated, PermissionDenied

if TYPE_CHECKING:
    from mlgate.context import AppContext

GUARD_ATTR = "__mlgate_guard__"


def get_context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


ContextDep = Annotated["AppContext", Depends(get_context)]


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    ctx = get_context(request)
    async with ctx.db.session() as session:
        yield session


# scope="function": the commit happens before the response is sent, so a failed commit
# is answered as an error rather than after a 2xx is already on the wire.
SessionDep = Annotated[AsyncSession, Depends(_session, scope="function")]


def _authenticated_principal(request: Request) -> Principal:
    error = auth_error_from_scope(request.scope)
    if error is not None:
        raise error
    principal = principal_from_scope(request.scope)
    if principal is None:
        raise NotAuthenticated()
    return principal


async def _denied(request: Request, exc: MlgateError, permission: str | None = None) -> None:
    """Record `access.denied` for a 401/403 on a protected route, committed before the
    answer leaves. Anonymous 401s are aggregated per IP and minute (`details.count`)."""
    from mlgate.audit.events import Action, AuditEvent

    ctx: AppContext | None = getattr(request.app.state, "ctx", None)
    if ctx is None:
        return
    route = request.scope.get("route")
    template = getattr(route, "path", request.url.path)
    meta = get_meta(request)
    principal = principal_from_scope(request.scope)
    details: dict[str, Any] = {"code": str(exc.code)}
    if permission is not None and exc.status == 403:
        details["permission"] = permission
    event = AuditEvent.of(
        Action.ACCESS_DENIED,
        "denied",
        meta=meta,
        principal=principal,
        resource=f"route:{request.method} {template}",
        status=exc.status,
        details=details,
    )
    if principal is None:
        await ctx.audit.submit_aggregated(event, f"{Action.ACCESS_DENIED}|{exc.status}|{meta.ip}")
    else:
        await ctx.audit.submit(event)


async def _check(request: Request, permission: str | None) -> Principal:
    try:
        principal = _authenticated_principal(request)
        if permission is not None and not principal.has(permission):
            raise PermissionDenied(f"This needs the '{permission}' permission", scope=permission)
    except MlgateError as exc:
        await _denied(request, exc, permission)
        raise
    return principal


async def _route_refused(request: Request, exc: MlgateError, permission: str | None) -> None:
    # A 401/403 decided inside the route (e.g. an API key may not log out).
    if exc.status in (401, 403):
        await _denied(request, exc, permission)


def _mark(fn: Callable[..., Any], kind: str) -> Callable[..., Any]:
    setattr(fn, GUARD_ATTR, kind)
    return fn


def Public() -> Any:  # noqa: N802 - reads as a guard declaration
    """Guard for routes anyone may call."""

    def public() -> None:
        return None

    return Depends(_mark(public, "public"))


def Authenticated() -> Any:  # noqa: N802
    """Guard for routes any valid principal may call. A refusal (401, or a 403 decided
    by the route) is recorded as `access.denied`."""

    async def authenticated(request: Request) -> AsyncIterator[Principal]:
        principal = await _check(request, None)
        try:
            yield principal
        except MlgateError as exc:
            await _route_refused(request, exc, None)
            raise

    return Depends(_mark(authenticated, "authenticated"), scope="function")


def Require(permission: str) -> Any:  # noqa: N802
    """Guard for routes that need one permission. A refusal is recorded as
    `access.denied`."""

    async def require(request: Request) -> AsyncIterator[Principal]:
        principal = await _check(request, permission)
        try:
            yield principal
        except MlgateError as exc:
            await _route_refused(request, exc, permission)
            raise

    return Depends(_mark(require, f"require:{permission}"), scope="function")


def current_principal(request: Request) -> Principal:
    """The principal of a route already guarded by Authenticated() or Require()."""
    return _authenticated_principal(request)


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def get_meta(request: Request) -> RequestMeta:
    meta = request.scope.get(META_KEY)
    if isinstance(meta, RequestMeta):
        return meta
    client = request.client.host if request.client else "unknown"
    return RequestMeta(request_id="-", ip=client, user_agent=request.headers.get("user-agent", ""))


MetaDep = Annotated[RequestMeta, Depends(get_meta)]
