"""The v1 serving API over HTTP: demo predictions, uploads, visibility, bad inputs."""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

import numpy as np
import pytest
from tests.conftest import Service
from tests.serving.conftest import fit_quietly, iris_xy, onnx_bytes, skops_bytes

from mlgate.serving.demo import train_demo


def problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    return body


async def upload(
    svc: Service, headers: dict[str, str], name: str, filename: str, data: bytes, **fields: Any
) -> Any:
    form: dict[str, Any] = {"name": name}
    for key, value in fields.items():
        form[key] = [str(v) for v in value] if isinstance(value, list) else str(value)
    return await svc.client.post(
        "/api/v1/admin/models",
        headers=headers,
        data=form,
        files={"file": (filename, data, "application/octet-stream")},
    )


@pytest.mark.parametrize("name", ["iris", "breast-cancer", "diabetes"])
async def test_demo_predictions_equal_sklearn(serving: Service, name: str) -> None:
    headers = await serving.admin_headers()
    est, data = train_demo(name)
    rows = data.data[::7]
    meta = await serving.client.get(f"/api/v1/models/{name}", headers=headers)
    assert meta.status_code == 200, meta.text
    info = meta.json()
    assert len(info["input_schema"]["features"]) == data.data.shape[1]
    response = await serving.client.post(
        f"/api/v1/models/{name}/predict", headers=headers, json={"inputs": rows.tolist()}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == name
    assert body["version"] == 1
    assert body["request_id"] == response.headers["x-request-id"]
    if name == "diabetes":
        assert info["task"] == "regression"
        assert info["classes"] is None
        assert np.allclose(body["predictions"], est.predict(rows), rtol=1e-6)
        assert "probabilities" not in body
    else:
        labels = [str(t) for t in data.target_names]
        assert info["classes"] == labels
        assert body["predictions"] == [labels[i] for i in est.predict(rows)]
        assert np.allclose(body["probabilities"], est.predict_proba(rows), atol=1e-5)


async def test_iris_labels_and_feature_dicts(serving: Service) -> None:
    headers = await serving.user_headers("guest")
    info = (await serving.client.get("/api/v1/models/iris", headers=headers)).json()
    assert [f["name"] for f in info["input_schema"]["features"]] == [
        "sepal_length",
        "sepal_width",
        "petal_length",
        "petal_width",
    ]
    assert info["allowed_roles"] == ["guest", "user", "admin"]
    row = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
    response = await serving.client.post(
        "/api/v1/models/iris/predict", headers=headers, json={"inputs": [row, [6.7, 3, 5.2, 2.3]]}
    )
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == ["setosa", "virginica"]
    # A guest sees only models that admit guests.
    listed = (await serving.client.get("/api/v1/models", headers=headers)).json()["items"]
    assert [m["name"] for m in listed] == ["iris"]
    hidden = await serving.client.post(
        "/api/v1/models/diabetes/predict", headers=headers, json={"inputs": [[0.0] * 10]}
    )
    problem(hidden, 404, "not_found")


async def test_onnx_upload_versions(serving: Service) -> None:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    headers = await serving.admin_headers()
    x, y = iris_xy()
    first = fit_quietly(LogisticRegression(max_iter=1000), x, y)
    second = fit_quietly(RandomForestClassifier(n_estimators=5, random_state=0), x, y)
    labels = ["a", "b", "c"]
    fields = {
        "class_labels": labels,
        "feature_names": ["f1", "f2", "f3", "f4"],
        "description": "test model",
    }
    r1 = await upload(serving, headers, "flowers", "m.onnx", onnx_bytes(first, 4), **fields)
    assert r1.status_code == 201, r1.text
    assert r1.json()["version"] == 1
    assert r1.json()["format"] == "onnx"
    assert r1.json()["task"] == "classification"
    assert len(r1.json()["sha256"]) == 64
    r2 = await upload(serving, headers, "flowers", "m.onnx", onnx_bytes(second, 4), **fields)
    assert r2.status_code == 201, r2.text
    assert r2.json()["version"] == 2
    for version, est in ((1, first), (2, second)):
        response = await serving.client.post(
            "/api/v1/models/flowers/predict",
            headers=headers,
            json={"inputs": x[:20].tolist(), "version": version},
        )
        assert response.status_code == 200, response.text
        assert response.json()["version"] == version
        assert response.json()["predictions"] == [labels[i] for i in est.predict(x[:20])]
    info = (await serving.client.get("/api/v1/models/flowers", headers=headers)).json()
    assert info["default_version"] == 2
    assert [v["version"] for v in info["versions"]] == [1, 2]
    # Deleting the default version makes the previous one the default.
    deleted = await serving.client.delete(
        "/api/v1/admin/models/flowers/versions/2", headers=headers
    )
    assert deleted.status_code == 204
    info = (await serving.client.get("/api/v1/models/flowers", headers=headers)).json()
    assert info["default_version"] == 1
    patched = await serving.client.patch(
        "/api/v1/admin/models/flowers", headers=headers, json={"description": "changed"}
    )
    assert patched.status_code == 200
    assert patched.json()["description"] == "changed"
    bad_patch = await serving.client.patch(
        "/api/v1/admin/models/flowers", headers=headers, json={"default_version": 9}
    )
    problem(bad_patch, 422, "validation_error")
    # Deleting the last version deletes the model.
    gone = await serving.client.delete("/api/v1/admin/models/flowers/versions/1", headers=headers)
    assert gone.status_code == 204
    problem(await serving.client.get("/api/v1/models/flowers", headers=headers), 404, "not_found")


async def test_pickle_refused(serving: Service, iris_logreg: Any) -> None:
    headers = await serving.admin_headers()
    for filename in ("m.pkl", "m.joblib"):
        response = await upload(serving, headers, "pickled", filename, pickle.dumps(iris_logreg))
        problem(response, 415, "unsafe_format")


async def test_untrusted_skops_type_named(serving: Service) -> None:
    from sklearn.linear_model import LogisticRegression

    class HomemadeEstimator(LogisticRegression):
        pass

    x, y = iris_xy()
    blob = skops_bytes(fit_quietly(HomemadeEstimator(max_iter=1000), x, y))
    response = await upload(serving, await serving.admin_headers(), "homemade", "m.skops", blob)
    body = problem(response, 422, "validation_error")
    assert "HomemadeEstimator" in body["detail"]


async def test_upload_refusals(serving: Service, iris_logreg: Any) -> None:
    headers = await serving.admin_headers()
    data = onnx_bytes(iris_logreg, 4)
    problem(await upload(serving, headers, "bad name!", "m.onnx", data), 422, "validation_error")
    problem(
        await upload(serving, headers, "m", "m.onnx", data, task="clustering"),
        422,
        "validation_error",
    )
    problem(await upload(serving, headers, "m", "m.txt", data), 415, "unsupported_media_type")
    user = await serving.user_headers("user")
    problem(await upload(serving, user, "m", "m.onnx", data), 403, "permission_denied")


async def test_upload_size_limit(make_service: Any, iris_logreg: Any) -> None:

    async with make_service(max_model_bytes=2048) as svc:
        big = onnx_bytes(iris_logreg, 4) + b"\0" * 4096
        response = await upload(svc, await svc.admin_headers(), "big", "m.onnx", big)
        problem(response, 413, "payload_too_large")


async def test_admin_only_model_hidden_from_users(serving: Service, iris_logreg: Any) -> None:
    admin = await serving.admin_headers()
    created = await upload(
        serving, admin, "secret", "m.onnx", onnx_bytes(iris_logreg, 4), allowed_roles=["admin"]
    )
    assert created.status_code == 201, created.text
    user = await serving.user_headers("user")
    names = [
        m["name"]
        for m in (await serving.client.get("/api/v1/models", headers=user)).json()["items"]
    ]
    assert "secret" not in names
    assert "iris" in names
    problem(await serving.client.get("/api/v1/models/secret", headers=user), 404, "not_found")
    problem(
        await serving.client.post(
            "/api/v1/models/secret/predict", headers=user, json={"inputs": [[1, 2, 3, 4]]}
        ),
        404,
        "not_found",
    )
    problem(await serving.client.get("/v2/models/secret", headers=user), 404, "not_found")
    infer = {
        "inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": [1, 2, 3, 4]}]
    }
    refused = await serving.client.post("/v2/models/secret/infer", headers=user, json=infer)
    assert problem(refused, 404, "not_found")["error"]
    # The admin sees it; after a PATCH admitting users, so does the user.
    assert (await serving.client.get("/api/v1/models/secret", headers=admin)).status_code == 200
    patched = await serving.client.patch(
        "/api/v1/admin/models/secret", headers=admin, json={"allowed_roles": ["user"]}
    )
    assert patched.status_code == 200, patched.text
    ok = await serving.client.post(
        "/api/v1/models/secret/predict", headers=user, json={"inputs": [[1, 2, 3, 4]]}
    )
    assert ok.status_code == 200, ok.text


