"""Accounting around each prediction: rate limits, daily quotas and usage counters.

The serving domain calls two methods per prediction:

    headers = await ctx.accounting.admit(principal, rows)   # before predicting
    ...predict...
    await ctx.accounting.record(principal, model, version, rows)  # after a success

`admit` raises `RateLimited` (429 `rate_limited`) or `QuotaExceeded` (429
`quota_exceeded`), both with `Retry-After` and the RateLimit headers; otherwise it
returns the RateLimit headers to put on the answer. `record` adds to the (user, model,
UTC day) usage counter through a group-commit writer and returns once committed.
Budgets are per user: a user's tokens and API keys share one.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from mlgate.audit.service import iso
from mlgate.audit.writer import GroupCommitWriter
from mlgate.auth.principal import Principal
from mlgate.db import Database, utcnow
from mlgate.errors import NotFound, QuotaExceeded, RateLimited, Unavailable
from mlgate.limits import quotas
from mlgate.limits import repository as repo
from mlgate.limits.quotas import UserLimits
from mlgate.limits.ratelimit import Decision, RateLimiter
from mlgate.settings import Settings
from mlgate.state import StateBackend
from mlgate.users import repository as users_repo

if TYPE_CHECKING:
    from mlgate.context import AppContext

log = logging.getLogger(__name__)
CACHE_SECONDS = 5.0
REVOKE_RATE = "60/minute"


@dataclass(frozen=True, slots=True)
class UsageDelta:
    user_id: uuid.UUID
    model: str
    rows: int
    at: datetime


class Accounting:
    """Rate limits, quotas and usage. Never imports fastapi; commits only its own
    usage batches."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        state: StateBackend,
        *,
        clock: Callable[[], datetime] = utcnow,
        writer_db: Database | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.limiter = RateLimiter(state.limits_storage())
        self.clock = clock
        self.writer: GroupCommitWriter[UsageDelta] = GroupCommitWriter(
            writer_db or db, self._flush, name="usage", fallback_db=db
        )
        self._roles: tuple[float, dict[str, tuple[str | None, int | None]]] | None = None
        self._overrides: dict[uuid.UUID, tuple[float, int | None]] = {}

    async def start(self) -> None:
        self.writer.start()

    async def stop(self) -> None:
        await self.writer.stop()

    # -- which limits ---------------------------------------------------------------------

    async def limits_for(self, principal: Principal) -> UserLimits:
        now = time.monotonic()
        roles = self._roles
        cached = self._overrides.get(principal.user_id)
        if roles is None or roles[0] < now or cached is None or cached[0] < now:
            async with self.db.session() as session:
                if roles is None or roles[0] < now:
                    roles = (now + CACHE_SECONDS, await repo.role_limits(session))
                    self._roles = roles
                if cached is None or cached[0] < now:
                    _, override = await repo.user_quota(session, principal.user_id)
                    if len(self._overrides) > 50_000:
                        self._overrides.clear()
                    cached = (now + CACHE_SECONDS, override)
                    self._overrides[principal.user_id] = cached
        return quotas.resolve(self.settings, principal.roles, roles[1], cached[1])

    def invalidate(self, kind: str = "", subject: str = "") -> None:
        """Drop cached limit values (a role or a user changed)."""
        if kind == "user":
            try:
                self._overrides.pop(uuid.UUID(subject), None)
            except ValueError:
                self._overrides.clear()
            return
        self._roles = None
        if kind != "role":
            self._overrides.clear()

    async def on_change(self, kind: str, subject: str) -> None:
        if kind in ("user", "role"):
            self.invalidate(kind, subject)

    # -- around a prediction --------------------------------------------------------------

    async def admit(self, principal: Principal, rows: int) -> dict[str, str]:
        """Count one request against the user's rate limit and check `rows` against the
        daily quota. Returns the RateLimit headers; raises 429 when refused."""
        limits = await self.limits_for(principal)
        headers: dict[str, str] = {}
        if limits.rate_limit is not None:
            decision = await self.limiter.hit("user", principal.user_id.hex, limits.rate_limit)
            if decision is not None:
                headers = decision.headers()
                if not decision.allowed:
                    raise _with(
                        RateLimited(
                            f"Rate limit of {limits.rate_limit} exceeded; "
                            f"retry in {max(1, decision.reset)} s",
                            retry_after=decision.reset,
                        ),
                        headers,
                    )
        if limits.daily_quota is not None:
            now = self.clock()
            async with self.db.session() as session:
                used = await repo.rows_on(session, principal.user_id, quotas.day_of(now))
            if used + rows > limits.daily_quota:
                reset = quotas.next_reset(now)
                raise _with(
                    QuotaExceeded(
                        f"Daily quota of {limits.daily_quota} rows would be exceeded "
                        f"({used} used today, {rows} asked); it resets at {iso(reset)}",
                        retry_after=int((reset - now).total_seconds()) + 1,
                    ),
                    headers,
                )
        return headers

    async def record(
        self, principal: Principal, model: str, version: int | None, rows: int
    ) -> None:
        """Add one prediction of `rows` rows to today's counter for (user, model).
        Returns once committed; raises `Unavailable` when the database is down."""
        del version  # counters are per model; the audit event keeps the version
        await self.writer.submit(UsageDelta(principal.user_id, model, rows, self.clock()))

    async def _flush(self, session: AsyncSession, items: Sequence[UsageDelta]) -> None:
        deltas: dict[repo.UsageKey, tuple[int, int]] = {}
        for d in items:
            key = (d.user_id, quotas.day_of(d.at), d.model[:64])
            count, rows = deltas.get(key, (0, 0))
            deltas[key] = (count + 1, rows + d.rows)
        await repo.add_usage(session, deltas)

    # -- per-IP limits of public routes ---------------------------------------------------

    async def limit_ip(self, policy: str, ip: str, rate: str | None) -> dict[str, str]:
        """Count one request from `ip` against `rate` (None = unlimited)."""
        if rate is None:
            return {}
        decision = await self.limiter.hit(policy, ip, rate)
        if decision is None:
            return {}
        if not decision.allowed:
            raise _with(
                RateLimited(
                    f"Too many requests from this address; retry in {max(1, decision.reset)} s",
                    retry_after=decision.reset,
                ),
                decision.headers(),
            )
        return decision.headers()

    # -- usage ----------------------------------------------------------------------------

    async def usage(self, session: AsyncSession, user_id: uuid.UUID) -> dict[str, Any]:
        """Predictions and rows by model, today and this month, with the user's limits."""
        exists, override = await repo.user_quota(session, user_id)
        if not exists:
            raise NotFound("No such user")
        roles = await users_repo.roles_of(session, user_id)
        limits = quotas.resolve(self.settings, roles, await repo.role_limits(session), override)
        now = self.clock()
        today = quotas.day_of(now)
        daily = await repo.by_model(session, user_id, today, today)
        monthly = await repo.by_model(session, user_id, quotas.month_start(today), today)
        used_today = sum(r for _, _, r in daily)
        window: Decision | None = None
        if limits.rate_limit is not None:
            window = await self.limiter.peek("user", user_id.hex, limits.rate_limit)
        return {
            "user_id": str(user_id),
            "day": today.isoformat(),
            "month": today.strftime("%Y-%m"),
            "today": _summary(daily),
            "this_month": _summary(monthly),
            "limits": {
                "rate_limit": limits.rate_limit,
                "rate_limit_remaining": window.remaining if window else None,
                "daily_quota": limits.daily_quota,
                "daily_quota_used": used_today,
                "daily_quota_remaining": (
                    None if limits.daily_quota is None else max(0, limits.daily_quota - used_today)
                ),
                "daily_quota_resets_at": iso(quotas.next_reset(now)),
            },
        }


def accounting_of(ctx: AppContext) -> Accounting:
    """The context's accounting service (built in `build_context`)."""
    if ctx.accounting is None:
        raise Unavailable("Accounting is not running")
    return ctx.accounting


def _summary(by_model: list[tuple[str, int, int]]) -> dict[str, Any]:
    return {
        "predictions": sum(p for _, p, _ in by_model),
        "rows": sum(r for _, _, r in by_model),
        "by_model": [{"model": m, "predictions": p, "rows": r} for m, p, r in by_model],
    }


def _with(exc: RateLimited, headers: dict[str, str]) -> RateLimited:
    exc.headers = {**headers, **exc.headers}
    return exc
