"""Two replicas share models and prediction limits: a model uploaded on A is served by B
within 5 s, and a user's rate limit is one budget across both."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from tests.scaleout.conftest import needs_services
from tests.scaleout.harness import admin_token, bearer, login, register, replicas, scaleout_env
from tests.serving.conftest import onnx_bytes

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis, needs_services]
LIMIT = 8


def _model() -> bytes:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 3))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    return onnx_bytes(LogisticRegression().fit(x, y), 3)


def _upload(client: httpx.Client, token: str, name: str) -> None:
    response = client.post(
        "/api/v1/admin/models",
        headers=bearer(token),
        data={"name": name, "task": "classification", "feature_names": ["a", "b", "c"]},
        files={"file": ("m.onnx", _model(), "application/octet-stream")},
    )
    assert response.status_code == 201, response.text


def test_model_on_a_served_by_b_and_limits_are_global(
    tmp_path: Path, pg_db: str, redis_db: str
) -> None:
    envs = [
        scaleout_env(tmp_path / n, pg_db, redis_db, MLGATE_RATE_LIMIT_USER=f"{LIMIT}/minute")
        for n in ("a", "b")
    ]
    with replicas(envs) as (a, b), a.client() as ca, b.client() as cb:
        _upload(ca, admin_token(ca), "shared")
        register(ca, "predictor")
        user = bearer(login(cb, "predictor"))
        deadline = time.monotonic() + 5.0
        while cb.get("/api/v1/models/shared", headers=user).status_code != 200:
            assert time.monotonic() < deadline, "replica B did not pick up the model in 5 s"
            time.sleep(0.1)
        body = {"inputs": [[0.1, 0.2, 0.3]]}
        answers = [
            (ca if i % 2 else cb).post("/api/v1/models/shared/predict", headers=user, json=body)
            for i in range(LIMIT)
        ]
        assert [r.status_code for r in answers] == [200] * LIMIT
        remaining = [int(r.headers["RateLimit-Remaining"]) for r in answers]
        assert remaining == sorted(remaining, reverse=True)
        assert remaining[-1] == 0
        for client in (ca, cb):
            refused = client.post("/api/v1/models/shared/predict", headers=user, json=body)
            assert refused.status_code == 429
            assert refused.json()["code"] == "rate_limited"
            assert int(refused.headers["Retry-After"]) >= 1
