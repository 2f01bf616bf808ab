"""PasswordService: Argon2id hashing, legacy bcrypt upgrade, timing, and the worker pool."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import bcrypt
import pytest
from pwdlib.hashers.argon2 import Argon2Hasher

from mlgate.auth import password_policy
from mlgate.auth.passwords import PasswordService, normalize_password
from mlgate.errors import WeakPassword
from mlgate.settings import Settings

PASSWORD = "lantern-orbit-quince-97"
CHEAP = {"argon2_memory_cost": 1024, "argon2_time_cost": 1}


@pytest.fixture
def service() -> Iterator[PasswordService]:
    svc = PasswordService(Settings(**CHEAP), max_concurrency=2)
    yield svc
    svc.close()


async def test_hash_round_trip(service: PasswordService) -> None:
    stored = await service.hash(PASSWORD)
    assert stored.startswith("$argon2id$v=19$m=1024,t=1,p=1$")
    assert PASSWORD not in stored
    assert await service.verify_and_update(PASSWORD, stored) == (True, None)


async def test_hashes_are_salted(service: PasswordService) -> None:
    assert await service.hash(PASSWORD) != await service.hash(PASSWORD)


async def test_wrong_password(service: PasswordService) -> None:
    stored = await service.hash(PASSWORD)
    assert await service.verify_and_update(PASSWORD + "x", stored) == (False, None)


async def test_default_parameters_in_stored_hash() -> None:
    svc = PasswordService(Settings(), max_concurrency=1)
    try:
        stored = await svc.hash(PASSWORD)
        assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
        assert await svc.verify_and_update(PASSWORD, stored) == (True, None)
    finally:
        svc.close()


async def test_other_argon2_parameters_are_rehashed(service: PasswordService) -> None:
    stronger = PasswordService(
        Settings(argon2_memory_cost=2048, argon2_time_cost=1), max_concurrency=1
    )
    try:
        old = await service.hash(PASSWORD)
        ok, new = await stronger.verify_and_update(PASSWORD, old)
        assert ok
        assert new is not None
        assert new.startswith("$argon2id$v=19$m=2048,t=1,p=1$")
        assert await stronger.verify_and_update(PASSWORD, new) == (True, None)
        assert await stronger.verify_and_update("wrong", old) == (False, None)
    finally:
        stronger.close()


async def test_unknown_user_returns_false(service: PasswordService) -> None:
    assert await service.verify_and_update(PASSWORD, None) == (False, None)


async def test_unknown_user_takes_as_long_as_a_real_check() -> None:
    svc = PasswordService(Settings(argon2_memory_cost=8192, argon2_time_cost=2), max_concurrency=1)
    try:
        stored = await svc.hash(PASSWORD)
        await svc.verify_and_update(PASSWORD, None)  # warm up

        async def median(stored_hash: str | None) -> float:
            samples = []
            for _ in range(7):
                start = time.perf_counter()
                await svc.verify_and_update("not-the-password", stored_hash)
                samples.append(time.perf_counter() - start)
            return statistics.median(samples)

        real = await median(stored)
        unknown = await median(None)
        assert real / 3 < unknown < real * 3, (real, unknown)
    finally:
        svc.close()


async def test_legacy_bcrypt_verified_and_upgraded(service: PasswordService) -> None:
    legacy = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    assert legacy.startswith("$2b$")
    ok, upgraded = await service.verify_and_update(PASSWORD, legacy)
    assert ok
    assert upgraded is not None
    assert upgraded.startswith("$argon2id$v=19$m=1024,t=1,p=1$")
    assert await service.verify_and_update(PASSWORD, upgraded) == (True, None)
    assert await service.verify_and_update("wrong", legacy) == (False, None)


@pytest.mark.parametrize("prefix", ["$2a$", "$2y$"])
async def test_legacy_bcrypt_variants(service: PasswordService, prefix: str) -> None:
    legacy = prefix + bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()[4:]
    ok, upgraded = await service.verify_and_update(PASSWORD, legacy)
    assert ok
    assert upgraded is not None
    assert upgraded.startswith("$argon2id$")


@pytest.mark.parametrize("password", ["a" * 72 + "-tail", "b" + "é" * 40])
async def test_legacy_bcrypt_uses_first_72_bytes(service: PasswordService, password: str) -> None:
    secret = password.encode()
    assert len(secret) > 72
    legacy = bcrypt.hashpw(secret[:72], bcrypt.gensalt(rounds=4)).decode()
    ok, upgraded = await service.verify_and_update(password, legacy)
    assert ok
    assert upgraded is not None
    # The upgrade hashes the whole password, not just what bcrypt saw.
    assert await service.verify_and_update(password, upgraded) == (True, None)
    truncated = secret[:72].decode(errors="ignore")
    assert await service.verify_and_update(truncated, upgraded) == (False, None)


@pytest.mark.parametrize(
    ("typed", "canonical"),
    [
        ("ｌａｎｔｅｒｎ－ｏｒｂｉｔ－９７", "lantern-orbit-97"),  # full-width
        ("ﬁnest-orbit-quince", "finest-orbit-quince"),  # ligature
        ("cafe\u0301-orbit-quince", "café-orbit-quince"),  # combining accent
    ],
)
async def test_nfkc_normalization(service: PasswordService, typed: str, canonical: str) -> None:
    assert normalize_password(typed) == canonical
    assert await service.verify_and_update(typed, await service.hash(canonical)) == (True, None)
    assert await service.verify_and_update(canonical, await service.hash(typed)) == (True, None)


async def test_legacy_bcrypt_normalizes_before_truncating(service: PasswordService) -> None:
    legacy = bcrypt.hashpw(b"finest-orbit-quince", bcrypt.gensalt(rounds=4)).decode()
    ok, _ = await service.verify_and_update("ﬁnest-orbit-quince", legacy)
    assert ok


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "not-a-hash",
        "!",
        "$argon2id$v=19$m=1024,t=1,p=1$garbage",
        "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$!!!!",
        "$2b$04$tooshort",
        "$2b$04$" + "*" * 53,
        "$2b$99$" + "a" * 53,
        "$1$md5crypt$abcdefghijklmnopqrstuv",
    ],
)
async def test_malformed_hash_is_a_failed_check(service: PasswordService, stored: str) -> None:
    assert await service.verify_and_update(PASSWORD, stored) == (False, None)


async def test_truncated_real_hash_is_a_failed_check(service: PasswordService) -> None:
    stored = await service.hash(PASSWORD)
    assert await service.verify_and_update(PASSWORD, stored[:-5]) == (False, None)


async def test_invalid_code_points_never_raise(service: PasswordService) -> None:
    stored = await service.hash(PASSWORD)
    assert await service.verify_and_update("\ud800", stored) == (False, None)
    assert await service.verify_and_update("\ud800", None) == (False, None)


async def test_check_policy_runs_the_policy(service: PasswordService) -> None:
    await service.check_policy(PASSWORD, username="alice", email="alice@example.com")
    with pytest.raises(WeakPassword, match="too short"):
        await service.check_policy("short", username="alice")
    with pytest.raises(WeakPassword, match="username"):
        await service.check_policy("lantern-alice-orbit-97", username="Alice")


class Probe:
    """Records how many instrumented calls run at once, and on which threads."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.active = 0
        self.max_active = 0
        self.calls = 0
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.active += 1
                self.calls += 1
                self.max_active = max(self.max_active, self.active)
                self.threads.add(threading.current_thread().name)
            try:
                time.sleep(self.delay)
                return fn(*args, **kwargs)
            finally:
                with self._lock:
                    self.active -= 1

        return wrapper


