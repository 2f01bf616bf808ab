"""Audit and throttling benchmarks (issue 5), against a real `uvicorn` on 127.0.0.1.

1. Audited vs unaudited `POST /api/v1/models/iris/predict` requests/s at 64 concurrent
   clients (unaudited = the same server with `AuditService.submit` made a no-op).
2. `/healthz` p99 latency while 50 clients send wrong passwords (target < 50 ms).

    .venv/bin/python bench/audit.py [--database-url postgresql+asyncpg://...] [--seconds 8]

Rate limits and quotas are off in the server so they do not cap the measurement.
Every run is bounded in time and stops the servers it started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ADMIN_PASSWORD = "bench root passphrase 0123456789"
IRIS = {"inputs": [[5.1, 3.5, 1.4, 0.2]]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(port: int, unaudited: bool) -> None:
    """The server process (run with --serve)."""
    import uvicorn

    from mlgate.app import create_app
    from mlgate.audit.service import AuditService
    from mlgate.settings import Settings

    if unaudited:

        async def submit(self: Any, event: Any) -> None:
            return None

        AuditService.submit = submit  # type: ignore[method-assign]
    settings = Settings(
        rate_limit_guest=None,
        rate_limit_user=None,
        rate_limit_admin=None,
        daily_quota_guest=None,
        log_format="console",
        log_level="WARNING",
    )
    uvicorn.run(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
    )


class Server:
    def __init__(self, env: dict[str, str], unaudited: bool) -> None:
        self.port = free_port()
        args = [sys.executable, __file__, "--serve", str(self.port)]
        if unaudited:
            args.append("--unaudited")
        self.proc = subprocess.Popen(args, env=env, start_new_session=True)
        self.base = f"http://127.0.0.1:{self.port}"

    async def wait(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError("server exited early")
                try:
                    if (await client.get(self.base + "/readyz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise TimeoutError("server did not become ready")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def token(base: str) -> str:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        r = await client.post(
            "/api/v1/auth/token",
            data={"grant_type": "password", "username": "admin", "password": ADMIN_PASSWORD},
        )
        r.raise_for_status()
        return str(r.json()["access_token"])


async def predict_rps(base: str, seconds: float, clients: int = 64) -> tuple[float, int]:
    headers = {"Authorization": f"Bearer {await token(base)}"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    done = 0
    errors = 0
    async with httpx.AsyncClient(
        base_url=base, headers=headers, limits=limits, timeout=30
    ) as client:

        async def worker(until: float, count: bool) -> None:
            nonlocal done, errors
            while time.monotonic() < until:
                r = await client.post("/api/v1/models/iris/predict", json=IRIS)
                if count:
                    if r.status_code == 200:
                        done += 1
                    else:
                        errors += 1

        warm = time.monotonic() + 1.5
        await asyncio.gather(*(worker(warm, False) for _ in range(clients)))
        start = time.monotonic()
        await asyncio.gather(*(worker(start + seconds, True) for _ in range(clients)))
        elapsed = time.monotonic() - start
    return done / elapsed, errors


PROBE = """
import json, sys, time
import httpx
base, seconds = sys.argv[1], float(sys.argv[2])
time.sleep(0.5)
stop_at = time.monotonic() + seconds
out = []
with httpx.Client(base_url=base, timeout=30) as client:
    while time.monotonic() < stop_at:
        t0 = time.perf_counter()
        assert client.get("/healthz").status_code == 200
        out.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.01)
print(json.dumps(out))
"""


async def healthz_under_password_flood(base: str, seconds: float) -> dict[str, float]:
    stop_at = time.monotonic() + seconds
    attempts = {"n": 0}

    async def attacker(i: int) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            while time.monotonic() < stop_at:
                await client.post(
                    "/api/v1/auth/token",
                    data={
                        "grant_type": "password",
                        "username": f"victim{i % 10}",
                        "password": f"wrong password {i}",
                    },
                )
                attempts["n"] += 1

    # The probe runs in a process of its own: inside the attackers' event loop its
    # timings would mostly measure that loop's own queue, not the server.
    probe = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PROBE,
        base,
        str(seconds - 0.5),
        stdout=asyncio.subprocess.PIPE,
    )
    results = await asyncio.gather(probe.communicate(), *(attacker(i) for i in range(50)))
    latencies = sorted(json.loads(results[0][0]))
    return {
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1],
        "probes": len(latencies),
        "login_attempts_per_s": attempts["n"] / seconds,
    }


def main(argv: list[str] | None = None) -> list[tuple[str, float, str]]:
    """Rows for bench/run.py: SQLite always; PostgreSQL in a scratch database when
    MLGATE_BENCH_DATABASE_URL or MLGATE_TEST_DATABASE_URL names a server."""
    if argv is not None:
        return asyncio.run(measure(argv))
    rows = asyncio.run(measure([]))
    server_url = os.environ.get("MLGATE_BENCH_DATABASE_URL") or os.environ.get(
        "MLGATE_TEST_DATABASE_URL"
    )
    if server_url:
        rows += asyncio.run(_on_scratch_database(server_url))
    return rows


async def _on_scratch_database(server_url: str) -> list[tuple[str, float, str]]:
    import uuid

    import asyncpg

    name = f"mlgate_bench_{uuid.uuid4().hex[:8]}"
    admin_dsn = server_url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        return await measure(["--database-url", server_url.rsplit("/", 1)[0] + "/" + name])
    finally:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def measure(argv: list[str]) -> list[tuple[str, float, str]]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "MLGATE_DATA_DIR": str(Path(tmp) / "data"),
            "MLGATE_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "MLGATE_KEY_ENCRYPTION_KEY": "bench-key-encryption-key-0123456789abcdef",
        }
        if args.database_url:
            env["MLGATE_DATABASE_URL"] = args.database_url
        backend = "postgresql" if args.database_url else "sqlite"
        results: dict[str, Any] = {}
        for unaudited in (False, True):
            server = Server(env, unaudited)
            try:
                await server.wait()
                rps, errors = await predict_rps(server.base, args.seconds)
                results["unaudited" if unaudited else "audited"] = (rps, errors)
                if not unaudited:
                    results["flood"] = await healthz_under_password_flood(server.base, args.seconds)
            finally:
                server.stop()
        audited, unaudited_ = results["audited"][0], results["unaudited"][0]
        print(f"backend: {backend}")
        print(
            f"predict, 64 clients: audited {audited:.0f} req/s, unaudited {unaudited_:.0f} req/s,"
        )
        print(f"  ratio {audited / unaudited_:.2f} (target >= 0.85 on PostgreSQL)")
        print(f"  errors: audited {results['audited'][1]}, unaudited {results['unaudited'][1]}")
        flood = results["flood"]
        print(
            f"/healthz under 50 wrong-password clients: p50 {flood['p50_ms']:.1f} ms, "
            f"p99 {flood['p99_ms']:.1f} ms over {flood['probes']} probes "
            f"({flood['login_attempts_per_s']:.0f} login attempts/s; target p99 < 50 ms)"
        )
    return [
        (
            f"audited vs unaudited predict ({backend})",
            audited / unaudited_,
            f"{audited:.0f} vs {unaudited_:.0f} req/s, 64 clients",
        ),
        (
            f"/healthz p99 ms under login flood ({backend})",
            flood["p99_ms"],
            f"a latency, not a ratio: p50 {flood['p50_ms']:.1f} ms, 50 wrong-password clients",
        ),
    ]


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), "--unaudited" in sys.argv)
    else:
        main(sys.argv[1:])
