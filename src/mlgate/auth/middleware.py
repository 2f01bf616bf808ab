"""Authentication as raw ASGI middleware: the principal (or the reason there is none)
goes into the scope; route guards only read it. A bad credential on a public route is
ignored, so only guarded routes answer 401."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from mlgate.auth.principal import AUTH_ERROR_KEY, PRINCIPAL_KEY
from mlgate.errors import InvalidRequest, MlgateError, TokenInvalid

if TYPE_CHECKING:
    from mlgate.context import AppContext


class AuthMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            ctx: AppContext | None = getattr(scope["app"].state, "ctx", None)
            if ctx is not None:
                await self._authenticate(ctx, scope)
        await self.app(scope, receive, send)

    async def _authenticate(self, ctx: AppContext, scope: Scope) -> None:
        headers = Headers(scope=scope)
        authorization = headers.getlist("authorization")
        api_keys = headers.getlist("x-api-key")
        if not authorization and not api_keys:
            return
        try:
            if len(authorization) + len(api_keys) > 1:
                raise InvalidRequest("Send one credential: Authorization or X-API-Key, not both")
            if authorization:
                scheme, _, credential = authorization[0].partition(" ")
                credential = credential.strip()
                if scheme.lower() != "bearer" or not credential:
                    raise TokenInvalid("Use the Bearer scheme: 'Authorization: Bearer <token>'")
                principal = await ctx.authenticator.authenticate(credential)
            else:
                principal = await ctx.authenticator.api_key(api_keys[0].strip())
            scope[PRINCIPAL_KEY] = principal
        except MlgateError as exc:
            scope[AUTH_ERROR_KEY] = exc
