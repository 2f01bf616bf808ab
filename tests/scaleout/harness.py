"""Real `mlgate serve` processes, private PostgreSQL clusters and Redis servers.

Everything binds 127.0.0.1 on free ports and is always stopped (callers use these as
context managers from fixtures), with SIGKILL when a polite stop times out.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ADMIN_PASSWORD, ADMIN_USERNAME, PG_URL, REDIS_URL, USER_PASSWORD
from tests.process.serve import Server, free_port, launch, serve_env, stop, wait_ready


def services_reason() -> str | None:
    """Why the scale-out tests cannot run here, or None."""
    if not PG_URL:
        return "MLGATE_TEST_DATABASE_URL not set (scale-out tests need PostgreSQL)"
    if not REDIS_URL:
        return "MLGATE_TEST_REDIS_URL not set (scale-out tests need Redis)"
    return None


def admin_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


def pg_query(url: str, sql: str, *args: Any) -> list[Any]:
    """Run one query with asyncpg (outside any event loop of the test)."""
    import asyncpg

    async def go() -> list[Any]:
        conn = await asyncpg.connect(admin_dsn(url))
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(go())


def pg_execute(url: str, sql: str) -> None:
    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(admin_dsn(url))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A new, empty database on the test server; dropped afterwards."""
    assert PG_URL is not None
    name = f"mlgate_so_{uuid.uuid4().hex[:10]}"
    pg_execute(PG_URL, f'CREATE DATABASE "{name}"')
    try:
        yield PG_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        pg_execute(PG_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def redis_url_for_test() -> str:
    """The test Redis with a logical database of its own (1-15, picked at random), so
    rate-limit keys of one test never meet another's."""
    assert REDIS_URL is not None
    base = REDIS_URL.rsplit("/", 1)[0] if REDIS_URL.count("/") > 2 else REDIS_URL
    return f"{base}/{1 + uuid.uuid4().int % 15}"


def scaleout_env(
    data_dir: Path, database_url: str, redis_url: str | None, **extra: str
) -> dict[str, str]:
    env = serve_env(
        data_dir,
        MLGATE_DATABASE_URL=database_url,
        MLGATE_RATE_LIMIT_REGISTER="none",
        MLGATE_RATE_LIMIT_GUEST="none",
        MLGATE_RATE_LIMIT_USER="none",
        MLGATE_LOG_LEVEL="WARNING",
    )
    if redis_url:
        env["MLGATE_REDIS_URL"] = redis_url
    env.update(extra)
    return env


@contextmanager
def replicas(envs: Sequence[dict[str, str]], *, workers: int = 1) -> Iterator[list[Server]]:
    """Start one process per env at the same moment; yield once all are ready."""
    servers: list[Server] = []
    try:
        for env in envs:
            servers.append(launch(env, workers=workers))
        for server in servers:
            wait_ready(server)
        yield servers
    finally:
        for server in servers:
            stop(server.proc)


# ---- HTTP helpers -------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def register(client: httpx.Client, username: str, password: str = USER_PASSWORD) -> str:
    response = client.post(
        "/api/v1/auth/register",
        json={"username": username, "email": f"{username}@example.com", "password": password},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def login(client: httpx.Client, username: str, password: str = USER_PASSWORD) -> str:
    response = client.post(
        "/api/v1/auth/token",
        data={"grant_type": "password", "username": username, "password": password},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def admin_token(client: httpx.Client) -> str:
    return login(client, ADMIN_USERNAME, ADMIN_PASSWORD)


def has_route(client: httpx.Client, path: str, method: str) -> bool:
    spec = client.get("/openapi.json").json()
    return method.lower() in spec.get("paths", {}).get(path, {})


def wait_for_status(
    client: httpx.Client, path: str, headers: dict[str, str], status: int, within: float
) -> float:
    """Poll until `path` answers `status`; the seconds it took (fails after `within`)."""
    started = time.monotonic()
    while True:
        response = client.get(path, headers=headers)
        elapsed = time.monotonic() - started
        if response.status_code == status:
            return elapsed
        assert elapsed < within, f"still {response.status_code} after {elapsed:.2f}s"
        time.sleep(0.02)


# ---- private PostgreSQL cluster and Redis server --------------------------------------


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    exe = shutil.which(name)
    if exe is None:
        raise FileNotFoundError(name)
    return exe


def pg_tools_reason() -> str | None:
    try:
        _pg_bin("initdb")
        _pg_bin("pg_ctl")
    except FileNotFoundError:
        return "initdb/pg_ctl not found (needs PostgreSQL server binaries)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "runuser not found (needed to run PostgreSQL as the postgres user)"
    return None


class PrivateCluster:
    """A throwaway PostgreSQL cluster on a free port, run as the `postgres` OS user."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mlgate-pg-", dir="/tmp"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.port = free_port()
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, *args: str, timeout: float = 60.0) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(
            [*prefix, *args], check=True, timeout=timeout,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def init(self) -> None:
        self._run(
            _pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.root} -c fsync=off -c max_connections=100"
        )
        self._run(
            _pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "pg.log"),
            "-o", options, "-w", "-t", "30", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def destroy(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop("immediate")
        except (subprocess.SubprocessError, OSError):
            pass
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis:
    """A throwaway `redis-server` on a free port: never the shared one."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = shutil.which("redis-server")
        assert exe is not None
        self.proc = subprocess.Popen(
            [
                exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        import socket

        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise TimeoutError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


__all__ = [
    "PrivateCluster",
    "PrivateRedis",
    "Server",
    "admin_token",
    "bearer",
    "fresh_pg_database",
    "has_route",
    "launch",
    "login",
    "pg_query",
    "register",
    "replicas",
    "scaleout_env",
    "wait_for_status",
    "wait_ready",
]
