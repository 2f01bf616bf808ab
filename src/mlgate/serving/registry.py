"""The in-process registry: a catalogue snapshot polled from the database, lazily
loaded models, their batchers, and the executor inference runs on.

Every replica polls the catalogue (one query a second), so a model uploaded through
one replica is served by all of them within a couple of seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

from mlgate import metrics
from mlgate.auth.principal import Principal
from mlgate.db import Database, utcnow
from mlgate.errors import NotFound, Unavailable
from mlgate.serving import catalogue as cat
from mlgate.serving import repository as repo
from mlgate.serving.batching import Batcher
from mlgate.serving.loaders import build_model, trusted_types
from mlgate.serving.runtime import FloatArray, Model, Outputs
from mlgate.serving.storage import ArtifactStore
from mlgate.settings import Settings

log = logging.getLogger("mlgate.serving")

POLL_SECONDS = 1.0
GC_EVERY_POLLS = 600
GC_GRACE = timedelta(hours=1)
# A name not in the catalogue re-reads it at most this often (a flood of 404s must not
# become a flood of catalogue queries); changes made here are seen at once via `touch`.
MISS_REFRESH_SECONDS = 0.25
# A version that failed to load is not retried by every request.
LOAD_RETRY_SECONDS = 5.0


@dataclass(slots=True)
class Loaded:
    model: Model
    batcher: Batcher


class ModelRegistry:
    def __init__(
        self, settings: Settings, db: Database, *, poll_seconds: float = POLL_SECONDS
    ) -> None:
        self.settings = settings
        self.db = db
        self.store = ArtifactStore(db, settings.data_dir / "model-cache")
        self.executor = ThreadPoolExecutor(
            max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="mlgate-infer"
        )
        self.poll_seconds = poll_seconds
        self.catalogue: dict[str, cat.ModelInfo] = {}
        self.ready = False
        self._loaded: dict[tuple[str, int, str], Loaded] = {}
        self._locks: dict[tuple[str, int, str], asyncio.Lock] = {}
        self._failed: dict[tuple[str, int, str], float] = {}
        self._refresh_lock = asyncio.Lock()
        self._refreshed_at = 0.0
        self._fresh_until = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.refresh()
        self.ready = True
        self._poller = asyncio.get_running_loop().create_task(self._poll())
        self._spawn(self.preload())

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        loaded, self._loaded = list(self._loaded.values()), {}
        await asyncio.gather(*(item.batcher.close() for item in loaded))
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.ready = False

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def refresh(self) -> None:
        """Reload the catalogue; forget loaded models whose version is gone."""
        started = time.monotonic()
        async with self._refresh_lock:
            if self._refreshed_at > started:
                return  # a refresh that began after us already answered
            async with self.db.session() as session:
                models, versions = await repo.catalogue(session)
                snapshot = cat.build(models, versions)
            self.catalogue = snapshot
            self._refreshed_at = time.monotonic()
        live = {
            (m.name, v.version, v.serving_sha256)
            for m in snapshot.values()
            for v in m.versions.values()
        }
        for key in [k for k in self._loaded if k not in live]:
            # In the background: requests already queued are still answered.
            self._spawn(self._loaded.pop(key).batcher.close())

    def touch(self) -> None:
        """After a change on this replica: read the catalogue fresh for a moment, so the
        change is seen here at once (the change commits just after the route returns)."""
        self._fresh_until = time.monotonic() + 2.0

    async def _poll(self) -> None:
        polls = 0
        while True:
            await asyncio.sleep(self.poll_seconds)
            polls += 1
            try:
                await self.refresh()
                self._spawn(self.preload())
                if polls % GC_EVERY_POLLS == 0:
                    await self.collect(GC_GRACE)
            except Exception:
                log.warning("model catalogue poll failed", exc_info=True)

    async def collect(self, grace: timedelta) -> list[str]:
        """Drop artifacts and chunks that nothing references any more."""
        before = utcnow() - grace
        async with self.db.session() as session:
            shas = await repo.collect_artifacts(session, candidates=None, created_before=before)
            await repo.collect_orphan_chunks(session, created_before=before)
        live = {
            sha
            for m in self.catalogue.values()
            for v in m.versions.values()
            for sha in (v.sha256, v.serving_sha256)
        }
        await self.store.prune(live)
        return shas

    async def resolve(
        self, name: str, version: int | None, principal: Principal
    ) -> tuple[cat.ModelInfo, cat.VersionInfo]:
        """The model and version a caller asked for, or 404 (also when not admitted)."""
        if time.monotonic() < self._fresh_until:
            await self.refresh()
        found = self._lookup(name, version, principal)
        if found is None and time.monotonic() - self._refreshed_at > MISS_REFRESH_SECONDS:
            await self.refresh()  # maybe created moments ago on another replica
            found = self._lookup(name, version, principal)
        if found is None:
            raise NotFound(
                f"Model '{name}'" + (f" version {version}" if version else "") + " not found"
            )
        return found

    def _lookup(
        self, name: str, version: int | None, principal: Principal
    ) -> tuple[cat.ModelInfo, cat.VersionInfo] | None:
        info = self.catalogue.get(name)
        if info is None or not info.admits(principal):
            return None
        chosen = info.default if version is None else info.versions.get(version)
        return None if chosen is None else (info, chosen)

    def is_loaded(self, info: cat.ModelInfo, version: cat.VersionInfo) -> bool:
        return (info.name, version.version, version.serving_sha256) in self._loaded

    async def load(self, info: cat.ModelInfo, version: cat.VersionInfo) -> Loaded:
        """The loaded model and its batcher; 503 when it cannot be loaded (the reason is
        logged, and the load is not retried for a few seconds)."""
        key = (info.name, version.version, version.serving_sha256)
        if key in self._loaded:
            return self._loaded[key]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key in self._loaded:
                return self._loaded[key]
            if self._failed.get(key, 0.0) > time.monotonic():
                raise _cannot_load(info, version)
            try:
                model = await self._build(info, version)
            except Exception as exc:
                log.warning(
                    "could not load model %s v%s: %s",
                    info.name,
                    version.version,
                    getattr(exc, "detail", None) or repr(exc),
                )
                self._failed[key] = time.monotonic() + LOAD_RETRY_SECONDS
                raise _cannot_load(info, version) from None
            finally:
                self._locks.pop(key, None)
            self._failed.pop(key, None)
            batcher = Batcher(
                model.predict,
                self.executor,
                max_rows=self.settings.batch_max_rows,
                max_wait_s=self.settings.batch_max_wait_ms / 1000.0,
            )
            batcher.on_batch = partial(metrics.observe_batch, info.name)
            self._loaded[key] = Loaded(model, batcher)
            return self._loaded[key]

    async def _build(self, info: cat.ModelInfo, version: cat.VersionInfo) -> Model:
        data = await self.store.get(version.serving_sha256)
        spec = info.spec(version)
        settings = self.settings
        return await asyncio.get_running_loop().run_in_executor(
            self.executor,
            lambda: build_model(
                spec,
                data,
                version.runtime,
                trusted=trusted_types(settings),
                max_model_bytes=settings.max_model_bytes,
                allow_pickle=settings.allow_pickle,
            ),
        )

    async def preload(self) -> None:
        """Load every default version in the background, so the first request is fast."""
        for info in list(self.catalogue.values()):
            version = info.default
            if version is not None and not self.is_loaded(info, version):
                with contextlib.suppress(Unavailable):
                    await self.load(info, version)  # a failure is logged by `load`

    async def predict(
        self, info: cat.ModelInfo, version: cat.VersionInfo, rows: FloatArray
    ) -> Outputs:
        loaded = await self.load(info, version)
        if self.settings.batching:
            return await loaded.batcher.submit(rows)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, loaded.model.predict, rows)


def _cannot_load(info: cat.ModelInfo, version: cat.VersionInfo) -> Unavailable:
    return Unavailable(
        f"Model '{info.name}' version {version.version} cannot be loaded right now",
        retry_after=int(LOAD_RETRY_SECONDS),
    )
