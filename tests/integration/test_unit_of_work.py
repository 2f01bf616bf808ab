"""A request's unit of work commits before its status line: a failed commit is answered
as an error, never as an earlier 2xx; unexpected errors are a clean 500 problem."""

from __future__ import annotations

import logging
import uuid

import pytest
from fastapi import APIRouter
from sqlalchemy import select

from mlgate.deps import Public, SessionDep
from mlgate.users.tables import UserRow
from tests.conftest import Service

pytestmark = pytest.mark.asyncio


def _add_test_routes(svc: Service) -> None:
    router = APIRouter()

    @router.post("/test/duplicate", dependencies=[Public()], status_code=201)
    async def duplicate(session: SessionDep) -> dict[str, str]:
        # Two rows with one unique key: the conflict only shows at commit time.
        for _ in range(2):
            session.add(
                UserRow(
                    id=uuid.uuid4(),
                    username="dup",
                    username_key="dup",
                    email=f"{uuid.uuid4().hex}@example.com",
                    email_key=f"{uuid.uuid4().hex}@example.com",
                    password_hash=None,
                )
            )
        return {"status": "created"}

    @router.get("/test/boom", dependencies=[Public()])
    async def boom() -> None:
        raise RuntimeError("secret internal detail SELECT * FROM users")

    svc.app.include_router(router)


async def test_failed_commit_is_a_conflict_not_a_2xx(svc: Service) -> None:
    _add_test_routes(svc)
    response = await svc.client.post("/test/duplicate")
    assert response.status_code == 409
    assert response.json()["code"] == "conflict"
    async with svc.ctx.db.session() as session:
        rows = (await session.execute(select(UserRow).where(UserRow.username == "dup"))).all()
    assert rows == []


async def test_unexpected_error_is_a_clean_500(
    svc: Service, caplog: pytest.LogCaptureFixture
) -> None:
    _add_test_routes(svc)
    with caplog.at_level(logging.ERROR):
        response = await svc.client.get("/test/boom", headers={"X-Request-ID": "trace-me-1"})
    assert response.status_code == 500
    body = response.json()
    assert body["code"] == "internal_error"
    assert body["request_id"] == "trace-me-1"
    assert "SELECT" not in response.text
    assert "Traceback" not in response.text
    assert response.headers["x-request-id"] == "trace-me-1"
    assert any("trace-me-1" in r.getMessage() for r in caplog.records)


async def test_database_down_is_503_and_recovers(svc: Service) -> None:
    token = await svc.admin_token()
    engine = svc.ctx.db.engine
    original = svc.ctx.db.sessionmaker

    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    broken = create_async_engine(
        "postgresql+asyncpg://nobody@127.0.0.1:1/none", pool_pre_ping=False
    )
    svc.ctx.db.sessionmaker = async_sessionmaker(broken, expire_on_commit=False)
    try:
        response = await svc.client.post(
            "/api/v1/auth/register",
            json={"username": "downer", "email": "d@example.com", "password": "x" * 20},
        )
        assert response.status_code == 503
        assert response.json()["code"] == "unavailable"
        assert "retry-after" in response.headers
    finally:
        svc.ctx.db.sessionmaker = original
        await broken.dispose()
    assert engine is svc.ctx.db.engine
    me = await svc.client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
