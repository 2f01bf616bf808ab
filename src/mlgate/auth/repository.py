"""SQL for signing keys, sessions, refresh tokens, API keys and the auth change log."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mlgate.auth.keystore import StoredKey
from mlgate.auth.tables import (
    ApiKeyRow,
    AuthChangeRow,
    RefreshTokenRow,
    SessionRow,
    SigningKeyRow,
)


async def signing_keys(session: AsyncSession) -> list[StoredKey]:
    stmt = select(SigningKeyRow).order_by(SigningKeyRow.created_at)
    return [
        StoredKey(
            kid=row.kid,
            algorithm=row.algorithm,
            public_pem=row.public_pem,
            private_encrypted=row.private_encrypted,
            active=row.active,
            retired_at=row.retired_at,
        )
        for row in (await session.execute(stmt)).scalars()
    ]


async def retire_active_keys(session: AsyncSession, algorithm: str, now: datetime) -> None:
    await session.execute(
        update(SigningKeyRow)
        .where(SigningKeyRow.active.is_(True), SigningKeyRow.algorithm == algorithm)
        .values(active=False, retired_at=now)
    )


async def drop_keys_retired_before(session: AsyncSession, cutoff: datetime) -> None:
    rows = await session.execute(
        select(SigningKeyRow).where(
            SigningKeyRow.active.is_(False), SigningKeyRow.retired_at < cutoff
        )
    )
    for row in rows.scalars():
        await session.delete(row)


async def add_change(session: AsyncSession, kind: str, subject: str) -> None:
    session.add(AuthChangeRow(kind=kind, subject=subject))


async def changes_after(
    session: AsyncSession, seq: int, limit: int = 1000
) -> list[tuple[int, str, str]]:
    stmt = (
        select(AuthChangeRow.seq, AuthChangeRow.kind, AuthChangeRow.subject)
        .where(AuthChangeRow.seq > seq)
        .order_by(AuthChangeRow.seq)
        .limit(limit)
    )
    return [(int(s), k, subj) for s, k, subj in await session.execute(stmt)]


async def last_change_seq(session: AsyncSession) -> int:
    stmt = select(AuthChangeRow.seq).order_by(AuthChangeRow.seq.desc()).limit(1)
    value = (await session.execute(stmt)).scalar_one_or_none()
    return int(value or 0)


async def get_session(session: AsyncSession, sid: uuid.UUID) -> SessionRow | None:
    return await session.get(SessionRow, sid)


async def sessions_of(session: AsyncSession, user_id: uuid.UUID, now: datetime) -> list[SessionRow]:
    stmt = (
        select(SessionRow)
        .where(
            SessionRow.user_id == user_id,
            SessionRow.revoked_at.is_(None),
            SessionRow.expires_at > now,
        )
        .order_by(SessionRow.created_at)
    )
    return list((await session.execute(stmt)).scalars())


async def revoke_sessions(
    session: AsyncSession,
    user_id: uuid.UUID,
    now: datetime,
    *,
    only: uuid.UUID | None = None,
    keep: uuid.UUID | None = None,
) -> list[uuid.UUID]:
    """Revoke a user's live sessions (one, all, or all but one); returns their ids."""
    stmt = select(SessionRow.id).where(
        SessionRow.user_id == user_id, SessionRow.revoked_at.is_(None)
    )
    if only is not None:
        stmt = stmt.where(SessionRow.id == only)
    if keep is not None:
        stmt = stmt.where(SessionRow.id != keep)
    ids = list((await session.execute(stmt)).scalars())
    if ids:
        await session.execute(
            update(SessionRow).where(SessionRow.id.in_(ids)).values(revoked_at=now)
        )
    return ids


async def find_refresh(session: AsyncSession, token_hash: str) -> RefreshTokenRow | None:
    stmt = select(RefreshTokenRow).where(RefreshTokenRow.token_hash == token_hash)
    return (await session.execute(stmt)).scalar_one_or_none()


async def spend_refresh(session: AsyncSession, token_id: uuid.UUID, now: datetime) -> bool:
    """Mark a refresh token used, atomically: only one concurrent caller wins."""
    result = await session.execute(
        update(RefreshTokenRow)
        .where(RefreshTokenRow.id == token_id, RefreshTokenRow.used_at.is_(None))
        .values(used_at=now)
        .returning(RefreshTokenRow.id)
    )
    return result.first() is not None


async def find_api_key(session: AsyncSession, key_hash: str) -> ApiKeyRow | None:
    stmt = select(ApiKeyRow).where(ApiKeyRow.key_hash == key_hash)
    return (await session.execute(stmt)).scalar_one_or_none()


async def api_keys_of(session: AsyncSession, user_id: uuid.UUID) -> list[ApiKeyRow]:
    stmt = (
        select(ApiKeyRow)
        .where(ApiKeyRow.user_id == user_id, ApiKeyRow.revoked_at.is_(None))
        .order_by(ApiKeyRow.created_at)
    )
    return list((await session.execute(stmt)).scalars())


async def revoke_api_keys_of(
    session: AsyncSession, user_id: uuid.UUID, now: datetime
) -> list[uuid.UUID]:
    ids = [row.id for row in await api_keys_of(session, user_id)]
    if ids:
        await session.execute(update(ApiKeyRow).where(ApiKeyRow.id.in_(ids)).values(revoked_at=now))
    return ids


async def touch_api_keys(session: AsyncSession, used: dict[uuid.UUID, datetime]) -> None:
    for key_id, when in used.items():
        await session.execute(
            update(ApiKeyRow).where(ApiKeyRow.id == key_id).values(last_used_at=when)
        )

