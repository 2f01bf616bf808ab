"""The application factory: context, lifespan, middleware, error handlers, routers."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from mlgate import __version__, metrics, notify, problems
from mlgate.audit.service import AuditService
from mlgate.auth import repository as auth_repo
from mlgate.auth.authenticate import Authenticator
from mlgate.auth.keystore import load_kek
from mlgate.auth.middleware import AuthMiddleware
from mlgate.auth.passwords import PasswordService
from mlgate.auth.router import jwks_router
from mlgate.auth.router import router as auth_router
from mlgate.auth.service import AuthService
from mlgate.auth.throttle import LoginThrottle
from mlgate.auth.tokens import TokenService
from mlgate.auth.view import AuthView
from mlgate.bootstrap import BootstrapResult, announce_admin_password, bootstrap
from mlgate.context import AppContext
from mlgate.db import Database
from mlgate.deps import guard_of
from mlgate.docs import install_docs
from mlgate.health import router as health_router
from mlgate.limits.service import Accounting
from mlgate.middleware import BodyLimitMiddleware, RequestContextMiddleware
from mlgate.openapi import PROBLEM_SCHEMA
from mlgate.rbac.permissions import Permission
from mlgate.settings import Settings
from mlgate.state import make_state
from mlgate.users.router import router as users_router

log = logging.getLogger("mlgate")
MODEL_UPLOAD_PATH = "/api/v1/admin/models"
MULTIPART_SLACK_BYTES = 64 * 1024
KEY_TOUCH_SECONDS = 30.0


def build_context(settings: Settings) -> AppContext:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.effective_database_url)
    kek = load_kek(settings)
    passwords = PasswordService(settings)
    tokens = TokenService(settings, kek)
    view = AuthView(db)
    audit = AuditService(db)
    state = make_state(settings.redis_url)
    throttle = LoginThrottle(state, settings)
    auth = AuthService(settings, db, passwords, tokens, view, audit, throttle)
    return AppContext(
        settings=settings,
        db=db,
        passwords=passwords,
        tokens=tokens,
        auth=auth,
        view=view,
        authenticator=Authenticator(tokens, view),
        audit=audit,
        kek=kek,
        state=state,
        accounting=Accounting(settings, db, state, writer_db=audit.writer_db),
        throttle=throttle,
        metrics=metrics.Metrics(),
    )


async def load_signing_keys(ctx: AppContext) -> None:
    async with ctx.db.session() as session:
        ctx.tokens.load(await auth_repo.signing_keys(session))


async def _touch_api_keys(ctx: AppContext) -> None:
    """Write coalesced API-key last-used times (at most one write a minute per key)."""
    from datetime import UTC, datetime

    while True:
        await asyncio.sleep(KEY_TOUCH_SECONDS)
        uses = ctx.authenticator.take_key_uses()
        if not uses:
            continue
        try:
            async with ctx.db.session() as session:
                await auth_repo.touch_api_keys(
                    session, {k: datetime.fromtimestamp(t, UTC) for k, t in uses.items()}
                )
        except Exception as exc:
            log.warning("could not record API key use: %s", type(exc).__name__)


async def start(ctx: AppContext, *, run_bootstrap: bool = True) -> BootstrapResult | None:
    result = await bootstrap(ctx) if run_bootstrap else None
    await load_signing_keys(ctx)

    async def on_change(kind: str, _subject: str) -> None:
        if kind == "signing_key":
            await load_signing_keys(ctx)

    ctx.view.add_listener(on_change)
    await ctx.view.start()
    if ctx.metrics is not None:
        metrics.activate(ctx.metrics)
    await ctx.audit.start()
    if ctx.accounting is not None:
        ctx.view.add_listener(ctx.accounting.on_change)
        await ctx.accounting.start()
    await _start_optional(ctx)
    await notify.start_notifier(ctx)
    ctx.extras["key_toucher"] = asyncio.create_task(_touch_api_keys(ctx))
    return result


async def stop(ctx: AppContext) -> None:
    task = ctx.extras.pop("key_toucher", None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await notify.stop_notifier(ctx)
    await _stop_optional(ctx)
    if ctx.accounting is not None:
        await ctx.accounting.stop()
    await ctx.audit.stop()  # flushes every queued event before the database closes
    if ctx.state is not None:
        await ctx.state.close()
    await ctx.view.stop()
    ctx.passwords.close()
    await ctx.db.dispose()
    if ctx.metrics is not None:
        metrics.deactivate(ctx.metrics)


async def _start_optional(ctx: AppContext) -> None:
    with contextlib.suppress(ImportError):
        from mlgate.serving.service import start_serving

        await start_serving(ctx)


async def _stop_optional(ctx: AppContext) -> None:
    with contextlib.suppress(ImportError):
        from mlgate.serving.service import stop_serving

        await stop_serving(ctx)


def create_app(settings: Settings | None = None, *, run_bootstrap: bool = True) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = build_context(settings)
        result = await start(ctx, run_bootstrap=run_bootstrap)
        if result is not None:
            announce_admin_password(result, settings.admin_username)
        app.state.ctx = ctx
        try:
            yield
        finally:
            await stop(ctx)

    app = FastAPI(
        title="mlgate",
        version=__version__,
        description="Machine-learning models over HTTP behind built-in auth, audit and limits.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    problems.install(app)
    _include_routers(app)
    install_docs(app)
    _install_openapi(app)

    app.add_middleware(AuthMiddleware)
    if settings.cors_origins:
        wildcard = "*" in settings.cors_origins
        app.add_middleware(
            CORSMiddleware,
            allow_origins=["*"] if wildcard else settings.cors_origins,
            allow_credentials=not wildcard,  # never reflect origins with credentials
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After", "RateLimit", "RateLimit-Policy"],
        )
    app.add_middleware(
        BodyLimitMiddleware,
        default_limit=settings.max_body_bytes,
        # The file itself is held to MAX_MODEL_BYTES by the upload service; the body may
        # be larger by the multipart framing and the small form fields around it.
        limits={MODEL_UPLOAD_PATH: settings.max_model_bytes + MULTIPART_SLACK_BYTES},
    )
    app.add_middleware(
        RequestContextMiddleware,
        trusted_proxies=settings.trusted_proxies,
        on_finish=metrics.on_finish,
    )
    return app


# Routers of the domains beyond auth; each module exposes `router`.
OPTIONAL_ROUTERS: list[str] = [
    "mlgate.rbac.router",
    "mlgate.users.admin_router",
    "mlgate.users.sessions_router",
    "mlgate.auth.keys_router",
    "mlgate.metrics_router",
    "mlgate.audit.router",
    "mlgate.limits.router",
]


def _include_routers(app: FastAPI) -> None:
    app.include_router(health_router)
    app.include_router(jwks_router)
    app.include_router(auth_router)
    app.include_router(users_router)
    from mlgate.serving import router as serving_v1
    from mlgate.serving import v2 as serving_v2

    app.include_router(serving_v1.router, prefix="/api/v1")
    app.include_router(serving_v2.router)
    for module_name in OPTIONAL_ROUTERS:
        module = importlib.import_module(module_name)
        app.include_router(module.router)


def _install_openapi(app: FastAPI) -> None:
    from fastapi.responses import JSONResponse

    from mlgate.deps import Public

    def build() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, routes=app.routes, description=app.description
        )
        components = schema.setdefault("components", {})
        components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
        components["securitySchemes"] = {
            "OAuth2": {
                "type": "oauth2",
                "flows": {
                    "password": {
                        "tokenUrl": "/api/v1/auth/token",
                        "refreshUrl": "/api/v1/auth/token",
                        "scopes": {p.value: p.value for p in Permission},
                    }
                },
            },
            "APIKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
        for path, route in iter_route_paths(app):
            if not route.include_in_schema:
                continue
            guard = route_guard(route)
            if guard is None or guard == "public":
                continue
            scopes = [guard.split(":", 1)[1]] if guard.startswith("require:") else []
            for method in route.methods or ():
                op = schema["paths"].get(path, {}).get(method.lower())
                if op is not None:
                    op["security"] = [{"OAuth2": scopes}, {"APIKey": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = build  # type: ignore[method-assign]

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Public()])
    async def openapi_json() -> JSONResponse:
        return JSONResponse(build())


def iter_route_paths(app: FastAPI) -> list[tuple[str, APIRoute]]:
    """(full path, route) of every APIRoute, through included routers and their prefixes
    (FastAPI keeps included routers lazily, so `app.routes` does not list them)."""
    found: list[tuple[str, APIRoute]] = []

    def walk(routes: list[Any], prefix: str) -> None:
        for route in routes:
            if isinstance(route, APIRoute):
                found.append((prefix + route.path_format, route))
            elif hasattr(route, "original_router"):
                walk(list(route.original_router.routes), prefix + route.include_context.prefix)

    walk(list(app.router.routes), "")
    return found


def iter_api_routes(app: FastAPI) -> list[APIRoute]:
    return [route for _, route in iter_route_paths(app)]


def route_guard(route: APIRoute) -> str | None:
    """The guard a route declares: 'public', 'authenticated', 'require:<perm>' or None."""
    return guard_of(route)
