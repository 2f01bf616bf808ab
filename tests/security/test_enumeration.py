"""Account enumeration through the token endpoint (ASVS V6.3, OWASP API2): an unknown
account and a wrong password give the same answer, in about the same time, with the
Argon2 parameters mlgate ships (the cost is the thing being compared)."""

from __future__ import annotations

import statistics
import time

import httpx
import pytest

from tests.conftest import USER_PASSWORD, ServiceFactory

pytestmark = pytest.mark.asyncio
TRIES = 30
TOKEN = "/api/v1/auth/token"
REALISTIC = {
    "argon2_memory_cost": 19456,
    "argon2_time_cost": 2,
    # Lockout must not answer for us: the comparison is about the credential check.
    "login_max_failures": 10_000,
    "login_max_failures_per_account": 10_000,
    "login_max_failures_per_ip": 10_000,
}


def _shape(response: httpx.Response) -> tuple[int, object, str | None, str | None]:
    return (
        response.status_code,
        response.json(),
        response.headers.get("cache-control"),
        response.headers.get("content-type"),
    )


async def _login(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post(
        TOKEN, data={"grant_type": "password", "username": username, "password": password}
    )


async def test_unknown_user_and_wrong_password_look_the_same(
    make_service: ServiceFactory,
) -> None:
    async with make_service(**REALISTIC) as svc:
        await svc.register("erin")
        client = svc.client
        # Positive control: the account exists and its password works.
        assert (await _login(client, "erin", USER_PASSWORD)).status_code == 200

        pairs = [
            ("erin", "ghost-account-that-is-not-there"),
            ("erin@example.com", "ghost@example.com"),
        ]
        for known, unknown in pairs:
            wrong = await _login(client, known, "not the password at all, clearly")
            missing = await _login(client, unknown, "not the password at all, clearly")
            assert wrong.status_code == 400, wrong.text
            assert wrong.json()["error"] == "invalid_grant"
            assert _shape(wrong) == _shape(missing)
            assert "erin" not in wrong.text

        # Warm both paths (hash pool, dummy hash, query plans) before timing.
        for _ in range(3):
            await _login(client, "erin", "warm-up wrong password")
            await _login(client, "nobody-here", "warm-up wrong password")

        wrong_times: list[float] = []
        missing_times: list[float] = []
        for i in range(TRIES):
            # Interleaved, so drift in machine load falls on both sides alike.
            for name, sink in (("erin", wrong_times), (f"ghost{i:03d}", missing_times)):
                started = time.perf_counter()
                response = await _login(client, name, f"wrong password number {i}")
                sink.append(time.perf_counter() - started)
                assert response.status_code == 400, response.text

        wrong_median = statistics.median(wrong_times)
        missing_median = statistics.median(missing_times)
        ratio = max(wrong_median, missing_median) / min(wrong_median, missing_median)
        assert ratio < 1.25, (
            f"median wrong-password {wrong_median * 1000:.1f} ms vs unknown-user "
            f"{missing_median * 1000:.1f} ms differ by {100 * (ratio - 1):.0f}%"
        )
        # The hash really ran: realistic Argon2 is not free.
        assert min(wrong_median, missing_median) > 0.002
