"""All SQL of the serving domain."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

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


async def delete_chunks(session: AsyncSession, sha256: str) -> None:
    await session.execute(delete(ArtifactChunkRow).where(ArtifactChunkRow.sha256 == sha256))


async def add_chunk(session: AsyncSession, sha256: str, seq: int, data: bytes) -> None:
    session.add(ArtifactChunkRow(sha256=sha256, seq=seq, data=data))
    await session.flush()


async def add_artifact(session: AsyncSession, sha256: str, size: int, chunk_count: int) -> None:
    session.add(ArtifactRow(sha256=sha256, size=size, chunk_count=chunk_count))
    await session.flush()


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