BAD_ROWS: list[tuple[str, str, str]] = [
    ('{"inputs": [[5.1, 3.5, NaN, 0.2]]}', "petal_length", "NaN"),
    ('{"inputs": [[5.1, 3.5, 1.4, Infinity]]}', "petal_width", "Infinity"),
    ('{"inputs": [[5.1, 3.5, 1.4, 0.2], [5.1, null, 1.4, 0.2]]}', "sepal_width", "null"),
    ('{"inputs": [["5.1", 3.5, 1.4, 0.2]]}', "sepal_length", "string"),
    ('{"inputs": [[true, 3.5, 1.4, 0.2]]}', "sepal_length", "boolean"),
    ('{"inputs": [[5.1, 3.5, 1.4]]}', "row 0", "3 values"),
    (
        '{"inputs": [{"sepal_length": 1, "sepal_width": 1, "petal_length": 1}]}',
        "petal_width",
        "missing",
    ),
    (
        '{"inputs": [{"sepal_length": 1, "sepal_width": 1, "petal_length": 1, "petal_width": 1,'
        ' "colour": 2}]}',
        "colour",
        "unknown",
    ),
    ('{"inputs": [7]}', "row 0", "list"),
    # An integer too large for a float (Python's json reads any length) must not be a 500.
    ('{"inputs": [[1' + "0" * 400 + ", 3.5, 1.4, 0.2]]}", "sepal_length", "out of range"),
    # Beyond float32: what many models compute in; one such row must not break a batch.
    ('{"inputs": [[5.1, 3.5, 1e39, 0.2]]}', "petal_length", "out of range"),
    ('{"inputs": []}', "inputs", "at least one"),
]


