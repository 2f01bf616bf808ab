"""Which limits apply to a user: the most generous value over its roles (a role without
its own value takes the setting for its built-in name, `RATE_LIMIT_*` / `DAILY_QUOTA_*`,
or the `user` setting for a custom role), then a per-user daily-quota override.
None means unlimited, which is the most generous of all. Days are UTC days."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from mlgate.limits.ratelimit import rate_per_second
from mlgate.settings import Settings


@dataclass(frozen=True, slots=True)
class UserLimits:
    rate_limit: str | None
    daily_quota: int | None


def default_rate(settings: Settings, role: str) -> str | None:
    return {
        "guest": settings.rate_limit_guest,
        "admin": settings.rate_limit_admin,
    }.get(role, settings.rate_limit_user)


def default_quota(settings: Settings, role: str) -> int | None:
    return {
        "guest": settings.daily_quota_guest,
        "admin": settings.daily_quota_admin,
    }.get(role, settings.daily_quota_user)


def most_generous_rate(values: Iterable[str | None]) -> str | None:
    best: str | None = None
    seen = False
    for value in values:
        if value is None:
            return None
        if not seen or rate_per_second(value) > rate_per_second(best or value):
            best = value
        seen = True
    return best


def most_generous_quota(values: Iterable[int | None]) -> int | None:
    best: int | None = None
    seen = False
    for value in values:
        if value is None:
            return None
        best = value if not seen or best is None else max(best, value)
        seen = True
    return best


def resolve(
    settings: Settings,
    roles: Iterable[str],
    role_values: dict[str, tuple[str | None, int | None]],
    user_override: int | None,
) -> UserLimits:
    names = sorted(set(roles)) or ["user"]
    rates = [role_values.get(r, (None, None))[0] or default_rate(settings, r) for r in names]
    quotas: list[int | None] = []
    for r in names:
        own = role_values.get(r, (None, None))[1]
        quotas.append(own if own is not None else default_quota(settings, r))
    quota = user_override if user_override is not None else most_generous_quota(quotas)
    return UserLimits(most_generous_rate(rates), quota)


def day_of(now: datetime) -> date:
    return now.astimezone(UTC).date()


def next_reset(now: datetime) -> datetime:
    """Midnight UTC after `now`: when the daily quota starts again."""
    return datetime.combine(day_of(now) + timedelta(days=1), time(0), tzinfo=UTC)


def month_start(day: date) -> date:
    return day.replace(day=1)
