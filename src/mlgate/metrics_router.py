"""`GET /metrics`: Prometheus text format, for holders of `metrics:read`."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from mlgate.deps import ContextDep, Require
from mlgate.errors import Unavailable
from mlgate.openapi import AUTH_RESPONSES, responses
from mlgate.rbac.permissions import Permission

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    dependencies=[Require(Permission.METRICS_READ)],
    response_class=Response,
    responses=responses(
        {200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}},
        AUTH_RESPONSES,
    ),
)
async def metrics(ctx: ContextDep) -> Response:
    if ctx.metrics is None:
        raise Unavailable("Metrics are not enabled in this process")
    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)
