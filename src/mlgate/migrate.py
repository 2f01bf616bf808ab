"""Schema migrations and the first-start lock.

Replicas may start together against one empty database: bootstrap (migrations,
signing key, first admin, demo models) runs under a PostgreSQL advisory lock, or a file
lock for SQLite, so exactly one of them does the work and the others find it done.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text

from mlgate.db import Database

ADVISORY_LOCK_ID = 0x6D6C67617465  # "mlgate"


def _alembic_config(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("mlgate") / "migrations"))
    cfg.attributes["connection"] = connection
    return cfg


async def migrate(db: Database) -> None:
    """Bring the schema to the newest revision (every head)."""

    def upgrade(connection: Connection) -> None:
        command.upgrade(_alembic_config(connection), "heads")

    # Alembic logs every plugin and step at INFO; a start-up needs none of that.
    logging.getLogger("alembic").setLevel(logging.WARNING)

    async with db.engine.begin() as conn:
        await conn.run_sync(upgrade)


@asynccontextmanager
async def bootstrap_lock(db: Database, data_dir: Path) -> AsyncIterator[None]:
    """Hold the one first-start lock for the duration of the block."""
    if db.is_sqlite:
        data_dir.mkdir(parents=True, exist_ok=True)
        lock_path = data_dir / ".bootstrap.lock"
        with lock_path.open("a") as handle:
            await asyncio.to_thread(fcntl.flock, handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return
    async with db.engine.connect() as conn:
        await conn.execute(text("SELECT pg_advisory_lock(:id)"), {"id": ADVISORY_LOCK_ID})
        await conn.commit()
        try:
            yield
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": ADVISORY_LOCK_ID})
            await conn.commit()
