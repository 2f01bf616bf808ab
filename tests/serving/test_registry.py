"""The registry under failure: unloadable versions, stored pickles, failing models, 404s."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from sqlalchemy import select
from tests.conftest import Service
from tests.serving.conftest import fit_quietly
from tests.serving.test_api import problem, upload

from mlgate.audit.tables import AuditEventRow
from mlgate.serving import registry as registry_module
from mlgate.serving import repository as repo


def kernel_ridge() -> Any:
    """An estimator skl2onnx cannot convert: served as the uploaded file itself."""
    from sklearn.datasets import load_diabetes
    from sklearn.kernel_ridge import KernelRidge

    x, y = load_diabetes(return_X_y=True)
    return fit_quietly(KernelRidge(alpha=0.5), x[:50], y[:50])


async def test_stored_pickle_not_loaded_once_pickle_is_off(
    make_service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with make_service(allow_pickle=True) as svc:
        headers = await svc.admin_headers()
        created = await upload(svc, headers, "pickled", "m.pkl", pickle.dumps(kernel_ridge()))
        assert created.status_code == 201, created.text
        row = [[0.01] * 10]
        ok = await svc.client.post(
            "/api/v1/models/pickled/predict", headers=headers, json={"inputs": row}
        )
        assert ok.status_code == 200, ok.text

        # An operator turns pickle off: the stored pickle must not be unpickled again.
        svc.ctx.settings.allow_pickle = False
        reg = svc.ctx.models
        reg._loaded.clear()  # as after a restart
        builds = 0
        real_build = registry_module.build_model

        def counting_build(*args: Any, **kwargs: Any) -> Any:
            nonlocal builds
            builds += 1
            return real_build(*args, **kwargs)

        monkeypatch.setattr(registry_module, "build_model", counting_build)
        for _ in range(5):
            refused = await svc.client.post(
                "/api/v1/models/pickled/predict", headers=headers, json={"inputs": row}
            )
            body = problem(refused, 503, "unavailable")
            assert "cannot be loaded" in body["detail"]
            assert "Retry-After" in refused.headers
        assert builds == 1  # a failed load is not retried by every request
        ready = await svc.client.get("/v2/models/pickled/ready", headers=headers)
        assert problem(ready, 503, "unavailable")["error"]


async def test_model_failure_is_audited(serving: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*args: Any) -> Any:
        raise RuntimeError("the runtime fell over")

    monkeypatch.setattr(serving.ctx.models, "predict", broken)
    headers = await serving.admin_headers()
    response = await serving.client.post(
        "/api/v1/models/iris/predict", headers=headers, json={"inputs": [[1, 2, 3, 4]]}
    )
    problem(response, 500, "internal_error")
    assert "fell over" not in response.text
    async with serving.ctx.db.session() as session:
        events = (
            (
                await session.execute(
                    select(AuditEventRow).where(AuditEventRow.action == "model.predict")
                )
            )
            .scalars()
            .all()
        )
    assert [(e.outcome, e.status, e.details["rows"]) for e in events] == [("failure", 500, 1)]


async def test_unknown_models_do_not_flood_the_catalogue(
    serving: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = await serving.user_headers("user")
    reads = 0
    real = repo.catalogue

    async def counting(session: Any) -> Any:
        nonlocal reads
        reads += 1
        return await real(session)

    monkeypatch.setattr(repo, "catalogue", counting)
    for _ in range(30):
        response = await serving.client.post(
            "/api/v1/models/nope/predict", headers=headers, json={"inputs": [[1]]}
        )
        problem(response, 404, "not_found")
    assert reads < 10


async def test_upload_survives_its_artifacts_being_collected_meanwhile(
    serving: Service, iris_logreg: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delete elsewhere may collect the very bytes an upload has just stored (same
    content, no version referencing it yet): the upload stores them again, never 409."""
    from tests.serving.conftest import onnx_bytes

    data = onnx_bytes(iris_logreg, 4)
    collected: list[str] = []
    real = repo.ensure_model

    async def collect_first(session: Any, values: dict[str, Any]) -> None:
        if not collected:
            async with serving.ctx.db.session() as other:
                collected.extend(
                    await repo.collect_artifacts(other, candidates=None, created_before=None)
                )
        await real(session, values)

    monkeypatch.setattr(repo, "ensure_model", collect_first)
    headers = await serving.admin_headers()
    created = await upload(serving, headers, "collected", "m.onnx", data)
    assert created.status_code == 201, created.text
    assert created.json()["sha256"] in collected  # the race really happened
    response = await serving.client.post(
        "/api/v1/models/collected/predict", headers=headers, json={"inputs": [[5.1, 3.5, 1.4, 0.2]]}
    )
    assert response.status_code == 200, response.text
