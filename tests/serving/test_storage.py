"""Chunked, content-addressed artifact storage and its verified disk cache."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

from mlgate.db import Database, utcnow
from mlgate.serving import repository as repo
from mlgate.serving.storage import CHUNK_BYTES, ArtifactStore


async def test_chunks_roundtrip_and_cache(db: Database, tmp_path: Path) -> None:
    data = bytes(range(256)) * ((CHUNK_BYTES * 2 + 1000) // 256)
    sha = hashlib.sha256(data).hexdigest()
    source = tmp_path / "upload.bin"
    source.write_bytes(data)
    store = ArtifactStore(db, tmp_path / "cache")
    await store.put(source, sha, len(data))
    async with db.session() as session:
        assert await repo.count_chunks(session, sha) == 3  # 1 MiB at most each
    assert await store.get(sha) == data
    cached = tmp_path / "cache" / sha[:2] / sha
    assert cached.read_bytes() == data
    # A tampered cache file is ignored and replaced from the database.
    cached.write_bytes(b"evil" + data[4:])
    assert await store.get(sha) == data
    assert cached.read_bytes() == data
    # Content addressing: a second put of the same bytes writes nothing new.
    await store.put(data, sha, len(data))
    async with db.session() as session:
        assert await repo.count_chunks(session, sha) == 3


async def test_garbage_collection(db: Database, tmp_path: Path) -> None:
    store = ArtifactStore(db, tmp_path / "cache")
    data = b"x" * 100
    sha = hashlib.sha256(data).hexdigest()
    await store.put(data, sha, len(data))
    async with db.session() as session:  # an interrupted upload: chunks, no artifact row
        await repo.add_chunk(session, "0" * 64, 0, b"partial")
    async with db.session() as session:
        assert await repo.collect_artifacts(session, candidates=[sha], created_before=None) == [sha]
        removed = await repo.collect_orphan_chunks(
            session, created_before=utcnow() + timedelta(seconds=1)
        )
        assert removed == 1
    async with db.session() as session:
        assert await repo.count_chunks(session) == 0
        assert not await repo.artifact_exists(session, sha)


async def test_empty_artifact(db: Database, tmp_path: Path) -> None:
    store = ArtifactStore(db, tmp_path / "cache")
    sha = hashlib.sha256(b"").hexdigest()
    await store.put(b"", sha, 0)
    assert await ArtifactStore(db, tmp_path / "other").get(sha) == b""
