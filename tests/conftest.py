"""Shared fixtures: a fresh, bootstrapped database per test on SQLite (always) and on
PostgreSQL (when MLGATE_TEST_DATABASE_URL is set), and an httpx client on the real app.

The expensive first start (migrations, signing key, admin, demo models) runs once per
backend into a template; each test gets a copy (a file copy on SQLite, CREATE DATABASE
... TEMPLATE on PostgreSQL), so tests never share leftovers.
"""

from __future__ import annotations

import itertools
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from mlgate.app import create_app
from mlgate.context import AppContext
from mlgate.settings import Settings

ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = "correct horse battery staple for root"
USER_PASSWORD = "a long and quite unguessable passphrase"
TEST_KEK = "test-key-encryption-key-0123456789abcdef"
PG_URL = os.environ.get("MLGATE_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("MLGATE_TEST_REDIS_URL")
REQUIRE_SERVICES = os.environ.get("MLGATE_REQUIRE_SERVICES") == "1"
_counter = itertools.count()


def base_settings(data_dir: Path, database_url: str | None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "admin_username": ADMIN_USERNAME,
        "admin_password": ADMIN_PASSWORD,
        "key_encryption_key": TEST_KEK,
        # Cheap hashing: the parameters are the subject of their own tests only.
        "argon2_memory_cost": 1024,
        "argon2_time_cost": 1,
        "log_format": "console",
    }
    values.update(overrides)
    return Settings(**values)


def backends() -> list[Any]:
    params: list[Any] = ["sqlite"]
    marks = [] if PG_URL else [pytest.mark.skip(reason="MLGATE_TEST_DATABASE_URL not set")]
    if REQUIRE_SERVICES and not PG_URL:
        raise RuntimeError("MLGATE_REQUIRE_SERVICES=1 but MLGATE_TEST_DATABASE_URL is not set")
    params.append(pytest.param("postgres", marks=[pytest.mark.postgres, *marks]))
    return params


def _pg_url(database: str) -> str:
    assert PG_URL is not None
    return PG_URL.rsplit("/", 1)[0] + "/" + database


async def _pg_admin(statement: str) -> None:
    import asyncpg

    assert PG_URL is not None
    dsn = PG_URL.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@dataclass
class Template:
    backend: str
    root: Path
    database_url: str | None
    pg_name: str | None = None


async def _bootstrap_template(backend: str, root: Path) -> Template:
    from mlgate.app import build_context
    from mlgate.bootstrap import bootstrap

    data_dir = root / "template"
    if backend == "sqlite":
        template = Template(backend, data_dir, None)
    else:
        name = f"mlgate_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        await _pg_admin(f'CREATE DATABASE "{name}"')
        template = Template(backend, data_dir, _pg_url(name), pg_name=name)
    ctx = build_context(base_settings(data_dir, template.database_url))
    try:
        await bootstrap(ctx)
    finally:
        ctx.passwords.close()
        await ctx.db.dispose()
    return template


@pytest.fixture(scope="session")
def _templates_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("templates")


_templates: dict[str, Template] = {}


@pytest_asyncio.fixture(scope="session")
async def _template_registry(_templates_root: Path) -> AsyncIterator[dict[str, Template]]:
    yield _templates
    for template in _templates.values():
        if template.pg_name:
            await _pg_admin(f'DROP DATABASE IF EXISTS "{template.pg_name}" WITH (FORCE)')


async def fresh_database(
    backend: str, registry: dict[str, Template], root: Path, target: Path
) -> tuple[str | None, str | None]:
    """A copy of the bootstrapped template: (database_url, postgres db name to drop)."""
    if backend not in registry:
        registry[backend] = await _bootstrap_template(backend, root / backend)
    template = registry[backend]
    shutil.copytree(template.root, target, dirs_exist_ok=True)
    if backend == "sqlite":
        return None, None
    name = f"mlgate_t_{os.getpid()}_{next(_counter)}"
    await _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template.pg_name}"')
    return _pg_url(name), name


@dataclass
class Service:
    """A running app on a fresh database, with a client and helpers to make users."""

    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings
    users: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def ctx(self) -> AppContext:
        ctx: AppContext = self.app.state.ctx
        return ctx

    async def login(
        self, username: str, password: str, *, scope: str | None = None
    ) -> dict[str, Any]:
        data = {"grant_type": "password", "username": username, "password": password}
        if scope is not None:
            data["scope"] = scope
        response = await self.client.post("/api/v1/auth/token", data=data)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def token(self, username: str, password: str, **kw: Any) -> str:
        return str((await self.login(username, password, **kw))["access_token"])

    async def admin_token(self) -> str:
        return await self.token(ADMIN_USERNAME, ADMIN_PASSWORD)

    async def admin_headers(self) -> dict[str, str]:
        return bearer(await self.admin_token())

    async def register(
        self, username: str | None = None, password: str = USER_PASSWORD
    ) -> dict[str, Any]:
        username = username or f"user{uuid.uuid4().hex[:8]}"
        response = await self.client.post(
            "/api/v1/auth/register",
            json={"username": username, "email": f"{username}@example.com", "password": password},
        )
        assert response.status_code == 201, response.text
        self.users[username] = (username, password)
        body: dict[str, Any] = response.json()
        return body

    async def create_user(
        self, role: str = "user", username: str | None = None, password: str = USER_PASSWORD
    ) -> tuple[str, str]:
        """A user with one role, made directly in the database (no registration limits)."""
        username = username or f"{role}{uuid.uuid4().hex[:8]}"
        async with self.ctx.db.session() as session:
            await self.ctx.auth.create_user(
                session,
                username=username,
                email=f"{username}@example.com",
                password=password,
                roles=[role],
            )
        return username, password

    async def user_headers(self, role: str = "user") -> dict[str, str]:
        username, password = await self.create_user(role)
        return bearer(await self.token(username, password))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ServiceFactory = Callable[..., Any]


@pytest.fixture(params=backends())
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest_asyncio.fixture
async def make_service(
    backend: str,
    tmp_path: Path,
    _templates_root: Path,
    _template_registry: dict[str, Template],
) -> AsyncIterator[ServiceFactory]:
    """`async with make_service(**settings_overrides) as svc:` — a fresh app per call."""
    dropped: list[str] = []

    @asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[Service]:
        target = tmp_path / f"data{next(_counter)}"
        url, pg_name = await fresh_database(backend, _template_registry, _templates_root, target)
        if pg_name:
            dropped.append(pg_name)
        settings = base_settings(target, url, **overrides)
        app = create_app(settings, run_bootstrap=False)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
            async with httpx.AsyncClient(
                transport=transport, base_url="http://testserver"
            ) as client:
                yield Service(app=app, client=client, settings=settings)

    yield factory
    for name in dropped:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest_asyncio.fixture
async def svc(make_service: ServiceFactory) -> AsyncIterator[Service]:
    """The default service: a fresh app and database for this test."""
    async with make_service() as service:
        yield service


@pytest.fixture
def client(svc: Service) -> httpx.AsyncClient:
    return svc.client
