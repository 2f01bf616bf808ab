"""Writing audit events: in the caller's transaction, or through the group-commit writer."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from mlgate.audit.events import AuditEvent
from mlgate.audit.tables import AuditEventRow
from mlgate.db import Database


def to_row(event: AuditEvent) -> AuditEventRow:
    return AuditEventRow(
        id=event.id,
        at=event.at,
        actor_id=event.actor_id,
        actor=event.actor,
        actor_type=event.actor_type,
        action=event.action,
        resource=event.resource,
        outcome=event.outcome,
        status=event.status,
        ip=event.ip,
        user_agent=(event.user_agent or "")[:512] or None,
        request_id=event.request_id,
        details=event.details,
    )


class AuditService:
    """Records events. State-changing acts use `record` inside their own transaction;
    high-volume events (`model.predict`, `access.denied`) use `submit`, which returns
    once the event is committed."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, session: AsyncSession, event: AuditEvent) -> None:
        session.add(to_row(event))

    async def submit(self, event: AuditEvent) -> None:
        async with self.db.session() as session:
            session.add(to_row(event))

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None
