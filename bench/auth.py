"""Cost of authentication: requests/s of `GET /api/v1/users/me` with an access token
against a bare FastAPI route in the same process, measured with wrk against uvicorn on
127.0.0.1 in one run. Target: me/bare >= 0.8.

    .venv/bin/python bench/auth.py [--seconds 5] [--connections 32] [--threads 2]

wrk comes from Debian's packages and is installed when missing (apt-get, as root or
through sudo). The server runs in a child process on a throwaway data directory.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

# Module level: the route below is defined in a function, and FastAPI resolves its
# (postponed) annotations in this module's globals.
from mlgate.deps import Authenticated, PrincipalDep

ADMIN_PASSWORD = "bench operator passphrase, long enough to pass"
ME = "/api/v1/users/me"
BARE = "/bench/bare"
GUARDED = "/bench/authenticated"
TARGET = 0.8


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    print("wrk is missing; installing it with apt-get", file=sys.stderr)
    subprocess.run([*prefix, "apt-get", "install", "-y", "-q", "wrk"], check=True)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk could not be installed")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(port: int) -> None:
    """Child process: the real app plus one bare route, on uvicorn."""
    import uvicorn

    from mlgate.app import create_app
    from mlgate.settings import Settings

    app = create_app(Settings())

    @app.get(BARE, include_in_schema=False)
    async def bare() -> dict[str, bool]:
        return {"ok": True}

    @app.get(GUARDED, include_in_schema=False, dependencies=[Authenticated()])
    async def guarded(principal: PrincipalDep) -> dict[str, str]:
        return {"username": principal.username}

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        server_header=False,
    )


def wait_ready(base: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the server did not start")


def access_token(base: str) -> str:
    form = urllib.parse.urlencode(
        {"grant_type": "password", "username": "admin", "password": ADMIN_PASSWORD}
    ).encode()
    request = urllib.request.Request(
        base + "/api/v1/auth/token",
        data=form,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(json.loads(response.read())["access_token"])


def wrk(
    binary: str, url: str, args: argparse.Namespace, seconds: float, token: str | None
) -> float:
    cmd = [
        binary,
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
    ]
    if token:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run([*cmd, url], check=True, capture_output=True, text=True).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"errors while measuring {url}:\n{out}")
    match = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if not match:
        raise SystemExit(f"could not read wrk's output:\n{out}")
    return float(match.group(1))


def main(argv: list[str] | None = None) -> list[tuple[str, float, str]]:
    """Rows (scenario, ratio, note) for bench/run.py; prints the figures too."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args([] if argv is None else argv)
    if args.serve:
        serve(args.serve)
        return []
    binary = ensure_wrk()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="mlgate-bench-") as data_dir:
        env = {
            **os.environ,
            "MLGATE_DATA_DIR": data_dir,
            "MLGATE_DATABASE_URL": f"sqlite+aiosqlite:///{Path(data_dir) / 'bench.db'}",
            "MLGATE_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "MLGATE_DEMO_MODELS": "false",
            "MLGATE_LOG_FORMAT": "console",
            "MLGATE_LOG_LEVEL": "WARNING",
        }
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(port)], env=env, cwd=data_dir
        )
        try:
            wait_ready(base)
            token = access_token(base)
            # Warm both paths (caches, connection pool), then measure them back to back.
            wrk(binary, base + BARE, args, 1, None)
            wrk(binary, base + ME, args, 1, token)
            wrk(binary, base + GUARDED, args, 1, token)
            bare = wrk(binary, base + BARE, args, args.seconds, None)
            me = wrk(binary, base + ME, args, args.seconds, token)
            guarded = wrk(binary, base + GUARDED, args, args.seconds, token)
        finally:
            server.terminate()
            server.wait(timeout=30)
    ratio = me / bare
    print(f"bare FastAPI route     {bare:10.0f} req/s")
    print(f"GET /users/me (token)  {me:10.0f} req/s")
    print(f"ratio                  {ratio:10.2f}x  (target >= {TARGET}x)")
    # The same bare route behind Authenticated(): what authentication alone costs,
    # apart from the handler's own database reads.
    print(f"bare + Authenticated() {guarded:10.0f} req/s  ({guarded / bare:.2f}x)")
    note = f"{me:.0f} vs {bare:.0f} req/s, wrk {args.connections} conns, {args.seconds:.0f} s"
    return [
        ("auth vs bare (GET /users/me)", ratio, note),
        ("Authenticated() guard vs bare", guarded / bare, f"{guarded:.0f} vs {bare:.0f} req/s"),
    ]


if __name__ == "__main__":
    rows = main(sys.argv[1:])
    sys.exit(0 if not rows or rows[0][1] >= TARGET else 1)
