"""Faults with real processes: PostgreSQL restarted, mlgate killed or stopped, Redis gone."""

from __future__ import annotations

import math
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import USER_PASSWORD
from tests.process.serve import stop
from tests.scaleout.conftest import needs_services
from tests.scaleout.harness import (
    PrivateCluster,
    PrivateRedis,
    Server,
    bearer,
    launch,
    login,
    pg_query,
    pg_tools_reason,
    register,
    replicas,
    scaleout_env,
    wait_for_status,
    wait_ready,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis, needs_services]
ME = "/api/v1/users/me"


@dataclass
class Outcome:
    at: float
    kind: str
    status: int  # 0: no HTTP answer
    body: str = ""


@dataclass
class Load:
    """Background request loops; every answer is recorded with its time."""

    outcomes: list[Outcome] = field(default_factory=list)
    stop_flag: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, status: int, body: str = "") -> None:
        with self.lock:
            self.outcomes.append(Outcome(time.monotonic(), kind, status, body))

    def stop(self) -> None:
        self.stop_flag.set()
        for thread in self.threads:
            thread.join(timeout=30)


@pytest.fixture
def private_cluster() -> Iterator[PrivateCluster]:
    reason = pg_tools_reason()
    if reason:
        pytest.skip(reason)
    cluster = PrivateCluster()
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


def test_postgres_restart_under_load(
    tmp_path: Path, private_cluster: PrivateCluster, redis_db: str
) -> None:
    env = scaleout_env(tmp_path / "a", private_cluster.url, redis_db)
    with replicas([env]) as (server,):
        with server.client() as client:
            register(client, "loaded")
            token = login(client, "loaded")
        load = _start_outage_load(server, token)
        try:
            time.sleep(1.0)
            private_cluster.stop("fast")
            down_at = time.monotonic()
            time.sleep(2.5)
            private_cluster.start()
            up_at = time.monotonic()
            time.sleep(6.0)
        finally:
            load.stop()
    outcomes = load.outcomes
    assert [o for o in outcomes if o.status == 0] == [], "a request got no HTTP answer"
    assert [o for o in outcomes if o.status >= 500 and o.status != 503] == []
    during = [o for o in outcomes if down_at + 1.2 < o.at < up_at]
    assert during, "no request completed during the outage"
    unavailable = [o for o in during if o.status == 503]
    assert unavailable, f"no 503 during the outage: {[o.status for o in during][:20]}"
    for o in [o for o in outcomes if o.status == 503]:
        assert '"unavailable"' in o.body or '"temporarily_unavailable"' in o.body, o.body
    for kind in ("me", "register"):
        late = [o for o in outcomes if o.kind == kind and o.at > up_at + 5.0]
        assert late, f"no {kind} request after recovery"
        assert {o.status for o in late} <= {200, 201}, [o.status for o in late]


def _start_outage_load(server: Server, token: str) -> Load:
    load = Load()

    def me_loop() -> None:
        with server.client(timeout=10.0) as client:
            while not load.stop_flag.is_set():
                try:
                    r = client.get(ME, headers=bearer(token))
                    load.record("me", r.status_code, r.text)
                except httpx.HTTPError as exc:
                    load.record("me", 0, repr(exc))
                time.sleep(0.05)

    def register_loop() -> None:
        with server.client(timeout=10.0) as client:
            while not load.stop_flag.is_set():
                name = f"u{uuid.uuid4().hex[:12]}"
                try:
                    r = client.post(
                        "/api/v1/auth/register",
                        json={"username": name, "email": f"{name}@example.com",
                              "password": USER_PASSWORD},
                    )  # fmt: skip
                    load.record("register", r.status_code, r.text)
                except httpx.HTTPError as exc:
                    load.record("register", 0, repr(exc))
                time.sleep(0.1)

    for target in (me_loop, register_loop):
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        load.threads.append(thread)
    return load


def test_kill_9_during_registration_load(tmp_path: Path, pg_db: str, redis_db: str) -> None:
    env = scaleout_env(tmp_path / "a", pg_db, redis_db)
    server = launch(env)
    answered: list[str] = []
    lock = threading.Lock()
    killed = threading.Event()
    try:
        wait_ready(server)

        def loop() -> None:
            with server.client(timeout=10.0) as client:
                while not killed.is_set():
                    name = f"k{uuid.uuid4().hex[:12]}"
                    try:
                        r = client.post(
                            "/api/v1/auth/register",
                            json={"username": name, "email": f"{name}@example.com",
                                  "password": USER_PASSWORD},
                        )  # fmt: skip
                    except httpx.HTTPError:
                        return
                    if r.status_code == 201:
                        with lock:
                            answered.append(name)

        threads = [threading.Thread(target=loop, daemon=True) for _ in range(8)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=10)
        killed.set()
        for thread in threads:
            thread.join(timeout=15)
    finally:
        killed.set()
        stop(server.proc)
    assert len(answered) >= 5, f"too little load before the kill: {len(answered)}"
    users = {r["username"] for r in pg_query(pg_db, "SELECT username FROM users")}
    missing = [name for name in answered if name not in users]
    assert missing == [], f"{len(missing)} registrations answered 201 are not in the database"
    events = {
        r["actor"]
        for r in pg_query(pg_db, "SELECT actor FROM audit_events WHERE action='auth.register'")
    }
    assert [name for name in answered if name not in events] == []


