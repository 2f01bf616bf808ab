"""Login throttling: per (account, IP), per account, per IP; exponential lockout capped
at LOGIN_LOCKOUT_SECONDS; no hash while locked; success resets; admin unlock."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mlgate.audit.events import Action
from mlgate.auth.throttle import LoginThrottle, account_key
from mlgate.errors import OAuthError
from mlgate.state import MemoryState, RedisState, StateBackend
from tests.audit.util import events
from tests.conftest import Service, base_settings

REDIS_URL = os.environ.get("MLGATE_TEST_REDIS_URL")


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def settings(**overrides: Any) -> Any:
    values = {
        "login_max_failures": 3,
        "login_max_failures_per_account": 6,
        "login_max_failures_per_ip": 10,
        "login_lockout_seconds": 100,
    }
    values.update(overrides)
    return base_settings(Path("/tmp/unused"), None, **values)


def _state_params() -> list[Any]:
    redis_marks = [pytest.mark.redis]
    if not REDIS_URL:
        redis_marks.append(pytest.mark.skip(reason="MLGATE_TEST_REDIS_URL not set"))
    return ["memory", pytest.param("redis", marks=redis_marks)]


@pytest.fixture(params=_state_params())
async def state(request: pytest.FixtureRequest) -> AsyncIterator[StateBackend]:
    if request.param == "memory":
        yield MemoryState()
        return
    assert REDIS_URL is not None
    backend = RedisState(REDIS_URL, prefix=f"mlgate-test:{uuid.uuid4().hex}:")
    yield backend
    await backend.client.delete(*[k async for k in backend.client.scan_iter(backend.prefix + "*")])
    await backend.close()


async def _locked(throttle: LoginThrottle, account: str, ip: str) -> int | None:
    refusal: OAuthError | None = None
    try:
        await throttle.check(account, ip)
    except OAuthError as exc:
        refusal = exc
    if refusal is None:
        return None
    assert refusal.status == 429
    assert refusal.error == "temporarily_unavailable"
    return int(refusal.headers["Retry-After"])


async def test_pair_lockout_grows_exponentially_and_is_capped(state: StateBackend) -> None:
    clock = FakeClock()
    t = LoginThrottle(state, settings(), clock=clock, base_delay=10)
    acct = account_key("alice", None)
    for _ in range(2):
        await t.failed(acct, "10.0.0.1")
        assert await _locked(t, acct, "10.0.0.1") is None
    await t.failed(acct, "10.0.0.1")  # the third: at the limit
    assert await _locked(t, acct, "10.0.0.1") == 10
    assert await _locked(t, acct, "10.0.0.2") is None  # another IP is not locked
    clock.advance(9.5)
    assert await _locked(t, acct, "10.0.0.1") == 1
    for expected in (20, 40, 80, 100, 100):
        clock.advance(1000)
        assert await _locked(t, acct, "10.0.0.1") is None
        await t.failed(acct, "10.0.0.1")
        assert await _locked(t, acct, "10.0.0.1") == expected
        clock.advance(expected - 1)
        assert await _locked(t, acct, "10.0.0.1") == 1


async def test_account_limit_spans_ips_and_success_resets(state: StateBackend) -> None:
    clock = FakeClock()
    t = LoginThrottle(state, settings(), clock=clock, base_delay=10)
    acct = account_key("", uuid.uuid4())
    for i in range(6):
        await t.failed(acct, f"10.0.1.{i}")
    assert await _locked(t, acct, "192.0.2.99") == 10  # any address
    clock.advance(11)
    assert await _locked(t, acct, "192.0.2.99") is None
    await t.succeeded(acct)
    for i in range(5):
        await t.failed(acct, f"10.0.2.{i}")
    assert await _locked(t, acct, "192.0.2.99") is None  # counting started again


async def test_ip_limit_spans_accounts(state: StateBackend) -> None:
    clock = FakeClock()
    t = LoginThrottle(state, settings(), clock=clock, base_delay=10)
    for i in range(10):
        await t.failed(account_key(f"victim{i}", None), "198.51.100.7")
    assert await _locked(t, account_key("someone-else", None), "198.51.100.7") == 10
    assert await _locked(t, account_key("someone-else", None), "198.51.100.8") is None


async def test_unknown_and_known_names_share_nothing_but_case() -> None:
    assert account_key("Alice", None) == account_key(" alice ", None)
    uid = uuid.uuid4()
    assert account_key("alice", uid) == account_key("alice@example.com", uid)


async def test_state_down_fails_open(caplog: pytest.LogCaptureFixture) -> None:
    dead = RedisState("redis://127.0.0.1:9/0", timeout=0.2)
    t = LoginThrottle(dead, settings())
    acct = account_key("bob", None)
    for _ in range(5):
        await t.failed(acct, "10.0.0.1")
    assert await _locked(t, acct, "10.0.0.1") is None
    assert "state backend unavailable" in caplog.text
    await dead.close()


async def _attempt(svc: Service, username: str, password: str) -> Any:
    return await svc.client.post(
        "/api/v1/auth/token",
        data={"grant_type": "password", "username": username, "password": password},
    )


async def test_http_lockout_refuses_right_password_without_hashing(
    make_service: Any,
) -> None:
    async with make_service(login_max_failures=3, login_lockout_seconds=60) as svc:
        clock = FakeClock()
        throttle = svc.ctx.auth.throttle
        assert throttle is not None
        throttle.clock = clock
        username, password = await svc.create_user("user")
        for _ in range(3):
            assert (await _attempt(svc, username, "wrong password again")).status_code == 400

        hashes = 0
        original = svc.ctx.passwords.verify_and_update

        async def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal hashes
            hashes += 1
            return await original(*args, **kwargs)

        svc.ctx.passwords.verify_and_update = counting  # type: ignore[method-assign]
        for _ in range(3):
            r = await _attempt(svc, username, password)
            assert r.status_code == 429
            assert r.json()["error"] == "temporarily_unavailable"
            assert r.headers["Retry-After"] == "30"
            assert r.headers["Cache-Control"] == "no-store"
        # By email too: one account, one budget.
        r = await _attempt(svc, f"{username}@example.com", password)
        assert r.status_code == 429
        assert hashes == 0
        throttled = [
            e
            for e in await events(svc, Action.LOGIN_FAILURE)
            if e.details.get("reason") == "throttled"
        ]
        assert len(throttled) == 1
        assert throttled[0].details["count"] == 4
        assert throttled[0].status == 429

        clock.advance(31)
        assert (await _attempt(svc, username, password)).status_code == 200
        assert hashes == 1
        # The success reset the counters: three more failures before the next lock.
        for _ in range(2):
            assert (await _attempt(svc, username, "wrong password again")).status_code == 400
        assert (await _attempt(svc, username, password)).status_code == 200


async def test_admin_unlock(make_service: Any) -> None:
    async with make_service(login_max_failures=2) as svc:
        username, password = await svc.create_user("user")
        for _ in range(2):
            await _attempt(svc, username, "wrong password again")
        assert (await _attempt(svc, username, password)).status_code == 429
        admin = await svc.admin_headers()
        user_headers = await svc.user_headers()
        async with svc.ctx.db.session() as session:
            from mlgate.users import repository as users_repo

            user = await users_repo.find_by_login(session, username)
            assert user is not None
            user_id = user.id
        url = f"/api/v1/admin/users/{user_id}/unlock"
        assert (await svc.client.post(url, headers=user_headers)).status_code == 403
        r = await svc.client.post(url, headers=admin)
        assert r.status_code == 204
        assert (await _attempt(svc, username, password)).status_code == 200
        found = await events(svc, Action.ADMIN_USER_UNLOCK)
        assert len(found) == 1
        assert found[0].resource == f"user:{user_id}"
        assert found[0].actor == "admin"
        r = await svc.client.post(f"/api/v1/admin/users/{uuid.uuid4()}/unlock", headers=admin)
        assert r.status_code == 404


async def test_unlock_username_for_the_cli(make_service: Any) -> None:
    from mlgate.auth.throttle import unlock_username

    async with make_service(login_max_failures=1) as svc:
        username, password = await svc.create_user("user")
        await _attempt(svc, username, "wrong password again")
        assert (await _attempt(svc, username, password)).status_code == 429
        await unlock_username(svc.ctx, username)
        assert (await _attempt(svc, username, password)).status_code == 200
        assert (await events(svc, Action.ADMIN_USER_UNLOCK))[0].actor == "cli"
