"""Dynamic batching: concurrent requests to one model become one `predict` call.

While a batch runs in the executor, new requests queue up; the next batch takes them
all (up to `max_rows`). Waiting for stragglers (at most `max_wait`) happens only while
fewer requests are queued than the previous batch held, so a lone client pays no added
latency and a steady crowd is batched without idling.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from mlgate.serving.runtime import FloatArray, Outputs


@dataclass(slots=True)
class _Item:
    rows: FloatArray
    future: asyncio.Future[Outputs] = field(repr=False)


class Batcher:
    """Coalesces `submit` calls for one model; each caller gets exactly its own rows."""

    def __init__(
        self,
        predict: Callable[[FloatArray], Outputs],
        executor: Executor | None,
        *,
        max_rows: int,
        max_wait_s: float,
    ) -> None:
        self._predict = predict
        self._executor = executor
        self.max_rows = max(1, max_rows)
        self.max_wait_s = max(0.0, max_wait_s)
        self._pending: list[_Item] = []
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_size = 1
        self.batches = 0  # calls made, for tests and metrics

    async def submit(self, rows: FloatArray) -> Outputs:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        future: asyncio.Future[Outputs] = asyncio.get_running_loop().create_future()
        self._pending.append(_Item(rows, future))
        self._arrived.set()
        return await future

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for item in self._pending:
            if not item.future.done():
                item.future.cancel()
        self._pending.clear()

    def _pending_rows(self) -> int:
        return sum(item.rows.shape[0] for item in self._pending)

    async def _gather(self) -> list[_Item]:
        # Wait for stragglers only while fewer requests are queued than the last batch
        # held: a lone client (last batch of one) or a full house never waits.
        loop = asyncio.get_running_loop()
        if self.max_wait_s > 0 and len(self._pending) < self._last_size:
            deadline = loop.time() + self.max_wait_s
            while len(self._pending) < self._last_size and self._pending_rows() < self.max_rows:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), remaining)
        taken: list[_Item] = []
        rows = 0
        # Always take at least one request, even if it alone exceeds max_rows.
        while self._pending and (
            not taken or rows + self._pending[0].rows.shape[0] <= self.max_rows
        ):
            item = self._pending.pop(0)
            if item.future.cancelled():
                continue
            taken.append(item)
            rows += item.rows.shape[0]
        return taken

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            items = await self._gather()
            if not items:
                continue
            self._last_size = len(items)
            batch = items[0].rows if len(items) == 1 else np.concatenate([i.rows for i in items])
            try:
                outputs = await loop.run_in_executor(self._executor, self._predict, batch)
                if len(outputs) != batch.shape[0]:
                    raise RuntimeError("the model answered a different number of rows")
            except Exception as exc:  # every caller of this batch learns of the failure
                for item in items:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            self.batches += 1
            start = 0
            for item in items:
                stop = start + item.rows.shape[0]
                if not item.future.done():
                    item.future.set_result(outputs.slice(start, stop))
                start = stop
