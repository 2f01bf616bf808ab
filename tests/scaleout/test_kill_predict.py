"""`kill -9` of `mlgate serve` under a mixed registration and prediction load: every
registration answered 201 is in the database, and every prediction answered 200 has its
`model.predict` audit event (group commit acknowledges only what it committed).

Each request carries a unique `X-Request-ID`; answers are matched to the database by it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from tests.conftest import USER_PASSWORD
from tests.process.serve import stop
from tests.scaleout.conftest import needs_services
from tests.scaleout.harness import (
    Server,
    admin_token,
    bearer,
    launch,
    login,
    pg_query,
    register,
    scaleout_env,
    wait_ready,
)
from tests.serving.conftest import onnx_bytes

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis, needs_services]
MODEL = "killme"
THREADS = 8  # half register, half predict
LOAD_SECONDS = 1.5


@dataclass
class Answers:
    """Successful answers, by request id, plus what got no answer (cut by the kill)."""

    registered: dict[str, str] = field(default_factory=dict)  # request id -> username
    predicted: list[str] = field(default_factory=list)  # request ids
    other: list[tuple[str, int]] = field(default_factory=list)  # (kind, status): anomalies
    cut: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _model() -> bytes:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(60, 3))
    y = (x[:, 0] - x[:, 2] > 0).astype(int)
    return onnx_bytes(LogisticRegression().fit(x, y), 3)


def _upload(client: httpx.Client, token: str) -> None:
    response = client.post(
        "/api/v1/admin/models",
        headers=bearer(token),
        data={"name": MODEL, "task": "classification", "feature_names": ["a", "b", "c"]},
        files={"file": ("m.onnx", _model(), "application/octet-stream")},
    )
    assert response.status_code == 201, response.text


def _wait_served(server: Server, token: str, within: float = 10.0) -> None:
    """Until every worker serves the model: ten answers 200 in a row on new connections
    (which the kernel spreads over the workers)."""
    deadline, streak = time.monotonic() + within, 0
    while streak < 10:
        with server.client() as client:
            r = client.post(
                f"/api/v1/models/{MODEL}/predict",
                headers=bearer(token),
                json={"inputs": [[0.0, 0.0, 0.0]]},
            )
        streak = streak + 1 if r.status_code == 200 else 0
        assert time.monotonic() < deadline, f"model not served: {r.status_code} {r.text}"
        if streak == 0:
            time.sleep(0.1)


def _run_load(server: Server, token: str, answers: Answers, killed: threading.Event) -> None:
    def request_id() -> str:
        return f"kp-{uuid.uuid4().hex}"

    def registrations() -> None:
        with server.client(timeout=10.0) as client:
            while not killed.is_set():
                rid, name = request_id(), f"k{uuid.uuid4().hex[:12]}"
                try:
                    r = client.post(
                        "/api/v1/auth/register",
                        headers={"X-Request-ID": rid},
                        json={"username": name, "email": f"{name}@example.com",
                              "password": USER_PASSWORD},
                    )  # fmt: skip
                except httpx.HTTPError:
                    with answers.lock:
                        answers.cut += 1
                    return
                with answers.lock:
                    if r.headers.get("X-Request-ID") != rid:
                        answers.other.append(("register: X-Request-ID not echoed", 0))
                    elif r.status_code == 201:
                        answers.registered[rid] = name
                    else:
                        answers.other.append(("register", r.status_code))

    def predictions() -> None:
        # v1 and Open Inference Protocol v2 in turn: both audit through the same path.
        headers = bearer(token)
        rows = [[0.1, -0.2, 0.3], [1.0, 0.5, -1.5]]
        v1 = (f"/api/v1/models/{MODEL}/predict", {"inputs": rows})
        tensor = {"name": "input", "datatype": "FP32", "shape": [2, 3],
                  "data": [v for row in rows for v in row]}  # fmt: skip
        v2 = (f"/v2/models/{MODEL}/infer", {"inputs": [tensor]})
        with server.client(timeout=10.0) as client:
            n = 0
            while not killed.is_set():
                rid, (path, body) = request_id(), (v1, v2)[n % 2]
                n += 1
                try:
                    r = client.post(path, headers={**headers, "X-Request-ID": rid}, json=body)
                except httpx.HTTPError:
                    with answers.lock:
                        answers.cut += 1
                    return
                with answers.lock:
                    if r.headers.get("X-Request-ID") != rid:
                        answers.other.append((f"{path}: X-Request-ID not echoed", 0))
                    elif r.status_code == 200:
                        answers.predicted.append(rid)
                    else:
                        answers.other.append((path, r.status_code))

    targets = [registrations if i % 2 == 0 else predictions for i in range(THREADS)]
    threads = [threading.Thread(target=t, daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    try:
        time.sleep(LOAD_SECONDS)
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=10)
    finally:
        killed.set()
        for thread in threads:
            thread.join(timeout=15)
    assert not any(t.is_alive() for t in threads), "a load thread did not finish"


@pytest.mark.parametrize("workers", [1, 2])
def test_kill_9_during_registration_and_predict_load(
    tmp_path: Path, pg_db: str, redis_db: str, workers: int
) -> None:
    env = scaleout_env(tmp_path / "a", pg_db, redis_db, MLGATE_RATE_LIMIT_USER="none")
    server = launch(env, workers=workers)
    answers = Answers()
    killed = threading.Event()
    try:
        wait_ready(server)
        with server.client() as client:
            _upload(client, admin_token(client))
            register(client, "predictor")
            token = login(client, "predictor")
        _wait_served(server, token)
        _run_load(server, token, answers, killed)
    finally:
        killed.set()
        stop(server.proc)

    assert answers.other == [], f"non-success answers before the kill: {answers.other[:10]}"
    assert len(answers.registered) >= 5, f"too few registrations: {len(answers.registered)}"
    assert len(answers.predicted) >= 20, f"too few predictions: {len(answers.predicted)}"
    assert answers.cut >= 1, "no request was in flight at the kill"

    users = {r["username"] for r in pg_query(pg_db, "SELECT username FROM users")}
    lost_users = [n for n in answers.registered.values() if n not in users]
    assert lost_users == [], (
        f"{len(lost_users)} of {len(answers.registered)} registrations answered 201 "
        f"are not in the database: {lost_users[:5]}"
    )
    rows = pg_query(
        pg_db,
        "SELECT request_id, action, outcome, status, actor FROM audit_events "
        "WHERE request_id LIKE 'kp-%'",
    )
    register_events = {
        r["request_id"]: r["actor"]
        for r in rows
        if r["action"] == "auth.register" and r["outcome"] == "success"
    }
    lost_register = [rid for rid, n in answers.registered.items() if register_events.get(rid) != n]
    assert lost_register == [], (
        f"{len(lost_register)} registrations answered 201 have no auth.register event"
    )
    predict_events = {
        r["request_id"]
        for r in rows
        if r["action"] == "model.predict" and r["outcome"] == "success" and r["status"] == 200
    }
    lost_predict = [rid for rid in answers.predicted if rid not in predict_events]
    assert lost_predict == [], (
        f"{len(lost_predict)} of {len(answers.predicted)} predictions answered 200 have no "
        f"model.predict event: {lost_predict[:5]}"
    )
