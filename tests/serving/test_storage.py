"""Chunked, content-addressed artifact storage and its verified disk cache."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

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


async def test_concurrent_puts_of_the_same_bytes(db: Database, tmp_path: Path) -> None:
    data = bytes(range(256)) * ((CHUNK_BYTES + 500) // 256)
    sha = hashlib.sha256(data).hexdigest()
    store = ArtifactStore(db, tmp_path / "cache")
    await asyncio.gather(*(store.put(data, sha, len(data)) for _ in range(4)))
    async with db.session() as session:
        assert await repo.count_chunks(session, sha) == 2
    assert await ArtifactStore(db, tmp_path / "fresh").get(sha) == data


class HashWatch:
    """Stands in for `hashlib` in a module: counts hashing done on the event loop thread."""

    def __init__(self) -> None:
        self.loop_thread = threading.current_thread()
        self.on_loop = 0
        self.hashed = 0

    def sha256(self, data: bytes = b"") -> Any:
        watch, real = self, hashlib.sha256()

        class Hasher:
            def update(self, chunk: bytes) -> None:
                watch.note(len(chunk))
                real.update(chunk)

            def hexdigest(self) -> str:
                return real.hexdigest()

        hasher = Hasher()
        if data:
            hasher.update(data)
        return hasher

    def note(self, size: int) -> None:
        self.hashed += size
        if threading.current_thread() is self.loop_thread:
            self.on_loop += size


async def test_reads_hash_and_touch_files_off_the_event_loop(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlgate.serving import storage

    data = b"m" * (CHUNK_BYTES * 2)
    sha = hashlib.sha256(data).hexdigest()
    store = ArtifactStore(db, tmp_path / "cache")
    await store.put(data, sha, len(data))
    watch = HashWatch()
    monkeypatch.setattr(storage, "hashlib", watch)
    assert await store.get(sha) == data  # from the database
    assert await store.get(sha) == data  # from the disk cache
    assert watch.hashed == 2 * len(data)
    assert watch.on_loop == 0


async def test_unwritable_cache_still_serves(db: Database, tmp_path: Path) -> None:
    data = b"z" * 5000
    sha = hashlib.sha256(data).hexdigest()
    blocker = tmp_path / "not-a-dir"
    blocker.write_bytes(b"")
    store = ArtifactStore(db, blocker)
    await store.put(data, sha, len(data))
    assert await store.get(sha) == data


async def test_cache_pruned_to_live_artifacts(db: Database, tmp_path: Path) -> None:
    store = ArtifactStore(db, tmp_path / "cache")
    blobs = [b"first" * 100, b"second" * 100]
    shas = [hashlib.sha256(b).hexdigest() for b in blobs]
    for blob, sha in zip(blobs, shas, strict=True):
        await store.put(blob, sha, len(blob))
        await store.get(sha)
    assert await store.prune({shas[0]}) == 1
    assert (tmp_path / "cache" / shas[0][:2] / shas[0]).exists()
    assert not (tmp_path / "cache" / shas[1][:2] / shas[1]).exists()
