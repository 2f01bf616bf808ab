"""Rate limits, quotas and usage through the accounting service and over HTTP."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from mlgate.auth.principal import Principal
from mlgate.errors import QuotaExceeded, RateLimited
from mlgate.limits import quotas
from mlgate.limits.ratelimit import RateLimiter
from mlgate.limits.service import Accounting
from mlgate.rbac.tables import RoleRow
from mlgate.state import MemoryState, RedisState
from mlgate.users import repository as users_repo
from mlgate.users.tables import UserRow
from tests.conftest import Service, base_settings, bearer

REDIS_URL = os.environ.get("MLGATE_TEST_REDIS_URL")


async def _principal(svc: Service, role: str = "user") -> Principal:
    username, _ = await svc.create_user(role)
    async with svc.ctx.db.session() as session:
        user = await users_repo.find_by_login(session, username)
        assert user is not None
        roles = frozenset(await users_repo.roles_of(session, user.id))
    return Principal(
        user_id=user.id, username=username, kind="user", roles=roles, permissions=frozenset()
    )


def _accounting(svc: Service) -> Accounting:
    assert svc.ctx.accounting is not None
    return svc.ctx.accounting


def test_most_generous_values() -> None:
    s = base_settings(Path("/tmp/unused"), None)
    assert quotas.most_generous_rate(["60/minute", "2/second"]) == "2/second"
    assert quotas.most_generous_rate(["60/minute", None]) is None
    assert quotas.most_generous_quota([10, 1000, 5]) == 1000
    assert quotas.most_generous_quota([10, None]) is None
    guest_only = quotas.resolve(s, ["guest"], {}, None)
    assert guest_only == quotas.UserLimits("60/minute", 1000)
    both = quotas.resolve(s, ["guest", "user"], {}, None)
    assert both == quotas.UserLimits("1200/minute", None)
    custom = quotas.resolve(s, ["guest"], {"guest": ("5/minute", 7)}, None)
    assert custom == quotas.UserLimits("5/minute", 7)
    assert quotas.resolve(s, ["guest"], {}, 3).daily_quota == 3
    now = datetime(2025, 3, 31, 23, 59, tzinfo=UTC)
    assert quotas.next_reset(now) == datetime(2025, 4, 1, tzinfo=UTC)


async def test_rate_limit_headers_and_refusal(make_service: Any) -> None:
    async with make_service(rate_limit_user="3/minute") as svc:
        acc = _accounting(svc)
        p = await _principal(svc)
        seen = [await acc.admit(p, 1) for _ in range(3)]
        assert [h["RateLimit-Remaining"] for h in seen] == ["2", "1", "0"]
        first = seen[0]
        assert first["RateLimit-Policy"] == '"user";q=3;w=60'
        assert first["RateLimit-Limit"] == "3"
        assert first["RateLimit"].startswith('"user";r=2;t=')
        assert 0 < int(first["RateLimit-Reset"]) <= 60
        with pytest.raises(RateLimited) as caught:
            await acc.admit(p, 1)
        assert caught.value.code == "rate_limited"
        assert caught.value.status == 429
        assert 1 <= int(caught.value.headers["Retry-After"]) <= 60
        assert caught.value.headers["RateLimit-Remaining"] == "0"
        other = await _principal(svc)  # budgets are per user
        assert (await acc.admit(other, 1))["RateLimit-Remaining"] == "2"


async def test_role_value_and_admin_unlimited(make_service: Any) -> None:
    async with make_service() as svc:
        acc = _accounting(svc)
        async with svc.ctx.db.session() as session:
            await session.execute(
                update(RoleRow).where(RoleRow.name == "user").values(rate_limit="2/minute")
            )
        acc.invalidate()
        p = await _principal(svc)
        assert (await acc.admit(p, 1))["RateLimit-Policy"] == '"user";q=2;w=60'
        admin = await _principal(svc, "admin")
        assert await acc.admit(admin, 10_000) == {}  # RATE_LIMIT_ADMIN and quota: none


async def test_daily_quota(make_service: Any) -> None:
    async with make_service(daily_quota_user=10) as svc:
        acc = _accounting(svc)
        p = await _principal(svc)
        await acc.admit(p, 6)
        await acc.record(p, "iris", 1, 6)
        with pytest.raises(QuotaExceeded) as caught:
            await acc.admit(p, 5)
        exc = caught.value
        assert exc.code == "quota_exceeded"
        assert exc.status == 429
        reset = quotas.next_reset(datetime.now(UTC))
        assert reset.strftime("%Y-%m-%dT00:00:00") in exc.detail
        assert int(exc.headers["Retry-After"]) <= 86401
        await acc.admit(p, 4)  # exactly up to the quota is fine
        # A per-user override wins over the role values.
        async with svc.ctx.db.session() as session:
            await session.execute(
                update(UserRow).where(UserRow.id == p.user_id).values(daily_quota=100)
            )
        acc.invalidate("user", str(p.user_id))
        await acc.admit(p, 50)


async def test_usage_counts_and_endpoints(svc: Service) -> None:
    acc = _accounting(svc)
    username, password = await svc.create_user("user")
    headers = bearer(await svc.token(username, password))
    me = (await svc.client.get("/api/v1/users/me", headers=headers)).json()
    p = Principal(
        user_id=uuid.UUID(me["id"]),
        username=username,
        kind="user",
        roles=frozenset({"user"}),
        permissions=frozenset(),
    )
    import asyncio

    await asyncio.gather(*(acc.record(p, "iris", 1, 3) for _ in range(5)))
    await acc.record(p, "diabetes", 2, 7)
    r = await svc.client.get("/api/v1/users/me/usage", headers=headers)
    assert r.status_code == 200
    body = r.json()
    assert body["today"]["predictions"] == 6
    assert body["today"]["rows"] == 22
    assert body["today"]["by_model"] == [
        {"model": "diabetes", "predictions": 1, "rows": 7},
        {"model": "iris", "predictions": 5, "rows": 15},
    ]
    assert body["this_month"]["rows"] == 22
    assert body["limits"]["rate_limit"] == "1200/minute"
    assert body["limits"]["daily_quota"] is None
    admin = await svc.admin_headers()
    r = await svc.client.get(f"/api/v1/admin/users/{me['id']}/usage", headers=admin)
    assert r.status_code == 200
    assert r.json()["today"] == body["today"]
    r = await svc.client.get(f"/api/v1/admin/users/{uuid.uuid4()}/usage", headers=admin)
    assert r.status_code == 404
    r = await svc.client.get(f"/api/v1/admin/users/{me['id']}/usage", headers=headers)
    assert r.status_code == 403
    assert (await svc.client.get("/api/v1/users/me/usage")).status_code == 401


async def test_register_is_limited_per_ip(make_service: Any) -> None:
    async with make_service(rate_limit_register="2/hour") as svc:
        await svc.register()
        await svc.register()
        r = await svc.client.post(
            "/api/v1/auth/register",
            json={"username": "third1", "email": "third1@example.com", "password": "x" * 20},
        )
        assert r.status_code == 429
        assert r.json()["code"] == "rate_limited"
        assert int(r.headers["Retry-After"]) > 0
        assert r.headers["RateLimit-Policy"] == '"register";q=2;w=3600'


async def test_revoke_is_limited_per_ip(svc: Service) -> None:
    statuses = [
        (await svc.client.post("/api/v1/auth/revoke", data={"token": "x"})).status_code
        for _ in range(61)
    ]
    assert statuses[:60] == [200] * 60
    assert statuses[60] == 429


async def test_rate_limits_fail_open(caplog: pytest.LogCaptureFixture) -> None:
    dead = RedisState("redis://127.0.0.1:9/0", timeout=0.2)
    limiter = RateLimiter(dead.limits_storage())
    assert await limiter.hit("user", "u1", "1/minute") is None
    assert "rate limits not enforced" in caplog.text
    await dead.close()


@pytest.mark.redis
@pytest.mark.skipif(not REDIS_URL, reason="MLGATE_TEST_REDIS_URL not set")
async def test_redis_window_is_shared_between_replicas() -> None:
    assert REDIS_URL is not None
    prefix = f"mlgate-test:{uuid.uuid4().hex}:"
    a, b = RedisState(REDIS_URL, prefix=prefix), RedisState(REDIS_URL, prefix=prefix)
    try:
        la, lb = RateLimiter(a.limits_storage()), RateLimiter(b.limits_storage())
        decisions = [await (la if i % 2 else lb).hit("user", "u1", "4/minute") for i in range(5)]
        assert [d.allowed for d in decisions if d] == [True, True, True, True, False]
        assert decisions[3] is not None
        assert decisions[3].remaining == 0
    finally:
        await a.client.delete(*[k async for k in a.client.scan_iter(prefix + "*")])
        await a.close()
        await b.close()


async def test_memory_state_is_a_state_backend() -> None:
    state = MemoryState(clock=lambda: 100.0)
    assert await state.hincr("k", "n", 2, 10) == 2
    state.clock = lambda: 111.0
    assert await state.hgetall("k") == {}


# -- over HTTP through the serving routes ----------------------------------------------


IRIS_ROW = [5.1, 3.5, 1.4, 0.2]


async def test_predict_carries_headers_and_refuses(make_service: Any) -> None:
    async with make_service(rate_limit_user="2/minute") as svc:
        headers = await svc.user_headers()
        url = "/api/v1/models/iris/predict"
        r = await svc.client.post(url, json={"inputs": [IRIS_ROW]}, headers=headers)
        assert r.status_code == 200
        assert r.headers["RateLimit-Policy"] == '"user";q=2;w=60'
        assert r.headers["RateLimit-Remaining"] == "1"
        r = await svc.client.post(
            "/v2/models/iris/infer",
            json={
                "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": IRIS_ROW}]
            },
            headers=headers,
        )
        assert r.status_code == 200
        assert r.headers["RateLimit-Remaining"] == "0"
        r = await svc.client.post(url, json={"inputs": [IRIS_ROW]}, headers=headers)
        assert r.status_code == 429
        assert r.json()["code"] == "rate_limited"
        assert "Retry-After" in r.headers


async def test_predict_quota_and_usage_equal_predictions(make_service: Any) -> None:
    async with make_service(daily_quota_user=5) as svc:
        headers = await svc.user_headers()
        url = "/api/v1/models/iris/predict"
        for rows in (2, 3):
            r = await svc.client.post(url, json={"inputs": [IRIS_ROW] * rows}, headers=headers)
            assert r.status_code == 200
        r = await svc.client.post(url, json={"inputs": [IRIS_ROW]}, headers=headers)
        assert r.status_code == 429
        assert r.json()["code"] == "quota_exceeded"
        assert "resets at" in r.json()["detail"]
        usage = (await svc.client.get("/api/v1/users/me/usage", headers=headers)).json()
        assert usage["today"]["by_model"] == [{"model": "iris", "predictions": 2, "rows": 5}]
