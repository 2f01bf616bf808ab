"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from mlgate.deps import ContextDep, Public

router = APIRouter(tags=["operations"])


@router.get("/healthz", dependencies=[Public()])
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", dependencies=[Public()])
async def readyz(ctx: ContextDep) -> JSONResponse:
    checks: dict[str, Any] = {}
    try:
        async with ctx.db.session() as session:
            await session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception:
        checks["database"] = "unavailable"
    if ctx.state is not None and ctx.settings.redis_url:
        checks["redis"] = "ok" if await ctx.state.healthy() else "unavailable"
    if ctx.models is not None:
        checks["models"] = "ok" if getattr(ctx.models, "ready", True) else "loading"
    ready = checks["database"] == "ok" and checks.get("models", "ok") == "ok"
    body = {"status": "ready" if ready else "unavailable", "checks": checks}
    return JSONResponse(body, status_code=200 if ready else 503)
