"""All SQL of the serving domain."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, exists, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from mlgate.db import utcnow
from mlgate.serving.tables import ArtifactChunkRow, ArtifactRow, ModelRow, ModelVersionRow


async def get_model(session: AsyncSession, name: str) -> ModelRow | None:
    result = await session.execute(select(ModelRow).where(ModelRow.name == name))
    return result.scalar_one_or_none()


async def versions_of(session: AsyncSession, model_id: uuid.UUID) -> list[ModelVersionRow]:
    result = await session.execute(
        select(ModelVersionRow)
        .where(ModelVersionRow.model_id == model_id)
        .order_by(ModelVersionRow.version)
    )
    return list(result.scalars())


async def catalogue(
    session: AsyncSession,
) -> tuple[Sequence[ModelRow], Sequence[ModelVersionRow]]:
    """Every model and version (metadata only; artifacts stay in their own tables)."""
    models = (await session.execute(select(ModelRow).order_by(ModelRow.name))).scalars().all()
    versions = (
        (await session.execute(select(ModelVersionRow).order_by(ModelVersionRow.version)))
        .scalars()
        .all()
    )
    return models, versions


def _insert_ignoring_conflicts(session: AsyncSession, table: Any, keys: list[str]) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING on the session's backend (SQLite or PostgreSQL)."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing(index_elements=keys)


async def ensure_model(session: AsyncSession, values: dict[str, Any]) -> None:
    """Create the model row unless a model of that name exists (or is being created by a
    concurrent transaction, which this waits for: PostgreSQL blocks on its unique key,
    SQLite on its write lock). Never fails on a duplicate name."""
    row = {"id": uuid.uuid4(), "latest_version": 0, "default_version": None, **values}
    await session.execute(_insert_ignoring_conflicts(session, ModelRow, ["name"]).values(**row))


async def allocate_version(session: AsyncSession, name: str) -> tuple[uuid.UUID, int] | None:
    """The model's next version number, taken atomically: the UPDATE locks the model row
    until this transaction ends, so concurrent uploads of one name get 1, 2, 3, ..."""
    result = await session.execute(
        update(ModelRow)
        .where(ModelRow.name == name)
        .values(latest_version=ModelRow.latest_version + 1)
        .returning(ModelRow.id, ModelRow.latest_version)
        .execution_options(synchronize_session=False)
    )
    found = result.one_or_none()
    return None if found is None else (found[0], int(found[1]))


async def lock_artifacts(session: AsyncSession, shas: Sequence[str]) -> set[str]:
    """Which of these artifacts exist, share-locked until the transaction ends so that a
    concurrent collection cannot delete them before the version row references them."""
    result = await session.execute(
        select(ArtifactRow.sha256)
        .where(ArtifactRow.sha256.in_(list(shas)))
        .with_for_update(read=True)
    )
    return set(result.scalars())


async def add(session: AsyncSession, row: ModelRow | ModelVersionRow) -> None:
    session.add(row)
    await session.flush()


async def delete_row(session: AsyncSession, row: ModelRow | ModelVersionRow) -> None:
    await session.delete(row)
    await session.flush()


async def artifact_exists(session: AsyncSession, sha256: str) -> bool:
    found = await session.execute(select(ArtifactRow.sha256).where(ArtifactRow.sha256 == sha256))
    return found.scalar_one_or_none() is not None


async def get_artifact(session: AsyncSession, sha256: str) -> ArtifactRow | None:
    return await session.get(ArtifactRow, sha256)


async def add_chunk(session: AsyncSession, sha256: str, seq: int, data: bytes) -> None:
    # Content-addressed: a chunk already there (a concurrent or interrupted upload of the
    # same bytes) holds the same bytes, so a conflict is success.
    insert = _insert_ignoring_conflicts(session, ArtifactChunkRow, ["sha256", "seq"])
    await session.execute(insert.values(sha256=sha256, seq=seq, data=data, created_at=utcnow()))


async def add_artifact(session: AsyncSession, sha256: str, size: int, chunk_count: int) -> None:
    insert = _insert_ignoring_conflicts(session, ArtifactRow, ["sha256"])
    await session.execute(
        insert.values(sha256=sha256, size=size, chunk_count=chunk_count, created_at=utcnow())
    )


async def read_chunk(session: AsyncSession, sha256: str, seq: int) -> bytes | None:
    result = await session.execute(
        select(ArtifactChunkRow.data).where(
            ArtifactChunkRow.sha256 == sha256, ArtifactChunkRow.seq == seq
        )
    )
    return result.scalar_one_or_none()


def _referenced(sha_column: object) -> object:
    return exists().where(
        or_(ModelVersionRow.sha256 == sha_column, ModelVersionRow.serving_sha256 == sha_column)
    )


async def collect_artifacts(
    session: AsyncSession, *, candidates: Sequence[str] | None, created_before: datetime | None
) -> list[str]:
    """Delete artifacts no version references (among `candidates`, or all created before
    a time), and their chunks. Returns the collected hashes."""
    query = select(ArtifactRow.sha256).where(~_referenced(ArtifactRow.sha256))  # type: ignore[operator]
    if candidates is not None:
        query = query.where(ArtifactRow.sha256.in_(list(candidates)))
    if created_before is not None:
        query = query.where(ArtifactRow.created_at < created_before)
    shas = list((await session.execute(query)).scalars())
    if shas:
        await session.execute(delete(ArtifactChunkRow).where(ArtifactChunkRow.sha256.in_(shas)))
        await session.execute(delete(ArtifactRow).where(ArtifactRow.sha256.in_(shas)))
    return shas


async def collect_orphan_chunks(session: AsyncSession, *, created_before: datetime) -> int:
    """Chunks of uploads that never completed (no artifact row) and are old enough."""
    complete = select(ArtifactRow.sha256).where(ArtifactRow.sha256 == ArtifactChunkRow.sha256)
    result = await session.execute(
        delete(ArtifactChunkRow).where(
            ~complete.exists(), ArtifactChunkRow.created_at < created_before
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def count_chunks(session: AsyncSession, sha256: str | None = None) -> int:
    query = select(func.count()).select_from(ArtifactChunkRow)
    if sha256 is not None:
        query = query.where(ArtifactChunkRow.sha256 == sha256)
    return int((await session.execute(query)).scalar_one())
