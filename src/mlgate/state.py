"""Shared, short-lived state behind one small Protocol: in memory for one process, or
in Redis so that several replicas share rate-limit windows, lockouts and notices.

Nothing here is a source of truth: losing it loosens limits for a while, never
revives a revoked credential (the database's `auth_changes` table stays authoritative).
Values are small hashes of strings with a time to live; rate-limit windows live in a
`limits` storage bound to the same place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)
Clock = Callable[[], float]


class StateError(Exception):
    """The state backend did not answer; callers decide to fail open or closed."""


class StateBackend(Protocol):
    """What the rest of mlgate needs from shared state. Keys are plain strings; the
    backend adds its own prefix. TTLs are seconds of wall time."""

    name: str

    async def healthy(self) -> bool:
        """True when the backend answers."""
        ...

    async def hincr(self, key: str, field: str, amount: int, ttl: float) -> int:
        """Add to an integer field of a hash; (re)set the hash's time to live."""
        ...

    async def hset(self, key: str, values: dict[str, str], ttl: float) -> None: ...

    async def hgetall(self, key: str) -> dict[str, str]: ...

    async def delete(self, *keys: str) -> None: ...

    async def publish(self, channel: str, message: str) -> None:
        """Best effort notice to every replica (including this one)."""
        ...

    def subscribe(self, channel: str) -> AsyncIterator[str]:
        """Messages published on `channel` from now on, until the iterator is closed."""
        ...

    def limits_storage(self) -> Any:
        """A `limits.aio` storage (moving-window capable) over the same backend."""
        ...

    async def close(self) -> None: ...


class MemoryState:
    """One process's state. The clock is injectable so expiry can be tested."""

    name = "memory"

    def __init__(self, *, clock: Clock = time.time) -> None:
        self.clock = clock
        self._hashes: dict[str, tuple[float, dict[str, str]]] = {}
        self._subscribers: dict[str, set[asyncio.Queue[str]]] = {}
        self._limits: Any = None

    async def healthy(self) -> bool:
        return True

    def _live(self, key: str) -> dict[str, str] | None:
        entry = self._hashes.get(key)
        if entry is None:
            return None
        if entry[0] <= self.clock():
            del self._hashes[key]
            return None
        return entry[1]

    async def hincr(self, key: str, field: str, amount: int, ttl: float) -> int:
        values = self._live(key) or {}
        value = int(values.get(field, "0")) + amount
        values[field] = str(value)
        self._hashes[key] = (self.clock() + ttl, values)
        if len(self._hashes) > 100_000:
            self._sweep()
        return value

    async def hset(self, key: str, values: dict[str, str], ttl: float) -> None:
        current = self._live(key) or {}
        current.update(values)
        self._hashes[key] = (self.clock() + ttl, current)

    async def hgetall(self, key: str) -> dict[str, str]:
        return dict(self._live(key) or {})

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._hashes.pop(key, None)

    def _sweep(self) -> None:
        now = self.clock()
        for key in [k for k, (exp, _) in self._hashes.items() if exp <= now]:
            del self._hashes[key]

    async def publish(self, channel: str, message: str) -> None:
        for queue in list(self._subscribers.get(channel, ())):
            queue.put_nowait(message)

    async def subscribe(self, channel: str) -> AsyncIterator[str]:
        queue: asyncio.Queue[str] = asyncio.Queue()
        self._subscribers.setdefault(channel, set()).add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers[channel].discard(queue)

    def limits_storage(self) -> Any:
        if self._limits is None:
            from limits.aio.storage import MemoryStorage

            self._limits = MemoryStorage()
        return self._limits

    async def close(self) -> None:
        self._hashes.clear()


class RedisState:
    """State shared by every replica through Redis (`MLGATE_REDIS_URL`).

    Every operation is bounded by a short socket timeout and raises `StateError` when
    Redis does not answer, so a dead Redis costs a request milliseconds, not seconds.
    """

    name = "redis"

    def __init__(self, url: str, *, prefix: str = "mlgate:", timeout: float = 0.5) -> None:
        from redis.asyncio import Redis

        self.url = url
        self.prefix = prefix
        self.client: Redis = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
            health_check_interval=30,
        )
        self._limits: Any = None

    def _k(self, key: str) -> str:
        return self.prefix + key

    async def healthy(self) -> bool:
        try:
            return bool(await self.client.ping())
        except Exception:
            return False

    async def hincr(self, key: str, field: str, amount: int, ttl: float) -> int:
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hincrby(self._k(key), field, amount)
                pipe.pexpire(self._k(key), max(1, int(ttl * 1000)))
                result = await pipe.execute()
        except Exception as exc:
            raise StateError(f"redis: {type(exc).__name__}") from exc
        return int(result[0])

    async def hset(self, key: str, values: dict[str, str], ttl: float) -> None:
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hset(self._k(key), mapping=dict(values.items()))
                pipe.pexpire(self._k(key), max(1, int(ttl * 1000)))
                await pipe.execute()
        except Exception as exc:
            raise StateError(f"redis: {type(exc).__name__}") from exc

    async def hgetall(self, key: str) -> dict[str, str]:
        try:
            result = await self.client.hgetall(self._k(key))
        except Exception as exc:
            raise StateError(f"redis: {type(exc).__name__}") from exc
        return {str(k): str(v) for k, v in result.items()}

    async def delete(self, *keys: str) -> None:
        if not keys:
            return
        try:
            await self.client.delete(*(self._k(k) for k in keys))
        except Exception as exc:
            raise StateError(f"redis: {type(exc).__name__}") from exc

    async def publish(self, channel: str, message: str) -> None:
        try:
            await self.client.publish(self._k(channel), message)
        except Exception as exc:
            raise StateError(f"redis: {type(exc).__name__}") from exc

    async def subscribe(self, channel: str) -> AsyncIterator[str]:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self._k(channel))
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is not None and message.get("type") == "message":
                    yield str(message["data"])
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    def limits_storage(self) -> Any:
        if self._limits is None:
            from limits.aio.storage import RedisStorage

            self._limits = RedisStorage(
                "async+" + self.url,
                implementation="redispy",
                key_prefix=self.prefix + "limits",
                wrap_exceptions=True,
                socket_timeout=0.5,
                socket_connect_timeout=0.5,
            )
        return self._limits

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.aclose()
        # The limits storage keeps a client of its own.
        limits_client = getattr(getattr(self._limits, "bridge", None), "storage", None)
        if limits_client is not None:
            with contextlib.suppress(Exception):
                await limits_client.aclose()


def make_state(redis_url: str | None, *, prefix: str = "mlgate:") -> StateBackend:
    """Redis when `MLGATE_REDIS_URL` is set, otherwise memory (one process only)."""
    if redis_url:
        return RedisState(redis_url, prefix=prefix)
    return MemoryState()