def test_sigterm_lets_in_flight_requests_finish(tmp_path: Path, pg_db: str, redis_db: str) -> None:
    # Costly hashing keeps logins in flight long enough to stop the server under them.
    env = scaleout_env(
        tmp_path / "a", pg_db, redis_db,
        MLGATE_ARGON2_MEMORY_COST="65536", MLGATE_ARGON2_TIME_COST="4",
    )  # fmt: skip
    server = launch(env)
    results: list[int] = []
    answered_at: list[float] = []
    lock = threading.Lock()
    term_at = math.inf
    try:
        wait_ready(server)
        with server.client() as client:
            register(client, "graceful")
            started = time.monotonic()
            login(client, "graceful")
            one_login = time.monotonic() - started

        count = 10
        # Connections are opened first (client setup is slow): at SIGTERM every login
        # has been sent on an open connection and most are waiting for a hash.
        clients = [server.client(timeout=60.0) for _ in range(count)]
        for client in clients:
            assert client.get("/healthz").status_code == 200
        barrier = threading.Barrier(count + 1)

        def one(client: httpx.Client) -> None:
            barrier.wait()
            try:
                r = client.post(
                    "/api/v1/auth/token",
                    data={"grant_type": "password", "username": "graceful",
                          "password": USER_PASSWORD},
                )  # fmt: skip
                status = r.status_code
            except httpx.HTTPError:
                status = 0
            finally:
                client.close()
            with lock:
                results.append(status)
                answered_at.append(time.monotonic())

        threads = [threading.Thread(target=one, args=(c,), daemon=True) for c in clients]
        for thread in threads:
            thread.start()
        barrier.wait()
        time.sleep(min(0.3, one_login / 2))
        server.proc.send_signal(signal.SIGTERM)
        term_at = time.monotonic()
        for thread in threads:
            thread.join(timeout=60)
        # uvicorn re-raises the signal once its graceful shutdown is done.
        assert server.proc.wait(timeout=30) in (0, -signal.SIGTERM), server.log_tail()
    finally:
        stop(server.proc)
    assert sorted(results) == [200] * count, results
    assert max(answered_at) > term_at, "no request was still in flight at SIGTERM"
    successes = pg_query(
        pg_db,
        "SELECT count(*) AS n FROM audit_events WHERE action = 'auth.login.success' "
        "AND actor = 'graceful'",
    )
    assert successes[0]["n"] == count + 1  # the timing login too: all flushed before exit


def test_redis_stopped_revocation_keeps_working(tmp_path: Path, pg_db: str) -> None:
    redis = PrivateRedis()
    redis.start()
    try:
        envs = [scaleout_env(tmp_path / n, pg_db, redis.url) for n in ("a", "b")]
        with replicas(envs) as (a, b):
            with a.client() as ca, b.client() as cb:
                register(ca, "dora")
                tokens = [login(ca, "dora") for _ in range(3)]
                redis.stop()
                time.sleep(0.5)
                # Revocation through the database alone: logout on A, refused on B.
                assert ca.post("/api/v1/auth/logout", headers=bearer(tokens[0])).status_code == 204
                wait_for_status(cb, ME, bearer(tokens[0]), 401, within=1.0)
                # No valid credential refused, no error while Redis is gone (fail open).
                for client in (ca, cb):
                    for _ in range(10):
                        assert client.get(ME, headers=bearer(tokens[1])).status_code == 200
                    again = login(client, "dora")
                    assert client.get(ME, headers=bearer(again)).status_code == 200
                # Redis returns: revocation still spreads, readiness reports it.
                redis.start()
                assert cb.post("/api/v1/auth/logout", headers=bearer(tokens[1])).status_code == 204
                wait_for_status(ca, ME, bearer(tokens[1]), 401, within=1.0)
                assert ca.get(ME, headers=bearer(tokens[2])).status_code == 200
                _wait_redis_ready(ca)
                assert ca.get(ME, headers=bearer(tokens[0])).status_code == 401
    finally:
        redis.stop()


def _wait_redis_ready(client: httpx.Client) -> None:
    deadline = time.monotonic() + 10
    while True:
        body = client.get("/readyz").json()
        state = body.get("checks", {}).get("redis")
        if state is None or state == "ok":
            return
        assert time.monotonic() < deadline, f"redis not ready again: {body}"
        time.sleep(0.2)
