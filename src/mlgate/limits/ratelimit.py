"""Moving-window rate limits with the `limits` library over the state backend, and the
RateLimit headers (IETF draft fields and the older trio) that describe them.

A dead backend fails open: the request goes through without limit headers and a
warning is logged (at most every few seconds, so a Redis outage does not flood logs).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from limits import parse
from limits.aio.strategies import MovingWindowRateLimiter

log = logging.getLogger(__name__)
WARN_EVERY_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    policy: str  # the policy name in the headers, e.g. "user"
    limit: int
    window: int  # seconds
    remaining: int
    reset: int  # seconds until a slot frees

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Policy": f'"{self.policy}";q={self.limit};w={self.window}',
            "RateLimit": f'"{self.policy}";r={self.remaining};t={self.reset}',
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset),
        }


def rate_per_second(rate: str) -> float:
    item = parse(rate)
    return float(item.amount) / float(item.get_expiry())


class RateLimiter:
    """`hit(policy, identity, rate)` consumes one request of a moving window."""

    def __init__(self, storage: Any, *, clock: Any = time.time) -> None:
        self.strategy = MovingWindowRateLimiter(storage)
        self.clock = clock
        self._last_warning = 0.0

    async def hit(self, policy: str, identity: str, rate: str, *, cost: int = 1) -> Decision | None:
        """None when the backend did not answer (fail open)."""
        item = parse(rate)
        try:
            allowed = await self.strategy.hit(item, policy, identity, cost=cost)
            stats = await self.strategy.get_window_stats(item, policy, identity)
        except Exception as exc:
            self._warn(exc)
            return None
        reset = max(0, math.ceil(stats.reset_time - self.clock()))
        return Decision(
            allowed=allowed,
            policy=policy,
            limit=item.amount,
            window=int(item.get_expiry()),
            remaining=max(0, int(stats.remaining)),
            reset=reset if stats.remaining < item.amount else 0,
        )

    async def peek(self, policy: str, identity: str, rate: str) -> Decision | None:
        """The window's state without consuming from it."""
        item = parse(rate)
        try:
            stats = await self.strategy.get_window_stats(item, policy, identity)
        except Exception as exc:
            self._warn(exc)
            return None
        return Decision(
            allowed=stats.remaining > 0,
            policy=policy,
            limit=item.amount,
            window=int(item.get_expiry()),
            remaining=max(0, int(stats.remaining)),
            reset=max(0, math.ceil(stats.reset_time - self.clock())),
        )

    def _warn(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_SECONDS:
            self._last_warning = now
            reason = type(exc).__name__
            log.warning("rate limits not enforced, state backend unavailable: %s", reason)
