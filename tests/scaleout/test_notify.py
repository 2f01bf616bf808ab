"""The Redis pub/sub accelerator: notices reach other processes, never their sender,
and the subscriber reconnects after Redis comes back."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import pytest

from mlgate.notify import Notifier
from tests.conftest import REDIS_URL
from tests.scaleout.harness import PrivateRedis

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(not REDIS_URL, reason="MLGATE_TEST_REDIS_URL not set"),
]


async def _until(check: Callable[[], bool], within: float) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within, "condition not met in time"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


def _pair(url: str) -> tuple[Notifier, Notifier, list[tuple[str, str]], list[tuple[str, str]]]:
    channel = f"mlgate:test:{uuid.uuid4().hex}"
    a, b = Notifier(url, channel=channel), Notifier(url, channel=channel)
    seen_a: list[tuple[str, str]] = []
    seen_b: list[tuple[str, str]] = []
    a.on(lambda _k: True, lambda k, s: seen_a.append((k, s)))
    b.on(lambda _k: True, lambda k, s: seen_b.append((k, s)))
    return a, b, seen_a, seen_b


async def test_notice_reaches_the_other_process_only() -> None:
    assert REDIS_URL is not None
    a, b, seen_a, seen_b = _pair(REDIS_URL)
    await a.start()
    await b.start()
    try:
        await _until(lambda: a.connected and b.connected, 5)
        await asyncio.sleep(0.1)  # subscriptions are live
        a.publish("session", "0b4a1a9e-2b52-4b8e-9f00-000000000001")
        a.publish("model", "iris")
        took = await _until(lambda: len(seen_b) == 2, 2)
        assert took < 0.5
        assert seen_b == [("session", "0b4a1a9e-2b52-4b8e-9f00-000000000001"), ("model", "iris")]
        await asyncio.sleep(0.1)
        assert seen_a == []
    finally:
        await a.stop()
        await b.stop()


async def test_reconnects_when_redis_returns() -> None:
    redis = PrivateRedis()
    redis.start()
    a, b, _seen_a, seen_b = _pair(redis.url)
    await a.start()
    await b.start()
    try:
        await _until(lambda: a.connected and b.connected, 5)
        redis.stop()
        await _until(lambda: not a.connected and not b.connected, 5)
        a.publish("user", "lost")  # dropped: the poll covers it; never raises
        redis.start()
        await _until(lambda: a.connected and b.connected, 8)
        await asyncio.sleep(0.1)
        a.publish("user", "after")
        await _until(lambda: ("user", "after") in seen_b, 2)
        assert ("user", "lost") not in seen_b
    finally:
        await a.stop()
        await b.stop()
        redis.stop()
