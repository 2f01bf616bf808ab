"""Start and always stop real `mlgate serve` processes on free ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ADMIN_PASSWORD, TEST_KEK


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mlgate_command() -> list[str]:
    exe = shutil.which("mlgate", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "mlgate"]


def serve_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLGATE_")}
    env.update(
        MLGATE_DATA_DIR=str(data_dir),
        MLGATE_ADMIN_PASSWORD=ADMIN_PASSWORD,
        MLGATE_KEY_ENCRYPTION_KEY=TEST_KEK,
        MLGATE_ARGON2_MEMORY_COST="1024",
        MLGATE_ARGON2_TIME_COST="1",
        MLGATE_DEMO_MODELS="false",
        MLGATE_LOG_FORMAT="json",
    )
    env.update(extra)
    return env


READY_TIMEOUT = 60.0


@dataclass
class Server:
    base: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=kw.pop("timeout", 15.0), **kw)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def launch(env: dict[str, str], *, workers: int = 1, port: int | None = None) -> Server:
    """Start `mlgate serve` on a free port; its output goes to serve-<port>.log."""
    port = port or free_port()
    log_path = Path(env["MLGATE_DATA_DIR"]) / f"serve-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                *mlgate_command(), "serve", "--host", "127.0.0.1", "--port", str(port),
                "--workers", str(workers),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    return Server(f"http://127.0.0.1:{port}", proc, log_path)


def wait_ready(server: Server, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(f"mlgate exited early:\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"mlgate not ready in {timeout}s:\n{server.log_tail()}")
        time.sleep(0.1)


@contextmanager
def running_server(
    env: dict[str, str], *, port: int | None = None, workers: int = 1
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Yield (base_url, process) once /readyz answers 200; always stop the process."""
    server = launch(env, workers=workers, port=port)
    try:
        wait_ready(server)
        yield server.base, server.proc
    finally:
        stop(server.proc)


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=5)
