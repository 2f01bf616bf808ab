"""Requests per second with `mlgate serve --workers 2` against `--workers 1`.

Needs PostgreSQL and Redis: MLGATE_BENCH_DATABASE_URL (or MLGATE_TEST_DATABASE_URL) is a
server URL on which a scratch database is created and dropped, MLGATE_BENCH_REDIS_URL
(or MLGATE_TEST_REDIS_URL). Each side runs the same workload for BENCH_SECONDS
(default 8) from LOAD_PROCS client processes: `GET /api/v1/users/me` with a bearer token
(authentication, authorization and one database read per request).

The load generator is a minimal keep-alive HTTP/1.1 client on raw asyncio streams, so
the client costs far less CPU than the server; on a machine with few cores it still
shares them with the server, which the note reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

Row = tuple[str, float, str]
SECONDS = float(os.environ.get("BENCH_SECONDS", "8"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
LOAD_PROCS = int(os.environ.get("LOAD_PROCS", "2"))
PASSWORD = "a long and quite unguessable passphrase for bench"
KEK = "bench-key-encryption-key-0123456789abcdef"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _mlgate() -> list[str]:
    exe = shutil.which("mlgate", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "mlgate"]


async def _pg(url: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def _post(base: str, path: str, data: dict[str, str], as_json: bool = False) -> dict[str, object]:
    body = json.dumps(data).encode() if as_json else urllib.parse.urlencode(data).encode()
    kind = "application/json" if as_json else "application/x-www-form-urlencoded"
    req = urllib.request.Request(base + path, data=body, headers={"Content-Type": kind})
    with urllib.request.urlopen(req, timeout=30) as response:
        result: dict[str, object] = json.loads(response.read())
        return result


def _wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("mlgate exited during start")
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise TimeoutError("mlgate not ready")


async def _client(port: int, path: str, token: str, until: float) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
    ).encode()
    done = 0
    try:
        while time.monotonic() < until:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            if head.startswith(b"HTTP/1.1 200"):
                done += 1
    finally:
        writer.close()
    return done


def _load_proc(port: int, path: str, token: str, until: float, conns: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    async def go() -> int:
        counts = await asyncio.gather(*(_client(port, path, token, until) for _ in range(conns)))
        return sum(counts)

    out.put(asyncio.run(go()))


def measure(workers: int, env: dict[str, str], data_dir: Path) -> float:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = (data_dir / f"serve-w{workers}.log").open("wb")
    proc = subprocess.Popen(
        [*_mlgate(), "serve", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        _wait_ready(base, proc)
        name = f"b{uuid.uuid4().hex[:8]}"
        _post(base, "/api/v1/auth/register",
              {"username": name, "email": f"{name}@example.com", "password": PASSWORD},
              as_json=True)  # fmt: skip
        token = str(_post(base, "/api/v1/auth/token",
                          {"grant_type": "password", "username": name,
                           "password": PASSWORD})["access_token"])  # fmt: skip
        warm = time.monotonic() + 1.0
        asyncio.run(_client(port, "/api/v1/users/me", token, warm))
        until = time.monotonic() + SECONDS
        queue: mp.Queue[int] = mp.Queue()
        procs = [
            mp.Process(
                target=_load_proc,
                args=(
                    port,
                    "/api/v1/users/me",
                    token,
                    until,
                    max(1, CONNECTIONS // LOAD_PROCS),
                    queue,
                ),
            )  # fmt: skip
            for _ in range(LOAD_PROCS)
        ]
        for p in procs:
            p.start()
        total = sum(queue.get(timeout=SECONDS + 60) for _ in procs)
        for p in procs:
            p.join(timeout=10)
        return total / SECONDS
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        log.close()


def main() -> list[Row]:
    pg = os.environ.get("MLGATE_BENCH_DATABASE_URL") or os.environ.get("MLGATE_TEST_DATABASE_URL")
    redis = os.environ.get("MLGATE_BENCH_REDIS_URL") or os.environ.get("MLGATE_TEST_REDIS_URL")
    if not pg or not redis:
        return [("2 workers vs 1", math.nan,
                 "skipped: set MLGATE_TEST_DATABASE_URL and MLGATE_TEST_REDIS_URL "
                 "(PostgreSQL + Redis)")]  # fmt: skip
    name = f"mlgate_bench_{uuid.uuid4().hex[:8]}"
    asyncio.run(_pg(pg, f'CREATE DATABASE "{name}"'))
    root = Path(tempfile.mkdtemp(prefix="mlgate-bench-"))
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLGATE_")}
        env.update(
            MLGATE_DATA_DIR=str(root),
            MLGATE_DATABASE_URL=pg.rsplit("/", 1)[0] + "/" + name,
            MLGATE_REDIS_URL=redis,
            MLGATE_KEY_ENCRYPTION_KEY=KEK,
            MLGATE_ADMIN_PASSWORD=PASSWORD,
            MLGATE_DEMO_MODELS="false",
            MLGATE_RATE_LIMIT_USER="none",
            MLGATE_RATE_LIMIT_REGISTER="none",
            MLGATE_ARGON2_MEMORY_COST="1024",
            MLGATE_ARGON2_TIME_COST="1",
            MLGATE_LOG_LEVEL="WARNING",
        )
        one = measure(1, env, root)
        two = measure(2, env, root)
    finally:
        asyncio.run(_pg(pg, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        shutil.rmtree(root, ignore_errors=True)
    note = (
        f"GET /users/me req/s {two:.0f} vs {one:.0f}; {CONNECTIONS} conns, {SECONDS:.0f} s, "
        f"{os.cpu_count()} CPUs shared with {LOAD_PROCS} load procs"
    )
    return [("2 workers vs 1", two / one if one else math.nan, note)]


if __name__ == "__main__":
    for row in main():
        print(f"{row[0]}: {row[1]:.2f} ({row[2]})")
