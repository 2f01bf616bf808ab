"""Dynamic batching benchmark: requests/s at 1, 16 and 64 concurrent clients, batching
on vs off, for the ONNX iris model and a 100-tree forest served through scikit-learn.

Two measurements:
- in process: the serving path alone (input validation, batcher or executor, model), so
  the numbers isolate batching from HTTP and auth; no network traffic.
- over HTTP: a real `mlgate serve` on a free 127.0.0.1 port with a fresh data directory,
  started once with batching on and once with `MLGATE_BATCHING=false`, driven with
  `POST /api/v1/models/{name}/predict` (one row per request, an admin token; the admin
  rate limit is unlimited by default) by keep-alive clients in this process.

Usage: python bench/serving.py [--seconds 2] [--http-seconds 5] [--skip-inprocess]
[--skip-http]. `main()` returns (scenario, ratio on/off, note) rows for bench/run.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from mlgate.serving.batching import Batcher
from mlgate.serving.checks import describe_onnx
from mlgate.serving.inputs import rows_to_array
from mlgate.serving.runtime import Feature, Model, ModelSpec, OnnxModel, SklearnModel

CLIENTS = (1, 16, 64)
Row = tuple[str, float, str]
ADMIN_PASSWORD = "a benchmark passphrase, long enough"
MODELS = {"onnx-iris": "bench-iris-onnx", "sklearn-forest-100": "bench-forest-sklearn"}


def fitted() -> tuple[Any, Any, Any]:
    """(iris rows, logistic regression, 100-tree forest), fitted deterministically."""
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logreg = LogisticRegression(max_iter=1000).fit(x, y)
        forest = RandomForestClassifier(n_estimators=100, random_state=0).fit(x, y)
    return x, logreg, forest


def iris_onnx(logreg: Any) -> bytes:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType

    proto = convert_sklearn(
        logreg,
        initial_types=[("input", DoubleTensorType([None, 4]))],
        options={id(logreg): {"zipmap": False}},
    )
    return bytes(proto.SerializeToString())


# ---- in process ----------------------------------------------------------------------


def build_models() -> dict[str, Model]:
    _, logreg, forest = fitted()
    data = iris_onnx(logreg)
    features = tuple(Feature(f"x{i}") for i in range(4))
    classes = ("setosa", "versicolor", "virginica")
    onnx_spec = ModelSpec("iris", 1, "classification", features, classes, "onnx", "onnx")
    iris = OnnxModel(onnx_spec, data, describe_onnx(data, {})["runtime"])
    sk_spec = ModelSpec("forest", 1, "classification", features, classes, "skops", "skops")
    sk = SklearnModel(sk_spec, forest)
    for model in (iris, sk):
        model.load()
    return {"onnx-iris": iris, "sklearn-forest-100": sk}


async def measure(
    model: Model, clients: int, batching: bool, seconds: float, executor: ThreadPoolExecutor
) -> float:
    batcher = Batcher(model.predict, executor, max_rows=256, max_wait_s=0.002)
    loop = asyncio.get_running_loop()
    rng = np.random.default_rng(0)
    rows = rng.normal(5, 1, size=(512, 4)).tolist()
    done = 0
    stop = loop.time() + seconds

    async def client(k: int) -> None:
        nonlocal done
        i = k
        while loop.time() < stop:
            batch = rows_to_array([rows[i % len(rows)]], model.spec.features, 1000)
            if batching:
                await batcher.submit(batch)
            else:
                await loop.run_in_executor(executor, model.predict, batch)
            done += 1
            i += clients

    started = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    elapsed = time.perf_counter() - started
    await batcher.close()
    return done / elapsed


async def in_process(seconds: float) -> list[Row]:
    models = build_models()
    executor = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2))
    rows: list[Row] = []
    print("in process (serving path without HTTP)")
    print(f"{'model':20} {'clients':>7} {'off req/s':>10} {'on req/s':>10} {'ratio':>6}")
    for name, model in models.items():
        for clients in CLIENTS:
            off = await measure(model, clients, False, seconds, executor)
            on = await measure(model, clients, True, seconds, executor)
            print(f"{name:20} {clients:7d} {off:10.0f} {on:10.0f} {on / off:6.2f}")
            rows.append(_row("in-process", name, clients, on, off, seconds))
    executor.shutdown()
    return rows


def _row(kind: str, name: str, clients: int, on: float, off: float, seconds: float) -> Row:
    note = f"batching on {on:.0f} vs off {off:.0f} req/s, 1 row/request, {seconds:g} s each"
    ratio = on / off if off else float("nan")
    return (f"{kind} {name}, {clients} clients: batching on/off", ratio, note)


# ---- over HTTP -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    # A clean configuration, except the batching knobs (to compare settings).
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MLGATE_") or k.startswith("MLGATE_BATCH_MAX_")
    }
    env.update(
        MLGATE_DATA_DIR=str(data_dir),
        MLGATE_ADMIN_PASSWORD=ADMIN_PASSWORD,
        MLGATE_DEMO_MODELS="false",
        MLGATE_LOG_LEVEL="WARNING",
        MLGATE_LOG_FORMAT="console",
    )
    env.update(extra)
    return env


def _mlgate() -> list[str]:
    return [sys.executable, "-c", "from mlgate.cli import main; main()"]


def prepare(data_dir: Path) -> None:
    """A fresh database with an admin, the iris ONNX model uploaded through `mlgate
    models add`, and the forest registered to be served by scikit-learn."""
    x, logreg, forest = fitted()
    env = _env(data_dir)
    subprocess.run([*_mlgate(), "init"], env=env, check=True, capture_output=True)
    onnx_path = data_dir / "iris.onnx"
    onnx_path.write_bytes(iris_onnx(logreg))
    add = [*_mlgate(), "models", "add", str(onnx_path), "--name", MODELS["onnx-iris"]]
    subprocess.run(add, env=env, check=True, capture_output=True)
    asyncio.run(_register_estimator(data_dir, MODELS["sklearn-forest-100"], forest))


async def _register_estimator(data_dir: Path, name: str, estimator: Any) -> None:
    """Register a .skops forest to be served by scikit-learn itself. An upload would
    serve its (faster) ONNX conversion; the sandbox still checks the file."""
    import skops.io as sio

    from mlgate.cli import with_context
    from mlgate.serving import service
    from mlgate.serving.sandbox import CheckResult
    from mlgate.settings import Settings

    settings = Settings(data_dir=data_dir, demo_models=False)
    blob = sio.dumps(estimator)
    path = data_dir / f"{name}.skops"
    path.write_bytes(blob)
    spooled = service.SpooledUpload(path, len(blob), hashlib.sha256(blob).hexdigest())
    form = service.UploadForm(name, path.name, "100-tree forest served by scikit-learn")

    async def register(ctx: Any) -> None:
        checked = await service.precheck(ctx, form, spooled)
        report = {**checked.report, "serving_format": "skops", "runtime": {}}
        as_estimator = CheckResult(report, None)
        real_precheck = service.precheck

        async def verdict(*_: Any) -> CheckResult:
            return as_estimator

        service.precheck = verdict  # type: ignore[assignment]
        try:
            async with ctx.db.session() as session:
                await service.upload(ctx, session, None, None, form, spooled, operator=True)
        finally:
            service.precheck = real_precheck

    await with_context(settings, register)


class Server:
    # A plain class: bench/run.py loads this file without registering it as a module,
    # which dataclasses need.
    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process, self.port, self.log = process, port, log
        self.token = ""


@contextlib.contextmanager
def serve(data_dir: Path, batching: bool) -> Iterator[Server]:
    port = _free_port()
    log = data_dir / f"serve-{'on' if batching else 'off'}.log"
    env = _env(data_dir, MLGATE_BATCHING="true" if batching else "false")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*_mlgate(), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(process, port, log)
    try:
        _wait_ready(server)
        server.token = _login(server)
        for model in MODELS.values():  # loaded before anything is measured
            _get(server, f"/v2/models/{model}/ready")
        yield server
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(server: Server, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{server.port}/v2/health/ready"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"mlgate serve exited; see {server.log}:\n{server.log.read_text()}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        time.sleep(0.2)
    raise RuntimeError(f"mlgate serve did not become ready; see {server.log}")


def _login(server: Server) -> str:
    form = {"grant_type": "password", "username": "admin", "password": ADMIN_PASSWORD}
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/api/v1/auth/token",
        data=urllib.parse.urlencode(form).encode(),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return str(json.load(answer)["access_token"])


def _get(server: Server, path: str) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}{path}",
        headers={"Authorization": f"Bearer {server.token}"},
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.load(answer)


def _predict_request(server: Server, model: str, row: list[float]) -> bytes:
    body = json.dumps({"inputs": [row]}).encode()
    head = (
        f"POST /api/v1/models/{model}/predict HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\n"
        f"Authorization: Bearer {server.token}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def http_point(
    server: Server, model: str, rows: list[list[float]], clients: int, seconds: float
) -> float:
    """Requests/s of `clients` keep-alive connections, each one request at a time, over
    `seconds` after a short warm-up."""
    loop = asyncio.get_running_loop()
    warm_until = loop.time() + min(1.0, seconds / 5)
    stop = warm_until + seconds
    counted = 0

    async def client(k: int) -> None:
        nonlocal counted
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        request = _predict_request(server, model, rows[k % len(rows)])
        try:
            while (now := loop.time()) < stop:
                writer.write(request)
                status, body = await _read_response(reader)
                if status != 200:
                    raise RuntimeError(f"predict answered {status}: {body[:300]!r}")
                if now >= warm_until:
                    counted += 1
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    await asyncio.gather(*(client(k) for k in range(clients)))
    return counted / seconds


def over_http(seconds: float) -> list[Row]:
    x, _, _ = fitted()
    rows = [list(map(float, r)) for r in x[::3]]
    results: dict[tuple[str, int, bool], float] = {}
    with tempfile.TemporaryDirectory(prefix="mlgate-bench-") as tmp:
        data_dir = Path(tmp)
        prepare(data_dir)
        for batching in (True, False):
            with serve(data_dir, batching) as server:
                for label, model in MODELS.items():
                    for clients in CLIENTS:
                        point = asyncio.run(http_point(server, model, rows, clients, seconds))
                        results[(label, clients, batching)] = point
    out: list[Row] = []
    print("over HTTP (mlgate serve, one row per request, admin token)")
    print(f"{'model':20} {'clients':>7} {'off req/s':>10} {'on req/s':>10} {'ratio':>6}")
    for label in MODELS:
        for clients in CLIENTS:
            on, off = results[(label, clients, True)], results[(label, clients, False)]
            print(f"{label:20} {clients:7d} {off:10.0f} {on:10.0f} {on / off:6.2f}")
            out.append(_row("http", label, clients, on, off, seconds))
    return out


def main(
    seconds: float = 2.0, http_seconds: float = 5.0, *, inprocess: bool = True, http: bool = True
) -> list[Row]:
    """Rows of (scenario, batching on/off requests/s ratio, note) for bench/run.py."""
    rows: list[Row] = []
    if inprocess:
        rows += asyncio.run(in_process(seconds))
    if http:
        rows += over_http(http_seconds)
    return rows


def cli(argv: Any = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="per in-process point")
    parser.add_argument("--http-seconds", type=float, default=5.0, help="per HTTP point")
    parser.add_argument("--skip-inprocess", action="store_true")
    parser.add_argument("--skip-http", action="store_true")
    args = parser.parse_args(argv)
    main(
        args.seconds, args.http_seconds, inprocess=not args.skip_inprocess, http=not args.skip_http
    )


if __name__ == "__main__":
    cli()