@pytest.mark.parametrize(("body", "feature", "reason"), BAD_ROWS)
async def test_bad_inputs_named(serving: Service, body: str, feature: str, reason: str) -> None:
    headers = {**await serving.admin_headers(), "content-type": "application/json"}
    response = await serving.client.post(
        "/api/v1/models/iris/predict", headers=headers, content=body
    )
    problem_body = problem(response, 422, "validation_error")
    assert feature in problem_body["detail"]
    assert reason in problem_body["detail"]
    assert problem_body["errors"][0]["pointer"].startswith("/inputs")


async def test_too_many_rows_and_unknown_fields(make_service: Any) -> None:

    async with make_service(max_batch_rows=5) as svc:
        headers = await svc.admin_headers()
        many = await svc.client.post(
            "/api/v1/models/iris/predict", headers=headers, json={"inputs": [[1, 2, 3, 4]] * 6}
        )
        problem(many, 413, "payload_too_large")
        extra = await svc.client.post(
            "/api/v1/models/iris/predict",
            headers=headers,
            json={"inputs": [[1, 2, 3, 4]], "colour": 1},
        )
        problem(extra, 422, "validation_error")
        unknown = await svc.client.post(
            "/api/v1/models/iris/predict",
            headers=headers,
            json={"inputs": [[1, 2, 3, 4]], "version": 7},
        )
        problem(unknown, 404, "not_found")
        anonymous = await svc.client.post(
            "/api/v1/models/iris/predict", json={"inputs": [[1, 2, 3, 4]]}
        )
        assert anonymous.status_code == 401


async def test_predict_audit_holds_no_inputs(serving: Service) -> None:
    from sqlalchemy import select

    from mlgate.audit.tables import AuditEventRow

    headers = await serving.admin_headers()
    response = await serving.client.post(
        "/api/v1/models/iris/predict", headers=headers, json={"inputs": [[5.1, 3.5, 1.4, 0.2]]}
    )
    assert response.status_code == 200
    async with serving.ctx.db.session() as session:
        rows = (
            (
                await session.execute(
                    select(AuditEventRow).where(AuditEventRow.action == "model.predict")
                )
            )
            .scalars()
            .all()
        )
    assert [r.details for r in rows] == [{"model": "iris", "version": 1, "rows": 1}]
    assert rows[0].outcome == "success"
    assert "5.1" not in str(rows[0].details)


