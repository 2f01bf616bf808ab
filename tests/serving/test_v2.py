"""Open Inference Protocol v2: JSON and binary tensors, and the real tritonclient."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.conftest import Service, bearer
from tests.serving.test_api import problem

from mlgate.serving.demo import train_demo

IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def infer_body(
    data: Any = None, datatype: str = "FP64", shape: Any = None, **extra: Any
) -> dict[str, Any]:
    tensor = {
        "name": "input",
        "datatype": datatype,
        "shape": shape or [2, 4],
        "data": data if data is not None else [v for r in IRIS_ROWS for v in r],
    }
    return {"inputs": [tensor], **extra}


async def test_health_and_metadata(serving: Service) -> None:
    assert (await serving.client.get("/v2/health/live")).status_code == 200
    assert (await serving.client.get("/v2/health/ready")).status_code == 200
    headers = await serving.user_headers("user")
    server = (await serving.client.get("/v2", headers=headers)).json()
    assert "binary_tensor_data" in server["extensions"]
    meta = (await serving.client.get("/v2/models/iris", headers=headers)).json()
    assert meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}]
    assert [o["name"] for o in meta["outputs"]] == ["label", "probabilities"]
    ready = await serving.client.get("/v2/models/iris/versions/1/ready", headers=headers)
    assert ready.status_code == 200
    assert ready.json()["ready"] is True
    problem(
        await serving.client.get("/v2/models/iris/versions/9", headers=headers), 404, "not_found"
    )
    assert (await serving.client.get("/v2")).status_code == 401


@pytest.mark.parametrize("datatype", ["FP32", "FP64", "INT64"])
async def test_json_infer(serving: Service, datatype: str) -> None:
    headers = await serving.user_headers("user")
    rows = [[5, 3, 1, 0], [7, 3, 5, 2]] if datatype == "INT64" else IRIS_ROWS
    body = infer_body([v for r in rows for v in r], datatype, id="req-7")
    response = await serving.client.post("/v2/models/iris/infer", headers=headers, json=body)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["id"] == "req-7"
    assert out["model_name"] == "iris"
    assert out["model_version"] == "1"
    outputs = {o["name"]: o for o in out["outputs"]}
    est, data = train_demo("iris")
    assert outputs["label"]["datatype"] == "BYTES"
    assert outputs["label"]["data"] == [str(data.target_names[i]) for i in est.predict(rows)]
    assert outputs["probabilities"]["shape"] == [2, 3]
    assert np.allclose(
        np.reshape(outputs["probabilities"]["data"], (2, 3)),
        est.predict_proba(np.asarray(rows, dtype=np.float64)),
        atol=1e-5,
    )


async def test_regression_infer_and_selected_output(serving: Service) -> None:
    headers = await serving.admin_headers()
    est, data = train_demo("diabetes")
    rows = data.data[:3]
    body = {
        "inputs": [{"name": "input", "datatype": "FP64", "shape": [3, 10], "data": rows.tolist()}],
        "outputs": [{"name": "prediction"}],
    }
    response = await serving.client.post(
        "/v2/models/diabetes/versions/1/infer", headers=headers, json=body
    )
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["name"] == "prediction"
    assert output["datatype"] == "FP64"
    assert np.allclose(output["data"], est.predict(rows))


async def test_binary_tensors(serving: Service) -> None:
    headers = await serving.user_headers("user")
    raw = np.asarray(IRIS_ROWS, dtype=np.float32).tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": [2, 4],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [
                {"name": "label", "parameters": {"binary_data": True}},
                {"name": "probabilities", "parameters": {"binary_data": False}},
            ],
        }
    ).encode()
    response = await serving.client.post(
        "/v2/models/iris/infer",
        content=header + raw,
        headers={
            **headers,
            "Inference-Header-Content-Length": str(len(header)),
            "content-type": "application/octet-stream",
        },
    )
    assert response.status_code == 200, response.text
    size = int(response.headers["inference-header-content-length"])
    doc = json.loads(response.content[:size])
    label, probs = doc["outputs"]
    assert "data" not in label
    assert "data" in probs
    blob = response.content[size:]
    assert len(blob) == label["parameters"]["binary_data_size"]
    labels, offset = [], 0
    while offset < len(blob):
        (n,) = struct.unpack_from("<I", blob, offset)
        labels.append(blob[offset + 4 : offset + 4 + n].decode())
        offset += 4 + n
    assert labels == ["setosa", "virginica"]


async def test_gzip_body_and_bomb(serving: Service) -> None:
    import gzip

    headers = {
        **await serving.user_headers("user"),
        "content-encoding": "gzip",
        "content-type": "application/json",
    }
    small = gzip.compress(json.dumps(infer_body()).encode())
    ok = await serving.client.post("/v2/models/iris/infer", headers=headers, content=small)
    assert ok.status_code == 200, ok.text
    bomb = gzip.compress(b" " * (serving.settings.max_body_bytes + 10))
    big = await serving.client.post("/v2/models/iris/infer", headers=headers, content=bomb)
    problem(big, 413, "payload_too_large")


V2_BAD: list[tuple[dict[str, Any], str]] = [
    (infer_body(shape=[2, 3]), "shape"),
    (infer_body(shape=[3, 4]), "shape"),
    (infer_body(datatype="BOOL"), "datatype"),
    (infer_body(data=[1, 2, 3, "x", 1, 2, 3, 4]), "number"),
    (infer_body(data=[1, 2, 3, None, 1, 2, 3, 4]), "number"),
    (infer_body(data=[1.5, 2, 3, 4, 1, 2, 3, 4], datatype="INT64"), "INT64"),
    ({"inputs": []}, "exactly one"),
    (
        {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 4], "data": [1, 2, 3, 4]}]},
        "named",
    ),
    (infer_body(outputs=[{"name": "nope"}]), "unknown output"),
    (infer_body(outputs=[{"name": "label", "parameters": [1]}]), "parameters"),
    (infer_body(data=[5.1, 3.5, 1.4, True, 6.7, 3.0, 5.2, 2.3]), "boolean"),
    (infer_body(data=[10**400, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]), "out of range"),
    (infer_body(data=[1e39, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]), "out of range"),
    (infer_body(data=[[[5.1, 3.5, 1.4, 0.2]], [[6.7, 3.0, 5.2, 2.3]]]), "nested"),
]


@pytest.mark.parametrize(("body", "reason"), V2_BAD)
async def test_v2_bad_inputs(serving: Service, body: dict[str, Any], reason: str) -> None:
    headers = await serving.user_headers("user")
    response = await serving.client.post("/v2/models/iris/infer", headers=headers, json=body)
    refused = problem(response, 422, "validation_error")
    assert reason in refused["detail"]
    assert refused["error"] == refused["detail"]


async def test_v2_nan_refused(serving: Service) -> None:
    headers = {**await serving.user_headers("user"), "content-type": "application/json"}
    body = (
        '{"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], '
        '"data": [1, NaN, 3, 4]}]}'
    )
    response = await serving.client.post("/v2/models/iris/infer", headers=headers, content=body)
    assert "finite" in problem(response, 422, "validation_error")["detail"]


async def test_v2_deeply_nested_body_refused(serving: Service) -> None:
    headers = {**await serving.user_headers("user"), "content-type": "application/json"}
    body = "[" * 100_000 + "]" * 100_000
    response = await serving.client.post("/v2/models/iris/infer", headers=headers, content=body)
    assert "nested" in problem(response, 422, "validation_error")["error"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def live_server(tmp_path: Path, _templates_root: Path, _template_registry: Any) -> Iterator[str]:
    """A real HTTP server (uvicorn in a thread) on a fresh copy of the template database."""
    import uvicorn
    from tests.conftest import base_settings, fresh_database

    from mlgate.app import create_app

    target = tmp_path / "live"
    asyncio.run(fresh_database("sqlite", _template_registry, _templates_root, target))
    app = create_app(base_settings(target, None), run_bootstrap=False)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_tritonclient_with_authorization(live_server: str) -> None:
    import httpx
    import tritonclient.http as triton
    from tests.conftest import ADMIN_PASSWORD, ADMIN_USERNAME
    from tritonclient.utils import InferenceServerException

    token = httpx.post(
        f"http://{live_server}/api/v1/auth/token",
        data={
            "grant_type": "password",
            "username": ADMIN_USERNAME,
            "password": ADMIN_PASSWORD,
        },
    ).json()["access_token"]
    client = triton.InferenceServerClient(live_server)
    try:
        assert client.is_server_live()
        headers = bearer(token)
        assert client.is_model_ready("iris", headers=headers)
        rows = np.asarray(IRIS_ROWS, dtype=np.float32)
        tensor = triton.InferInput("input", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)  # binary by default
        result = client.infer("iris", [tensor], headers=headers, request_id="abc")
        assert [v.decode() for v in result.as_numpy("label")] == ["setosa", "virginica"]
        assert result.as_numpy("probabilities").shape == (2, 3)
        assert result.get_response()["id"] == "abc"
        wanted = [triton.InferRequestedOutput("label", binary_data=False)]
        result = client.infer("iris", [tensor], headers=headers, outputs=wanted)
        assert result.get_output("label")["data"] == ["setosa", "virginica"]
        with pytest.raises(InferenceServerException):
            client.infer("iris", [tensor])  # no Authorization: refused
        assert client.get_model_metadata("iris", headers=headers)["name"] == "iris"
    finally:
        client.close()
