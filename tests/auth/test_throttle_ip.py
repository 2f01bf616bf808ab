"""A locked-out IP is refused before any database work or hashing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ADMIN_PASSWORD, ADMIN_USERNAME

pytestmark = pytest.mark.asyncio


async def test_locked_ip_is_refused_before_the_user_lookup(
    make_service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides = {
        "login_max_failures_per_ip": 3,
        "login_max_failures": 100,
        "login_max_failures_per_account": 100,
    }
    async with make_service(**overrides) as svc:
        for i in range(3):
            r = await svc.client.post(
                "/api/v1/auth/token",
                data={"grant_type": "password", "username": f"nobody{i}", "password": "x" * 12},
            )
            assert r.status_code == 400
        from mlgate.users import repository as users_repo

        async def no_lookup(*_: Any, **__: Any) -> None:
            raise AssertionError("a locked IP must not reach the database")

        monkeypatch.setattr(users_repo, "find_by_login", no_lookup)
        refused = await svc.client.post(
            "/api/v1/auth/token",
            data={"grant_type": "password", "username": ADMIN_USERNAME, "password": ADMIN_PASSWORD},
        )
        assert refused.status_code == 429
        assert refused.json()["error"] == "temporarily_unavailable"
        assert int(refused.headers["Retry-After"]) >= 1
