"""Writing audit events: in the caller's transaction, or through the group-commit writer;
and reading them back (filtered, keyset-paged, exported)."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mlgate.audit import repository as repo
from mlgate.audit.events import Action, AuditEvent
from mlgate.audit.tables import AuditEventRow
from mlgate.audit.writer import GroupCommitWriter
from mlgate.db import Database, after_commit, utcnow
from mlgate.errors import ValidationFailed

MAX_PAGE = 1000
EXPORT_PAGE = 1000


def _values(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": event.at,
        "actor_id": event.actor_id,
        "actor": (event.actor or "")[:320] or None,
        "actor_type": event.actor_type,
        "action": event.action,
        "resource": (event.resource or "")[:256] or None,
        "outcome": event.outcome,
        "status": event.status,
        "ip": (event.ip or "")[:64] or None,
        "user_agent": (event.user_agent or "")[:512] or None,
        "request_id": event.request_id,
        "details": event.details,
    }


def to_row(event: AuditEvent) -> AuditEventRow:
    return AuditEventRow(**_values(event))


@dataclass(slots=True)
class _Aggregate:
    event: AuditEvent
    minute: int
    committed: int = 0
    persisted: bool = False


@dataclass(frozen=True, slots=True)
class _Item:
    event: AuditEvent
    aggregate_key: str | None


def _minute(at: datetime) -> int:
    return int(at.timestamp()) // 60


class AuditService:
    """Records events. State-changing acts use `record` inside their own transaction;
    high-volume events (`model.predict`, `access.denied`, failed logins) use `submit`,
    which returns once the event is committed by the group-commit writer and raises
    `Unavailable` (503) when the audit store is down."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # The group-commit writers' own engine (one connection in use at a time), so a
        # full request pool can never block the commits those requests wait for.
        self.writer_db = Database(db.url)
        self.writer: GroupCommitWriter[_Item] = GroupCommitWriter(
            self.writer_db, self._flush, name="audit", fallback_db=db
        )
        self._aggregates: dict[str, _Aggregate] = {}

    # -- writing --------------------------------------------------------------------------

    def record(self, session: AsyncSession, event: AuditEvent) -> None:
        """Add the event to the caller's unit of work: it commits with the change."""
        repo.add(session, to_row(event))

    async def submit(self, event: AuditEvent) -> None:
        """Commit the event through the group-commit writer and wait for it."""
        await self.writer.submit(_Item(event, None))

    async def submit_aggregated(self, event: AuditEvent, key: str) -> None:
        """Like `submit`, but events with the same `key` in the same minute become one
        event whose `details.count` says how many there were (anonymous 401 floods)."""
        await self.writer.submit(_Item(event, f"{key}|{_minute(event.at)}"))

    async def start(self) -> None:
        self.writer.start()
        from mlgate import metrics

        metrics.set_audit_queue_depth(lambda: float(self.writer.depth))

    async def stop(self) -> None:
        await self.writer.stop()
        await self.writer_db.dispose()

    async def _flush(self, session: AsyncSession, items: Sequence[_Item]) -> None:
        rows: list[dict[str, Any]] = []
        touched: dict[str, int] = {}
        for item in items:
            if item.aggregate_key is None:
                rows.append(_values(item.event))
                continue
            if item.aggregate_key not in self._aggregates:
                self._aggregates[item.aggregate_key] = _Aggregate(
                    item.event, _minute(item.event.at)
                )
            touched[item.aggregate_key] = touched.get(item.aggregate_key, 0) + 1
        updates: list[tuple[_Aggregate, int]] = []
        for key, n in touched.items():
            agg = self._aggregates[key]
            total = agg.committed + n
            details = {**agg.event.details, "count": total}
            if agg.persisted:
                await repo.set_details(session, agg.event.id, details)
            else:
                rows.append(_values(replace(agg.event, details=details)))
            updates.append((agg, total))
        await repo.insert_many(session, rows)

        def committed() -> None:
            for agg, total in updates:
                agg.committed, agg.persisted = total, True
            self._prune()

        after_commit(session, committed)

    def _prune(self) -> None:
        current = _minute(utcnow())
        for key in [k for k, a in self._aggregates.items() if a.minute < current - 1]:
            del self._aggregates[key]

    # -- reading --------------------------------------------------------------------------

    async def page(
        self,
        session: AsyncSession,
        f: repo.AuditFilter,
        *,
        limit: int,
        cursor: str | None,
        descending: bool = False,
    ) -> tuple[list[AuditEventRow], str | None]:
        limit = max(1, min(limit, MAX_PAGE))
        after = decode_cursor(cursor) if cursor else None
        rows = await repo.page(session, f, after=after, limit=limit + 1, descending=descending)
        next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
        return rows[:limit], next_cursor

    async def get(self, session: AsyncSession, event_id: uuid.UUID) -> AuditEventRow | None:
        return await repo.get(session, event_id)

    async def iterate(
        self, f: repo.AuditFilter, *, after: tuple[datetime, uuid.UUID] | None = None
    ) -> AsyncIterator[AuditEventRow]:
        """Every matching event in order, a page at a time (constant memory): each page
        is a short query of its own, so no transaction stays open during a long export."""
        while True:
            async with self.db.session() as session:
                rows = await repo.page(session, f, after=after, limit=EXPORT_PAGE)
            for row in rows:
                yield row
            if len(rows) < EXPORT_PAGE:
                return
            after = (rows[-1].at, rows[-1].id)

    async def purge(self, before: datetime, *, actor: str | None = None) -> int:
        """Delete events older than `before`, leaving an `audit.purge` checkpoint event
        in the same transaction."""
        async with self.db.session() as session:
            deleted = await repo.purge_before(session, before)
            self.record(
                session,
                AuditEvent.of(
                    Action.AUDIT_PURGE,
                    "success",
                    meta=None,
                    actor=actor,
                    resource="audit",
                    details={"before": iso(before), "deleted": deleted},
                ),
            )
        return deleted

    async def count_before(self, before: datetime) -> int:
        async with self.db.session() as session:
            return await repo.count_before(session, before)


def iso(at: datetime) -> str:
    """ISO 8601 in UTC with a `Z`."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def encode_cursor(row: AuditEventRow) -> str:
    raw = json.dumps([iso(row.at), row.id.hex]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at_text, id_hex = json.loads(raw)
        at = datetime.fromisoformat(str(at_text).replace("Z", "+00:00"))
        if at.tzinfo is None:
            raise ValueError("naive")
        return at, uuid.UUID(hex=str(id_hex))
    except (ValueError, TypeError, binascii.Error, json.JSONDecodeError):
        raise ValidationFailed(
            "The cursor is not valid",
            errors=[{"loc": ["query", "cursor"], "msg": "invalid cursor", "pointer": "/cursor"}],
        ) from None
