"""Engine, sessions and the request unit of work.

A request's session commits before the status line is sent (`scope="function"`), so a
failed commit becomes a 409/503 problem instead of a 2xx already on the wire.
Services only flush; the unit of work commits.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, MetaData, String, TypeDecorator, Uuid, event
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

from mlgate.errors import Conflict, MlgateError, Unavailable, ValidationFailed

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {uuid.UUID: Uuid(), str: String()}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


AFTER_COMMIT = "mlgate.after_commit"


def after_commit(session: AsyncSession, callback: Callable[[], None]) -> None:
    """Run `callback` once this unit of work has committed (e.g. drop a cache entry)."""
    session.info.setdefault(AFTER_COMMIT, []).append(callback)


class Database:
    """One engine and its session factory. SQLite gets one serialized connection."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"echo": echo, "pool_pre_ping": not self.is_sqlite}
        if self.is_sqlite:
            # SQLite serializes writers itself: the write lock is taken at the first write
            # of a transaction (pysqlite opens transactions only before DML, so reads never
            # hold a snapshot that a later write would have to upgrade) and a waiting writer
            # sleeps in its own thread for up to busy_timeout. Several connections let a
            # unit of work of its own (an audit event) run beside a request's session.
            kwargs.update(pool_size=5, max_overflow=0, pool_timeout=30)
        else:
            kwargs.update(pool_size=10, max_overflow=10, pool_timeout=5, pool_recycle=1800)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A unit of work: commits when the block succeeds, rolls back when it raises."""
        async with self.sessionmaker() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise
            for callback in session.info.pop(AFTER_COMMIT, []):
                callback()

    async def dispose(self) -> None:
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL + synchronous=NORMAL: durable across a process crash, not across power loss.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlstate(exc: Exception) -> str:
    orig = getattr(exc, "orig", None)
    return str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")


def map_db_error(exc: Exception) -> MlgateError | None:
    """Translate a database failure into what a client should see."""
    if isinstance(exc, IntegrityError):
        return Conflict("The change conflicts with existing data")
    if isinstance(exc, DataError) or _sqlstate(exc).startswith("22"):
        # SQLSTATE class 22, "data exception": a value the column cannot hold (out of
        # range, a NUL character in PostgreSQL text). The client's input, not an outage.
        return ValidationFailed("A value cannot be stored: out of range or invalid characters")
    if isinstance(exc, OperationalError | DBAPIError | OSError | ConnectionError | TimeoutError):
        return Unavailable("The database is unavailable; retry shortly")
    return None