@pytest.mark.parametrize("same_bytes", [True, False], ids=["same-bytes", "different-bytes"])
async def test_concurrent_uploads_of_one_name_get_consecutive_versions(
    serving: Service, same_bytes: bool
) -> None:
    from sklearn.linear_model import LogisticRegression

    headers = await serving.admin_headers()
    x, y = iris_xy()
    blobs = [
        onnx_bytes(
            fit_quietly(LogisticRegression(max_iter=1000, C=1.0 if same_bytes else 1.0 + i), x, y),
            4,
        )
        for i in range(4)
    ]
    # Warm the sandbox verdicts, so the uploads below reach storage and publishing together.
    for i, blob in enumerate(blobs):
        assert (await upload(serving, headers, f"warm{i}", "m.onnx", blob)).status_code == 201
    for round_ in range(2):  # a new name, then an existing one
        answers = await asyncio.gather(
            *(upload(serving, headers, "raced", "m.onnx", blob) for blob in blobs)
        )
        assert [a.status_code for a in answers] == [201] * 4, [a.text for a in answers]
        numbers = sorted(a.json()["version"] for a in answers)
        assert numbers == [4 * round_ + n for n in (1, 2, 3, 4)]
    info = (await serving.client.get("/api/v1/models/raced", headers=headers)).json()
    assert [v["version"] for v in info["versions"]] == list(range(1, 9))
    assert info["default_version"] in range(5, 9)
    for version in (1, 8):
        response = await serving.client.post(
            "/api/v1/models/raced/predict",
            headers=headers,
            json={"inputs": x[:3].tolist(), "version": version},
        )
        assert response.status_code == 200, response.text


def square_onnx() -> bytes:
    """A regression y = x * x in float32: finite inputs overflow it to infinity."""
    from onnx import TensorProto, helper

    node = helper.make_node("Mul", ["input", "input"], ["y"])
    graph = helper.make_graph(
        [node],
        "square",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


async def test_non_finite_model_output_is_422(serving: Service) -> None:
    headers = await serving.admin_headers()
    created = await upload(serving, headers, "square", "sq.onnx", square_onnx(), task="regression")
    assert created.status_code == 201, created.text
    ok = await serving.client.post(
        "/api/v1/models/square/predict", headers=headers, json={"inputs": [[3.0]]}
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["predictions"] == [9.0]
    overflow = await serving.client.post(
        "/api/v1/models/square/predict", headers=headers, json={"inputs": [[2.0], [1e20]]}
    )
    body = problem(overflow, 422, "validation_error")
    assert "row 1" in body["detail"]
    assert body["errors"][0]["pointer"] == "/inputs/1"
    infer = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1], "data": [1e20]}]}
    v2 = await serving.client.post("/v2/models/square/infer", headers=headers, json=infer)
    assert "non-finite" in problem(v2, 422, "validation_error")["error"]


async def test_upload_and_first_load_hash_off_the_event_loop(
    serving: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sklearn.ensemble import RandomForestClassifier
    from tests.serving.test_storage import HashWatch

    from mlgate.serving import router, service, storage

    x, y = iris_xy()
    forest = fit_quietly(RandomForestClassifier(n_estimators=30, random_state=1), x, y)
    blob = skops_bytes(forest)  # converted to ONNX at upload: two artifacts to hash
    headers = await serving.admin_headers()
    watch = HashWatch()
    for module in (router, service, storage):
        monkeypatch.setattr(module, "hashlib", watch)
    created = await upload(serving, headers, "forest", "f.skops", blob)
    assert created.status_code == 201, created.text
    response = await serving.client.post(
        "/api/v1/models/forest/predict", headers=headers, json={"inputs": x[:5].tolist()}
    )
    assert response.status_code == 200, response.text
    assert watch.hashed > len(blob)  # the upload, its conversion, the conversion loaded
    assert watch.on_loop == 0


async def test_malformed_body_answer_is_documented(serving: Service) -> None:
    headers = {**await serving.admin_headers(), "content-type": "application/json"}
    response = await serving.client.post(
        "/api/v1/models/iris/predict", headers=headers, content=b"\xff\r\xfe"
    )
    problem(response, 400, "invalid_request")
    schema = (await serving.client.get("/openapi.json")).json()
    for path, method in (
        ("/api/v1/models/{name}/predict", "post"),
        ("/v2/models/{name}/infer", "post"),
    ):
        documented = schema["paths"][path][method]["responses"]
        assert {"400", "503"} <= set(documented), path


async def test_upload_exactly_at_the_size_limit(make_service: Any) -> None:
    from sklearn.ensemble import RandomForestClassifier
    from tests.serving.conftest import iris_xy

    x, y = iris_xy()
    data = onnx_bytes(RandomForestClassifier(n_estimators=3, random_state=0).fit(x, y), 4)
    assert len(data) > 1024  # the smallest MAX_MODEL_BYTES Settings accept
    async with make_service(max_model_bytes=len(data)) as svc:
        headers = await svc.admin_headers()
        accepted = await upload(svc, headers, "edge", "m.onnx", data)
        assert accepted.status_code == 201, accepted.text
        refused = await upload(svc, headers, "edge2", "m.onnx", data + b"\0")
        problem(refused, 413, "payload_too_large")
