"""Artifact storage: content-addressed chunks in the database, a verified disk cache.

Writes are many short transactions (one per chunk) so a 100 MB upload never holds the
database's writer for long; the artifact row, inserted last, marks the bytes complete,
and a version row referencing it is what makes a model visible. Reads stream chunk by
chunk into the disk cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

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
        """Store the bytes under their hash unless they are already complete. Safe to run
        concurrently for the same bytes: chunks and the artifact row ignore duplicates."""
        async with self.db.session() as session:
            if await repo.artifact_exists(session, sha256):
                return
        count = 0
        async for seq, chunk in _chunks(source):
            async with self.db.session() as session:
                await repo.add_chunk(session, sha256, seq, chunk)
            count = seq + 1
        async with self.db.session() as session:
            await repo.add_artifact(session, sha256, size, count)

    async def get(self, sha256: str) -> bytes:
        """The artifact's bytes: from the disk cache when its hash checks out, else streamed
        from the database into the cache (hashed on the way) and read back. File I/O and
        hashing run in threads, never on the event loop."""
        path = self._cache_path(sha256)
        cached = await asyncio.to_thread(_read_verified, path, sha256)
        if cached is not None:
            return cached
        async with self.db.session() as session:
            artifact = await repo.get_artifact(session, sha256)
        if artifact is None:
            raise Unavailable(f"Model artifact {sha256[:12]} is missing from the database")
        try:
            data = await self._fetch(sha256, artifact.chunk_count, path)
        except OSError:  # the disk cache is not writable: fetch into memory instead
            data = await self._fetch(sha256, artifact.chunk_count, None)
        if data is None:
            raise Unavailable(f"Model artifact {sha256[:12]} failed its hash check")
        return data

    async def _fetch(self, sha256: str, count: int, path: Path | None) -> bytes | None:
        sink = _Sink(path)
        try:
            for seq in range(count):
                async with self.db.session() as session:
                    chunk = await repo.read_chunk(session, sha256, seq)
                if chunk is None:
                    raise Unavailable(f"Model artifact {sha256[:12]} is incomplete")
                await asyncio.to_thread(sink.write, chunk)
            return await asyncio.to_thread(sink.finish, sha256)
        finally:
            sink.discard()  # not awaited: must run even when this task is cancelled

    async def prune(self, keep: set[str]) -> int:
        """Remove cached artifacts no longer in `keep` (the live catalogue's hashes)."""
        return await asyncio.to_thread(_prune, self.cache_dir, keep)


async def _chunks(source: Path | bytes) -> AsyncIterator[tuple[int, bytes]]:
    if isinstance(source, bytes):
        for seq, start in enumerate(range(0, max(len(source), 1), CHUNK_BYTES)):
            yield seq, source[start : start + CHUNK_BYTES]
        return
    handle = await asyncio.to_thread(source.open, "rb")
    try:
        seq = 0
        while True:
            chunk = await asyncio.to_thread(handle.read, CHUNK_BYTES)
            if not chunk and seq:
                return
            yield seq, chunk
            if not chunk:
                return  # an empty file is one empty chunk
            seq += 1
    finally:
        await asyncio.to_thread(handle.close)


class _Sink:
    """Chunks on their way to the disk cache (a private temp file renamed into place once
    the hash checks out), or into memory when `path` is None; hashed as they arrive.
    Disk errors raise OSError (the caller then fetches into memory)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.digest = hashlib.sha256()
        self.parts: list[bytes] = []
        self.tmp: Path | None = None
        self.handle: BinaryIO | None = None
        self.discarded = False
        # `discard` may run on the loop while a cancelled `write` still runs in its thread.
        self.lock = threading.Lock()

    def _open(self) -> None:
        if self.path is not None and self.handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=".tmp-")
            self.tmp, self.handle = Path(name), os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        with self.lock:
            if self.discarded:
                return
            self._open()
            self.digest.update(chunk)
            if self.handle is not None:
                self.handle.write(chunk)
            else:
                self.parts.append(chunk)

    def finish(self, sha256: str) -> bytes | None:
        """The bytes when they hash to `sha256` (then cached), else None."""
        with self.lock:
            if self.discarded:
                return None
            self._open()  # an empty artifact may have had nothing to write
            if self.digest.hexdigest() != sha256:
                return None
            if self.path is None:
                return b"".join(self.parts)
            assert self.handle is not None
            assert self.tmp is not None
            self.handle.close()
            self.handle = None
            os.replace(self.tmp, self.path)
            self.tmp = None
            return self.path.read_bytes()

    def discard(self) -> None:
        with self.lock:
            self.discarded = True
            if self.handle is not None:
                with contextlib.suppress(OSError):
                    self.handle.close()
                self.handle = None
            if self.tmp is not None:
                with contextlib.suppress(OSError):
                    self.tmp.unlink()
                self.tmp = None


def _read_verified(path: Path, sha256: str) -> bytes | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if hashlib.sha256(data).hexdigest() == sha256:
        return data
    path.unlink(missing_ok=True)  # corrupted or tampered: fetch again
    return None


def _prune(cache_dir: Path, keep: set[str]) -> int:
    removed = 0
    for path in cache_dir.glob("??/*"):
        if path.name not in keep and not path.name.startswith(".tmp-"):
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
    return removed
