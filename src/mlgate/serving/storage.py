"""Artifact storage: content-addressed chunks in the database, a verified disk cache.

Writes are many short transactions (one per chunk) so a 100 MB upload never holds the
database's writer for long; the artifact row, inserted last, marks the bytes complete,
and a version row referencing it is what makes a model visible.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from mlgate.db import Database
from mlgate.errors import Unavailable
from mlgate.serving import repository as repo

CHUNK_BYTES = 1 << 20


class ArtifactStore:
    def __init__(self, db: Database, cache_dir: Path) -> None:
        self.db = db
        self.cache_dir = cache_dir

    def _cache_path(self, sha256: str) -> Path:
        return self.cache_dir / sha256[:2] / sha256

    async def put(self, source: Path | bytes, sha256: str, size: int) -> None:
        """Store the bytes under their hash unless they are already complete."""
        async with self.db.session() as session:
            if await repo.artifact_exists(session, sha256):
                return
            await repo.delete_chunks(session, sha256)  # leftovers of an interrupted upload
        count = 0
        for seq, chunk in enumerate(_chunks(source)):
            async with self.db.session() as session:
                await repo.add_chunk(session, sha256, seq, chunk)
            count = seq + 1
        async with self.db.session() as session:
            await repo.add_artifact(session, sha256, size, count)

    async def get(self, sha256: str) -> bytes:
        """The artifact's bytes: from the disk cache when its hash checks out, else from
        the database (then cached)."""
        path = self._cache_path(sha256)
        cached = await asyncio.to_thread(_read_verified, path, sha256)
        if cached is not None:
            return cached
        async with self.db.session() as session:
            artifact = await repo.get_artifact(session, sha256)
        if artifact is None:
            raise Unavailable(f"Model artifact {sha256[:12]} is missing from the database")
        parts: list[bytes] = []
        for seq in range(artifact.chunk_count):
            async with self.db.session() as session:
                chunk = await repo.read_chunk(session, sha256, seq)
            if chunk is None:
                raise Unavailable(f"Model artifact {sha256[:12]} is incomplete")
            parts.append(chunk)
        data = b"".join(parts)
        if hashlib.sha256(data).hexdigest() != sha256:
            raise Unavailable(f"Model artifact {sha256[:12]} failed its hash check")
        await asyncio.to_thread(_write_cache, path, data)
        return data


def _chunks(source: Path | bytes) -> Iterable[bytes]:
    if isinstance(source, bytes):
        return [source[i : i + CHUNK_BYTES] for i in range(0, len(source), CHUNK_BYTES)] or [b""]
    return _FileChunks(source)


class _FileChunks:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __iter__(self) -> Iterator[bytes]:
        with self.path.open("rb") as handle:
            first = True
            while chunk := handle.read(CHUNK_BYTES):
                first = False
                yield chunk
            if first:
                yield b""


def _read_verified(path: Path, sha256: str) -> bytes | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if hashlib.sha256(data).hexdigest() == sha256:
        return data
    path.unlink(missing_ok=True)  # corrupted or tampered: fetch again
    return None


def _write_cache(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except OSError:
        return  # the cache is an optimisation; the database stays the source of truth