def instrument(monkeypatch: pytest.MonkeyPatch, delay: float) -> Probe:
    probe = Probe(delay)
    monkeypatch.setattr(Argon2Hasher, "hash", probe.wrap(Argon2Hasher.hash))
    monkeypatch.setattr(Argon2Hasher, "verify", probe.wrap(Argon2Hasher.verify))
    monkeypatch.setattr(
        password_policy, "check_password", probe.wrap(password_policy.check_password)
    )
    return probe


async def run_mixed_load(svc: PasswordService) -> None:
    stored = await svc.hash(PASSWORD)
    await asyncio.gather(
        svc.hash(PASSWORD),
        svc.hash(PASSWORD),
        svc.verify_and_update(PASSWORD, stored),
        svc.verify_and_update("wrong", stored),
        svc.verify_and_update(PASSWORD, None),
        svc.check_policy(PASSWORD, username="alice"),
    )


async def test_concurrency_bound_and_loop_stays_responsive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    probe = instrument(monkeypatch, delay=0.1)
    svc = PasswordService(Settings(**CHEAP), max_concurrency=1)
    stop = asyncio.Event()
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick_task = asyncio.create_task(ticker())
    try:
        start = time.perf_counter()
        await run_mixed_load(svc)
        elapsed = time.perf_counter() - start
    finally:
        stop.set()
        await tick_task
        svc.close()

    assert probe.calls >= 8  # dummy hash, 3 hashes, 3 verifies, 1 policy check
    assert probe.max_active == 1
    assert elapsed >= 0.1 * 7  # serialized
    assert all(name.startswith("mlgate-passwords") for name in probe.threads)
    assert threading.current_thread().name not in probe.threads
    # Each call blocks a worker for >= 100 ms; the loop never stalls that long.
    assert len(gaps) >= 40
    assert max(gaps) < 0.09, max(gaps)


async def test_concurrency_limit_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    probe = instrument(monkeypatch, delay=0.05)
    svc = PasswordService(Settings(**CHEAP), max_concurrency=2)
    try:
        assert svc.max_concurrency == 2
        await run_mixed_load(svc)
    finally:
        svc.close()
    assert probe.max_active == 2


async def test_default_concurrency_is_cpu_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 3)
    svc = PasswordService(Settings(**CHEAP))
    try:
        assert svc.max_concurrency == 3
    finally:
        svc.close()


async def test_closed_service_refuses_work() -> None:
    svc = PasswordService(Settings(**CHEAP), max_concurrency=1)
    svc.close()
    with pytest.raises(RuntimeError):
        await svc.hash(PASSWORD)
