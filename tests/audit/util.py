"""Helpers of the audit tests: read events straight from the database."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from mlgate.audit.tables import AuditEventRow
from tests.conftest import Service


async def events(svc: Service, action: str | None = None, **where: Any) -> list[AuditEventRow]:
    async with svc.ctx.db.session() as session:
        stmt = select(AuditEventRow).order_by(AuditEventRow.at, AuditEventRow.id)
        if action is not None:
            stmt = stmt.where(AuditEventRow.action == action)
        for name, value in where.items():
            stmt = stmt.where(getattr(AuditEventRow, name) == value)
        return list((await session.scalars(stmt)).all())


def rid(name: str) -> dict[str, str]:
    """Headers giving a request a known id and user agent."""
    return {"X-Request-ID": name, "User-Agent": f"tests/{name}"}
