"""Dependencies routes declare. Authentication already happened in middleware; these
only read its result from the scope and enforce one guard per route.

Every route states exactly one guard: `Public()`, `Authenticated()` or `Require(perm)`.
A test walks the app's routes and fails on any route without one. Refusals of guarded
routes are recorded as `access.denied` by the one error handler (mlgate.problems), so
a 401/403 decided inside a route is recorded the same way.

Every dependency here is `async def`: FastAPI runs plain `def` dependencies in a
thread pool, which costs more than the whole authentication check.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from mlgate.auth.principal import Principal, auth_error_from_scope, principal_from_scope
from mlgate.context import META_KEY, RequestMeta
from mlgate.errors import NotAuthenticated, PermissionDenied

if TYPE_CHECKING:
    from mlgate.context import AppContext

GUARD_ATTR = "__mlgate_guard__"


async def get_context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


ContextDep = Annotated["AppContext", Depends(get_context)]


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    ctx: AppContext = request.app.state.ctx
    async with ctx.db.session() as session:
        yield session


# scope="function": the commit happens before the response is sent, so a failed commit
# is answered as an error rather than after a 2xx is already on the wire.
SessionDep = Annotated[AsyncSession, Depends(_session, scope="function")]


def authenticated_principal(request: Request) -> Principal:
    """The request's principal, or the reason there is none (raised)."""
    error = auth_error_from_scope(request.scope)
    if error is not None:
        raise error
    principal = principal_from_scope(request.scope)
    if principal is None:
        raise NotAuthenticated()
    return principal


def _mark(fn: Callable[..., Any], kind: str) -> Callable[..., Any]:
    setattr(fn, GUARD_ATTR, kind)
    return fn


def Public() -> Any:  # noqa: N802 - reads as a guard declaration
    """Guard for routes anyone may call."""

    async def public() -> None:
        return None

    return Depends(_mark(public, "public"))


def Authenticated() -> Any:  # noqa: N802
    """Guard for routes any valid principal may call."""

    async def authenticated(request: Request) -> Principal:
        return authenticated_principal(request)

    return Depends(_mark(authenticated, "authenticated"))


def Require(permission: str) -> Any:  # noqa: N802
    """Guard for routes that need one permission."""

    async def require(request: Request) -> Principal:
        principal = authenticated_principal(request)
        if not principal.has(permission):
            raise PermissionDenied(f"This needs the '{permission}' permission", scope=permission)
        return principal

    return Depends(_mark(require, f"require:{permission}"))


def guard_of(route: object) -> str | None:
    """The guard a route declares: 'public', 'authenticated', 'require:<perm>' or None."""
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return None
    guards = [
        getattr(dep.call, GUARD_ATTR)
        for dep in dependant.dependencies
        if hasattr(dep.call, GUARD_ATTR)
    ]
    return str(guards[0]) if len(guards) == 1 else None


async def current_principal(request: Request) -> Principal:
    """The principal of a route already guarded by Authenticated() or Require()."""
    return authenticated_principal(request)


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def meta_of(request: Request) -> RequestMeta:
    meta = request.scope.get(META_KEY)
    if isinstance(meta, RequestMeta):
        return meta
    client = request.client.host if request.client else "unknown"
    return RequestMeta(request_id="-", ip=client, user_agent=request.headers.get("user-agent", ""))


async def get_meta(request: Request) -> RequestMeta:
    return meta_of(request)


MetaDep = Annotated[RequestMeta, Depends(get_meta)]
