"""SQL for audit events: inserts (one or many), the keyset-paged query, the purge."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from mlgate.audit.tables import AuditEventRow


@dataclass(frozen=True, slots=True)
class AuditFilter:
    actor: str | None = None
    actor_id: uuid.UUID | None = None
    action: str | None = None
    outcome: str | None = None
    resource: str | None = None
    request_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def add(session: AsyncSession, row: AuditEventRow) -> None:
    session.add(row)


async def insert_many(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(AuditEventRow), rows)


async def set_details(session: AsyncSession, event_id: uuid.UUID, details: dict[str, Any]) -> None:
    """Only the group-commit writer calls this, to raise the count of its own aggregate
    event within the minute it covers. No route updates events."""
    await session.execute(
        update(AuditEventRow).where(AuditEventRow.id == event_id).values(details=details)
    )


def _conditions(f: AuditFilter) -> list[ColumnElement[bool]]:
    c: list[ColumnElement[bool]] = []
    if f.actor is not None:
        c.append(func.lower(AuditEventRow.actor) == f.actor.lower())
    if f.actor_id is not None:
        c.append(AuditEventRow.actor_id == f.actor_id)
    if f.action is not None:
        if f.action.endswith("*"):  # `admin.role.*` selects a family of actions
            prefix = f.action[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            c.append(AuditEventRow.action.like(prefix + "%", escape="\\"))
        else:
            c.append(AuditEventRow.action == f.action)
    if f.outcome is not None:
        c.append(AuditEventRow.outcome == f.outcome)
    if f.resource is not None:
        c.append(AuditEventRow.resource == f.resource)
    if f.request_id is not None:
        c.append(AuditEventRow.request_id == f.request_id)
    if f.since is not None:
        c.append(AuditEventRow.at >= f.since)
    if f.until is not None:
        c.append(AuditEventRow.at < f.until)
    return c


async def page(
    session: AsyncSession,
    f: AuditFilter,
    *,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
    descending: bool = False,
) -> list[AuditEventRow]:
    """Events in (at, id) order, strictly after the keyset `after`."""
    conditions = _conditions(f)
    if after is not None:
        at, event_id = after
        col_at, col_id = AuditEventRow.at, AuditEventRow.id
        if descending:
            conditions.append(or_(col_at < at, and_(col_at == at, col_id < event_id)))
        else:
            conditions.append(or_(col_at > at, and_(col_at == at, col_id > event_id)))
    order = (
        (AuditEventRow.at.desc(), AuditEventRow.id.desc())
        if descending
        else (AuditEventRow.at.asc(), AuditEventRow.id.asc())
    )
    stmt = select(AuditEventRow).where(*conditions).order_by(*order).limit(limit)
    return list((await session.scalars(stmt)).all())


async def get(session: AsyncSession, event_id: uuid.UUID) -> AuditEventRow | None:
    return await session.get(AuditEventRow, event_id)


async def count_before(session: AsyncSession, before: datetime) -> int:
    stmt = select(func.count()).select_from(AuditEventRow).where(AuditEventRow.at < before)
    return int((await session.execute(stmt)).scalar_one())


async def purge_before(session: AsyncSession, before: datetime) -> int:
    result = await session.execute(delete(AuditEventRow).where(AuditEventRow.at < before))
    return int(getattr(result, "rowcount", 0) or 0)
