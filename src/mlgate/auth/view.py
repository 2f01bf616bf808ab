"""The in-memory view of authorization state, kept fresh from the database change log.

Per request, authentication reads only this view: users (status, roles, permissions),
sessions and API keys are loaded on first use and dropped when the `auth_changes` log
says they changed. Each process polls the log every `poll_interval` seconds (one query
per process, not per request). When the last good poll is older than `stale_after`, the
view stops trusting its cache and reads the database per request; when that fails too,
callers get 503. The database stays the source of truth: losing the poll or Redis can
delay nothing past `stale_after` and can never revive a revoked credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from mlgate.auth import repository as auth_repo
from mlgate.db import Database, map_db_error
from mlgate.errors import Unavailable
from mlgate.rbac.permissions import parse_scope
from mlgate.users import repository as users_repo

log = logging.getLogger(__name__)
T = TypeVar("T")
# Cached user entries are reloaded after this long even without a change notice, so
# profile fields that change without one (last_login_at) stay nearly current.
USER_MAX_AGE = 5.0


@dataclass(frozen=True, slots=True)
class UserState:
    id: uuid.UUID
    username: str
    is_active: bool
    roles: frozenset[str]
    permissions: frozenset[str]
    tokens_valid_after: float | None
    epoch: int
    email: str = ""
    created_at: datetime | None = None
    last_login_at: datetime | None = None
    loaded_at: float = 0.0


@dataclass(frozen=True, slots=True)
class SessionState:
    id: uuid.UUID
    user_id: uuid.UUID
    revoked: bool
    expires_at: float


@dataclass(frozen=True, slots=True)
class KeyState:
    id: uuid.UUID
    user_id: uuid.UUID
    key_hash: str
    scopes: frozenset[str]
    expires_at: float | None
    revoked: bool


ChangeListener = Callable[[str, str], Awaitable[None]]


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


class AuthView:
    def __init__(
        self, db: Database, *, poll_interval: float = 0.3, stale_after: float = 1.0
    ) -> None:
        self.db = db
        self.poll_interval = poll_interval
        self.stale_after = stale_after
        self._users: dict[uuid.UUID, UserState | None] = {}
        self._sessions: dict[uuid.UUID, SessionState | None] = {}
        self._keys: dict[str, KeyState | None] = {}
        self._key_hash_by_id: dict[uuid.UUID, str] = {}
        self._last_seq = 0
        self._last_good_poll = 0.0
        self._task: asyncio.Task[None] | None = None
        self._listeners: list[ChangeListener] = []
        self._publishers: list[Callable[[str, str], None]] = []
        self._wake = asyncio.Event()

    def add_publisher(self, publisher: Callable[[str, str], None]) -> None:
        """Told of every change committed by this process (e.g. to notify other replicas
        through Redis pub/sub so they poll at once instead of within poll_interval)."""
        self._publishers.append(publisher)

    def local_change(self, kind: str, subject: str) -> None:
        """A change this process committed: drop the cached entry now and tell publishers."""
        self.invalidate(kind, subject)
        for publish in self._publishers:
            publish(kind, subject)

    def add_listener(self, listener: ChangeListener) -> None:
        """Called with (kind, subject) for every change seen, e.g. to reload signing keys."""
        self._listeners.append(listener)

    @property
    def fresh(self) -> bool:
        return time.monotonic() - self._last_good_poll <= self.stale_after

    async def start(self) -> None:
        async with self.db.session() as session:
            self._last_seq = await auth_repo.last_change_seq(session)
        self._last_good_poll = time.monotonic()
        self._task = asyncio.create_task(self._run(), name="mlgate-auth-view")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def nudge(self) -> None:
        """Poll now (a Redis notice or a local change arrived)."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            self._wake.clear()
            try:
                await self.poll_once()
            except Exception as exc:  # keep polling; staleness makes requests check the DB
                log.warning("auth change poll failed: %s", type(exc).__name__)

    async def poll_once(self) -> None:
        started = time.monotonic()
        async with self.db.session() as session:
            changes = await auth_repo.changes_after(session, self._last_seq)
        for seq, kind, subject in changes:
            await self.apply_change(kind, subject)
            self._last_seq = seq
        self._last_good_poll = started

    async def apply_change(self, kind: str, subject: str) -> None:
        self.invalidate(kind, subject)
        for listener in self._listeners:
            await listener(kind, subject)

    def invalidate(self, kind: str, subject: str) -> None:
        if kind == "role":
            self._users.clear()
            return
        try:
            ident = uuid.UUID(subject)
        except ValueError:
            return
        if kind == "user":
            self._users.pop(ident, None)
        elif kind == "session":
            self._sessions.pop(ident, None)
        elif kind == "api_key":
            key_hash = self._key_hash_by_id.pop(ident, None)
            if key_hash is not None:
                self._keys.pop(key_hash, None)

    async def _load(self, loader: Callable[[AsyncSession], Awaitable[T]]) -> T:
        try:
            async with self.db.session() as session:
                return await loader(session)
        except Exception as exc:
            mapped = map_db_error(exc)
            if mapped is None:
                raise
            raise Unavailable("Cannot verify credentials right now; retry shortly") from None

    async def user(self, user_id: uuid.UUID) -> UserState | None:
        """The user's current auth state (and profile, whose non-security fields such as
        last_login_at may lag by up to USER_MAX_AGE seconds)."""
        if self.fresh and user_id in self._users:
            cached = self._users[user_id]
            if cached is None or time.monotonic() - cached.loaded_at < USER_MAX_AGE:
                return cached
        state = await self._load(lambda s: load_user_state(s, user_id))
        self._users[user_id] = state
        return state

    async def session(self, sid: uuid.UUID) -> SessionState | None:
        if self.fresh and sid in self._sessions:
            return self._sessions[sid]

        async def load(s: AsyncSession) -> SessionState | None:
            row = await auth_repo.get_session(s, sid)
            if row is None:
                return None
            return SessionState(
                id=row.id,
                user_id=row.user_id,
                revoked=row.revoked_at is not None,
                expires_at=row.expires_at.timestamp(),
            )

        state = await self._load(load)
        self._sessions[sid] = state
        return state

    async def api_key(self, key_hash: str) -> KeyState | None:
        if self.fresh and key_hash in self._keys:
            return self._keys[key_hash]

        async def load(s: AsyncSession) -> KeyState | None:
            row = await auth_repo.find_api_key(s, key_hash)
            if row is None:
                return None
            return KeyState(
                id=row.id,
                user_id=row.user_id,
                key_hash=row.key_hash,
                scopes=parse_scope(row.scopes),
                expires_at=_ts(row.expires_at),
                revoked=row.revoked_at is not None,
            )

        state = await self._load(load)
        # Unknown keys are not cached: a flood of random keys must not grow memory.
        if state is not None:
            self._keys[key_hash] = state
            self._key_hash_by_id[state.id] = key_hash
        return state


async def load_user_state(session: AsyncSession, user_id: uuid.UUID) -> UserState | None:
    row = await users_repo.get(session, user_id)
    if row is None:
        return None
    roles = await users_repo.roles_of(session, user_id)
    permissions = await users_repo.permissions_of_roles(session, roles)
    return UserState(
        id=row.id,
        username=row.username,
        is_active=row.is_active,
        roles=frozenset(roles),
        permissions=permissions,
        tokens_valid_after=_ts(row.tokens_valid_after),
        epoch=row.auth_epoch,
        email=row.email,
        created_at=row.created_at,
        last_login_at=row.last_login_at,
        loaded_at=time.monotonic(),
    )
