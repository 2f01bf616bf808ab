"""Group commit: one background task writes the items of many concurrent requests in one
transaction; each caller awaits the commit of its own item.

While a transaction is in flight, new items queue up and go together into the next one,
so the number of commits per second stays small under load and a lone request waits for
one commit only. A failed transaction fails every item in it with `Unavailable`: nothing
is acknowledged that is not committed (fail closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from mlgate.db import Database
from mlgate.errors import Unavailable

log = logging.getLogger(__name__)
T = TypeVar("T")
Flush = Callable[[AsyncSession, Sequence[T]], Awaitable[None]]


@dataclass(slots=True)
class _Pending(Generic[T]):
    item: T
    done: asyncio.Future[None]


class GroupCommitWriter(Generic[T]):
    """Batches items into transactions written by `flush(session, items)`.

    `submit` returns once the item's transaction committed, or raises `Unavailable`.
    `stop` writes everything still queued before it returns.
    """

    def __init__(
        self,
        db: Database,
        flush: Flush[T],
        *,
        name: str,
        max_batch: int = 1000,
        fallback_db: Database | None = None,
    ) -> None:
        # `db` should be an engine of its own: requests that hold a pooled connection
        # while they wait for their commit must never starve the writer of one.
        self.db = db
        self.fallback_db = fallback_db or db
        self.flush = flush
        self.name = name
        self.max_batch = max_batch
        self.queue: asyncio.Queue[_Pending[T] | None] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.batches = 0
        self.committed = 0

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    @property
    def depth(self) -> int:
        return self.queue.qsize()

    def start(self) -> None:
        if not self.running:
            self.task = asyncio.create_task(self._run(), name=f"group-commit:{self.name}")

    async def submit(self, item: T) -> None:
        if not self.running:
            # Not started (a CLI command, or after stop): write it on its own.
            await self._write([item], self.fallback_db)
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(_Pending(item, done))
        await asyncio.shield(done)

    async def stop(self) -> None:
        if self.task is None:
            return
        self.queue.put_nowait(None)
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.task = None

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            first = await self.queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self.max_batch and not self.queue.empty():
                nxt = self.queue.get_nowait()
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            await self._commit(batch)
        # Drain whatever arrived while stopping, so nothing queued is dropped.
        rest = []
        while not self.queue.empty():
            nxt = self.queue.get_nowait()
            if nxt is not None:
                rest.append(nxt)
        if rest:
            await self._commit(rest)

    async def _commit(self, batch: list[_Pending[T]]) -> None:
        try:
            await self._write([p.item for p in batch])
        except Unavailable as exc:
            for pending in batch:
                if not pending.done.done():
                    pending.done.set_exception(Unavailable(exc.detail))
            return
        self.batches += 1
        self.committed += len(batch)
        for pending in batch:
            if not pending.done.done():
                pending.done.set_result(None)

    async def _write(self, items: Sequence[T], db: Database | None = None) -> None:
        try:
            async with (db or self.db).session() as session:
                await self.flush(session, items)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error(
                "%s store unavailable, %d item(s) refused: %s",
                self.name,
                len(items),
                type(exc).__name__,
            )
            raise Unavailable(f"The {self.name} store is unavailable; retry shortly") from None
