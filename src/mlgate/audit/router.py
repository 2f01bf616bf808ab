"""Read side of the audit log (`audit:read`). Append-only: no route updates or deletes
events, so PUT, PATCH and DELETE answer 405."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from mlgate.audit import schemas
from mlgate.audit.repository import AuditFilter
from mlgate.audit.schemas import AuditEventOut, AuditPage
from mlgate.deps import ContextDep, Require, SessionDep
from mlgate.errors import NotFound
from mlgate.openapi import AUTH_RESPONSES, NOT_FOUND, responses
from mlgate.rbac.permissions import Permission

router = APIRouter(prefix="/api/v1/admin/audit", tags=["audit"])
Outcome = Literal["success", "failure", "denied"]


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def audit_filter(
    actor: Annotated[str | None, Query(max_length=320, description="Username")] = None,
    actor_id: uuid.UUID | None = None,
    action: Annotated[str | None, Query(max_length=64, description="Name; `x.*` prefix")] = None,
    outcome: Outcome | None = None,
    resource: Annotated[str | None, Query(max_length=256)] = None,
    request_id: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[datetime | None, Query(description="Inclusive, ISO 8601")] = None,
    until: Annotated[datetime | None, Query(description="Exclusive, ISO 8601")] = None,
) -> AuditFilter:
    return AuditFilter(
        actor=actor,
        actor_id=actor_id,
        action=action,
        outcome=outcome,
        resource=resource,
        request_id=request_id,
        since=_utc(since),
        until=_utc(until),
    )


FilterDep = Annotated[AuditFilter, Depends(audit_filter)]


@router.get("", dependencies=[Require(Permission.AUDIT_READ)], responses=AUTH_RESPONSES)
async def list_events(
    f: FilterDep,
    session: SessionDep,
    ctx: ContextDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    order: Literal["asc", "desc"] = "asc",
) -> AuditPage:
    """Events in (at, id) order; follow `next_cursor` for the next page."""
    rows, next_cursor = await ctx.audit.page(
        session, f, limit=limit, cursor=cursor, descending=order == "desc"
    )
    return AuditPage(items=[schemas.event_out(r) for r in rows], next_cursor=next_cursor)


@router.get(
    "/export",
    dependencies=[Require(Permission.AUDIT_READ)],
    responses=AUTH_RESPONSES,
    response_class=StreamingResponse,
)
async def export_events(
    f: FilterDep, ctx: ContextDep, format: Literal["jsonl", "csv"] = "jsonl"
) -> StreamingResponse:
    """Every matching event, streamed in (at, id) order in constant memory."""

    async def body() -> AsyncIterator[str]:
        if format == "csv":
            yield schemas.csv_header()
        render = schemas.csv_line if format == "csv" else schemas.jsonl_line
        async for row in ctx.audit.iterate(f):
            yield render(row)

    media = "text/csv; charset=utf-8" if format == "csv" else "application/x-ndjson"
    name = f"audit.{format}"
    return StreamingResponse(
        body(), media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


@router.get(
    "/{event_id}",
    dependencies=[Require(Permission.AUDIT_READ)],
    responses=responses(AUTH_RESPONSES, NOT_FOUND),
)
async def get_event(event_id: uuid.UUID, session: SessionDep, ctx: ContextDep) -> AuditEventOut:
    row = await ctx.audit.get(session, event_id)
    if row is None:
        raise NotFound("No such audit event")
    return schemas.event_out(row)
