"""Login throttling (ASVS 6.3.1, NIST SP 800-63B §3.2.2).

Failed password checks are counted per (account, client IP) against
`LOGIN_MAX_FAILURES`, per account against `LOGIN_MAX_FAILURES_PER_ACCOUNT` (whether or
not the account exists) and per client IP against `LOGIN_MAX_FAILURES_PER_IP`. Each
failure at or past a limit locks that scope for an exponentially growing delay
(`BASE_DELAY_SECONDS`, doubling, capped at `LOGIN_LOCKOUT_SECONDS`). While locked, every
attempt is refused with 429 and `Retry-After` before any hash is computed, so a flood
costs no CPU. A success clears the account's counters; an admin can clear them too.

State lives in the state backend (memory, or Redis shared by replicas). Deadlines are
stored as instants of the throttle's clock, which tests replace. If the backend does
not answer, throttling fails open with a warning: logins stay possible.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from mlgate import metrics
from mlgate.errors import NotFound, OAuthError, Unavailable
from mlgate.settings import Settings
from mlgate.state import StateBackend, StateError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from mlgate.auth.principal import Principal
    from mlgate.context import AppContext, RequestMeta
    from mlgate.users.tables import UserRow

log = logging.getLogger(__name__)
BASE_DELAY_SECONDS = 30.0
# How long failure counts are remembered after the last failure.
MEMORY_SECONDS = 86400.0


def account_key(login: str, user_id: uuid.UUID | None) -> str:
    """One key per account: its id when it exists (so username and email share one
    budget), otherwise a digest of the name tried."""
    if user_id is not None:
        return f"u:{user_id.hex}"
    name = login.strip().casefold().encode("utf-8", "surrogatepass")
    return "n:" + hashlib.sha256(name).hexdigest()[:32]


class LoginThrottle:
    def __init__(
        self,
        state: StateBackend,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        base_delay: float = BASE_DELAY_SECONDS,
    ) -> None:
        self.state = state
        self.settings = settings
        self.clock = clock
        self.base_delay = base_delay

    def delay(self, beyond: int) -> float:
        """Lock duration for the `beyond`-th failure past a limit (0 = at the limit)."""
        cap = float(self.settings.login_lockout_seconds)
        return min(cap, min(self.base_delay, cap) * 2.0 ** min(beyond, 40))

    @staticmethod
    def _account(account: str) -> str:
        return f"login:a:{account}"

    @staticmethod
    def _ip(ip: str) -> str:
        return f"login:ip:{ip}"

    async def locked_for(self, account: str | None, ip: str) -> float:
        """Seconds until this account may be tried from this IP (0 = now); with no
        account, until this IP may try at all."""
        acct = await self.state.hgetall(self._account(account)) if account is not None else {}
        by_ip = await self.state.hgetall(self._ip(ip))
        deadline = max(
            float(acct.get("until", 0)),
            float(acct.get(f"until@{ip}", 0)),
            float(by_ip.get("until", 0)),
        )
        return max(0.0, deadline - self.clock())

    async def check(self, account: str | None, ip: str) -> None:
        """Raise 429 `temporarily_unavailable` while the account or IP is locked
        (`account=None`: the IP alone, checked before any database work)."""
        try:
            wait = await self.locked_for(account, ip)
        except StateError as exc:
            log.warning("login throttling skipped, state backend unavailable: %s", exc)
            return
        if wait > 0:
            metrics.lockout()
            seconds = max(1, math.ceil(wait))
            raise OAuthError(
                "temporarily_unavailable",
                f"Too many failed logins; try again in {seconds} seconds",
                status=429,
                headers={"Retry-After": str(seconds)},
            )

    async def failed(self, account: str, ip: str) -> None:
        """Count a failed password check and lock the scopes past their limit."""
        s = self.settings
        metrics.login_failure()
        try:
            acct_key, ip_key = self._account(account), self._ip(ip)
            pair = await self.state.hincr(acct_key, f"n@{ip}", 1, MEMORY_SECONDS)
            per_account = await self.state.hincr(acct_key, "n", 1, MEMORY_SECONDS)
            per_ip = await self.state.hincr(ip_key, "n", 1, MEMORY_SECONDS)
            now = self.clock()
            locks: dict[str, str] = {}
            if pair >= s.login_max_failures:
                locks[f"until@{ip}"] = repr(now + self.delay(pair - s.login_max_failures))
            if per_account >= s.login_max_failures_per_account:
                beyond = per_account - s.login_max_failures_per_account
                locks["until"] = repr(now + self.delay(beyond))
            if locks:
                await self.state.hset(acct_key, locks, MEMORY_SECONDS)
            if per_ip >= s.login_max_failures_per_ip:
                until = now + self.delay(per_ip - s.login_max_failures_per_ip)
                await self.state.hset(ip_key, {"until": repr(until)}, MEMORY_SECONDS)
        except StateError as exc:
            log.warning("login failure not counted, state backend unavailable: %s", exc)

    async def succeeded(self, account: str) -> None:
        """A correct password: the account's counters start again."""
        try:
            await self.state.delete(self._account(account))
        except StateError as exc:
            log.warning("login counters not reset, state backend unavailable: %s", exc)

    async def unlock(self, accounts: list[str]) -> None:
        """Clear locks and counters of these accounts (admin unlock). Raises
        `StateError` when the backend is down, so the admin knows it did not happen."""
        await self.state.delete(*(self._account(a) for a in accounts))


async def unlock_user(throttle: LoginThrottle, user_id: uuid.UUID, names: list[str]) -> None:
    """Unlock an account: its id key and the name keys of its username and email."""
    await throttle.unlock([account_key("", user_id), *(account_key(n, None) for n in names)])


async def unlock_account(
    ctx: AppContext,
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    meta: RequestMeta | None,
    principal: Principal | None,
    actor: str | None = None,
) -> UserRow:
    """Admin unlock (`POST /api/v1/admin/users/{id}/unlock`, `mlgate users unlock`):
    clear the account's lockout and counters, audited in the caller's transaction."""
    from mlgate.audit.events import Action, AuditEvent
    from mlgate.users import repository as users_repo

    user = await users_repo.get(session, user_id)
    if user is None or user.deleted_at is not None:
        raise NotFound("No such user")
    throttle = ctx.auth.throttle
    if throttle is not None:
        try:
            await unlock_user(throttle, user.id, [user.username, user.email])
        except StateError:
            raise Unavailable("The lockout store is unavailable; retry shortly") from None
    ctx.audit.record(
        session,
        AuditEvent.of(
            Action.ADMIN_USER_UNLOCK,
            "success",
            meta=meta,
            principal=principal,
            actor=actor,
            resource=f"user:{user.id}",
            status=204,
        ),
    )
    return user


async def unlock_username(ctx: AppContext, username: str) -> UserRow:
    """What `mlgate users unlock USERNAME` runs (on the configured database and state
    backend: with the memory backend only the running process itself holds lockouts,
    so the command is useful with `MLGATE_REDIS_URL`)."""
    from mlgate.users import repository as users_repo

    async with ctx.db.session() as session:
        user = await users_repo.find_by_login(session, username)
        if user is None:
            raise NotFound(f"No user named '{username}'")
        return await unlock_account(ctx, session, user.id, meta=None, principal=None, actor="cli")
