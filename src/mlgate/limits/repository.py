"""SQL for limits and usage: role and user limit values, usage upserts and sums."""

from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from mlgate.limits.tables import UsageRow
from mlgate.rbac.tables import RoleRow
from mlgate.users.tables import UserRow

UsageKey = tuple[uuid.UUID, date, str]


async def role_limits(session: AsyncSession) -> dict[str, tuple[str | None, int | None]]:
    rows = await session.execute(select(RoleRow.name, RoleRow.rate_limit, RoleRow.daily_quota))
    return {name: (rate, quota) for name, rate, quota in rows.all()}


async def user_quota(session: AsyncSession, user_id: uuid.UUID) -> tuple[bool, int | None]:
    """(exists, the per-user daily quota override or None)."""
    row = (
        await session.execute(select(UserRow.id, UserRow.daily_quota).where(UserRow.id == user_id))
    ).first()
    return (False, None) if row is None else (True, row[1])


async def add_usage(session: AsyncSession, deltas: dict[UsageKey, tuple[int, int]]) -> None:
    """Add (predictions, rows) to each (user, day, model) counter, creating it if new."""
    if not deltas:
        return
    values = [
        {"user_id": u, "day": d, "model": m, "predictions": p, "rows": r}
        for (u, d, m), (p, r) in sorted(deltas.items(), key=lambda kv: (str(kv[0][0]), kv[0][1:]))
    ]
    dialect = session.get_bind().dialect.name
    maker = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = maker(UsageRow).values(values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["user_id", "day", "model"],
        set_={
            "predictions": UsageRow.predictions + stmt.excluded.predictions,
            "rows": UsageRow.rows + stmt.excluded.rows,
        },
    )
    await session.execute(stmt)


async def rows_on(session: AsyncSession, user_id: uuid.UUID, day: date) -> int:
    stmt = select(func.coalesce(func.sum(UsageRow.rows), 0)).where(
        UsageRow.user_id == user_id, UsageRow.day == day
    )
    return int((await session.execute(stmt)).scalar_one())


async def by_model(
    session: AsyncSession, user_id: uuid.UUID, first: date, last: date
) -> list[tuple[str, int, int]]:
    """(model, predictions, rows) summed over the days first..last inclusive."""
    stmt = (
        select(UsageRow.model, func.sum(UsageRow.predictions), func.sum(UsageRow.rows))
        .where(UsageRow.user_id == user_id, UsageRow.day >= first, UsageRow.day <= last)
        .group_by(UsageRow.model)
        .order_by(UsageRow.model)
    )
    return [(m, int(p), int(r)) for m, p, r in (await session.execute(stmt)).all()]
