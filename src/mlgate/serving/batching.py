"""Dynamic batching: concurrent requests to one model become one `predict` call.

While a batch runs in the executor, new requests queue up; the next batch takes them
all (up to `max_rows`). Waiting for stragglers (at most `max_wait`) happens only while
fewer requests are queued than the previous batch held, so a lone client pays no added
latency and a steady crowd is batched without idling. A lone client's request, finding
the batcher idle after a batch of one, calls the model directly (no hop through the
batching task).

A batch that fails is retried request by request, so one caller's rows can never fail
another caller's request. Closing answers every waiting caller: queued requests are
still served (up to a grace period), the rest get 503.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from mlgate.errors import Unavailable
from mlgate.serving.runtime import FloatArray, Outputs

CLOSE_GRACE_SECONDS = 5.0


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
        self._running: list[_Item] = []
        self._direct = False
        self._closed = False
        self._last_size = 1
        self.batches = 0  # calls made, for tests and metrics
        self.on_batch: Callable[[int], None] | None = None  # told each batch's row count

    async def submit(self, rows: FloatArray) -> Outputs:
        if self._closed:
            raise Unavailable("The model is being unloaded; retry")
        loop = asyncio.get_running_loop()
        if self._last_size == 1 and not (self._pending or self._running or self._direct):
            # Idle and lightly loaded (the last batch was a lone request): nobody to batch
            # with, so skip the hop through the batching task. Calls arriving meanwhile
            # queue up and are batched as usual.
            self._direct = True
            try:
                outputs = await loop.run_in_executor(self._executor, self._predict, rows)
            finally:
                self._direct = False
            if len(outputs) != rows.shape[0]:
                raise RuntimeError("the model answered a different number of rows")
            if self.on_batch is not None:
                self.on_batch(rows.shape[0])
            return outputs
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())
        future: asyncio.Future[Outputs] = loop.create_future()
        self._pending.append(_Item(rows, future))
        self._arrived.set()
        return await future

    async def close(self, grace_s: float = CLOSE_GRACE_SECONDS) -> None:
        """Stop taking requests; serve those already queued for up to `grace_s`, then
        answer any caller still waiting with 503 (never leave one hanging)."""
        self._closed = True
        self._arrived.set()
        task, self._task = self._task, None
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), grace_s)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        leftover = self._pending + self._running
        self._pending, self._running = [], []
        for item in leftover:
            if not item.future.done():
                item.future.set_exception(Unavailable("The model was unloaded; retry"))

    def _pending_rows(self) -> int:
        return sum(item.rows.shape[0] for item in self._pending)

    async def _gather(self) -> list[_Item]:
        # Wait for stragglers only while fewer requests are queued than the last batch
        # held: a lone client (last batch of one) or a full house never waits.
        loop = asyncio.get_running_loop()
        if self.max_wait_s > 0 and not self._closed and len(self._pending) < self._last_size:
            deadline = loop.time() + self.max_wait_s
            while (
                not self._closed
                and len(self._pending) < self._last_size
                and self._pending_rows() < self.max_rows
            ):
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
        while True:
            if not self._pending:
                if self._closed:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            items = await self._gather()
            if not items:
                continue
            self._last_size = len(items)
            self._running = items  # left in place if cancelled: `close` answers them
            await self._serve(items)
            self._running = []

    async def _serve(self, items: list[_Item]) -> None:
        loop = asyncio.get_running_loop()
        try:
            batch = items[0].rows if len(items) == 1 else np.concatenate([i.rows for i in items])
            outputs = await loop.run_in_executor(self._executor, self._predict, batch)
            if len(outputs) != batch.shape[0]:
                raise RuntimeError("the model answered a different number of rows")
        except Exception as exc:
            if len(items) == 1:
                _settle(items[0], exc)
                return
            # One request's rows may be what broke the batch: answer each on its own.
            for item in items:
                try:
                    single_out = await loop.run_in_executor(
                        self._executor, self._predict, item.rows
                    )
                    _settle(item, single_out)
                except Exception as single:
                    _settle(item, single)
            return
        self.batches += 1
        if self.on_batch is not None:
            self.on_batch(sum(item.rows.shape[0] for item in items))
        start = 0
        for item in items:
            stop = start + item.rows.shape[0]
            _settle(item, outputs.slice(start, stop))
            start = stop


def _settle(item: _Item, result: Outputs | Exception) -> None:
    if item.future.done():
        return  # the caller went away
    if isinstance(result, Exception):
        item.future.set_exception(result)
    else:
        item.future.set_result(result)
