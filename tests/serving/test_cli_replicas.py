"""`mlgate models` commands, and a model uploaded on one replica served by another."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.conftest import TEST_KEK, Service
from tests.serving.conftest import iris_xy, onnx_bytes
from tests.serving.test_api import upload
from typer.testing import CliRunner

import mlgate.tables  # noqa: F401
from mlgate.serving.cli import app
from mlgate.serving.registry import ModelRegistry


def test_cli_add_list_remove(
    tmp_path: Path, iris_logreg: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fresh, empty database: the command migrates it itself.
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("MLGATE_DATABASE_URL", url)
    monkeypatch.setenv("MLGATE_KEY_ENCRYPTION_KEY", TEST_KEK)
    monkeypatch.setenv("MLGATE_DATA_DIR", str(tmp_path))
    model = tmp_path / "iris.onnx"
    model.write_bytes(onnx_bytes(iris_logreg, 4))
    runner = CliRunner()
    added = runner.invoke(
        app,
        [
            "add",
            str(model),
            "--name",
            "cli-iris",
            "--allowed-roles",
            "user",
            "--allowed-roles",
            "guest",
        ],
    )
    assert added.exit_code == 0, added.output
    assert "version 1" in added.output
    listed = runner.invoke(app, ["list"])
    assert listed.exit_code == 0
    assert "cli-iris" in listed.output
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"nope")
    refused = runner.invoke(app, ["add", str(bad), "--name", "x"])
    assert refused.exit_code == 1
    assert "not a valid ONNX" in refused.output
    assert "Traceback" not in refused.output
    assert runner.invoke(app, ["remove", "cli-iris"]).exit_code == 0
    missing = runner.invoke(app, ["remove", "cli-iris"])
    assert missing.exit_code == 1
    assert "not found" in missing.output


async def test_other_replica_serves_new_model(serving: Service, iris_logreg: Any) -> None:
    replica = ModelRegistry(serving.settings, serving.ctx.db, poll_seconds=0.2)
    await replica.start()
    try:
        headers = await serving.admin_headers()
        created = await upload(serving, headers, "fresh", "m.onnx", onnx_bytes(iris_logreg, 4))
        assert created.status_code == 201
        deadline = asyncio.get_running_loop().time() + 5
        while "fresh" not in replica.catalogue:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.1)
        info = replica.catalogue["fresh"]
        assert info.default is not None
        x, _ = iris_xy()
        out = await replica.predict(info, info.default, x[:10])
        assert out.class_index is not None
        assert np.array_equal(out.class_index, iris_logreg.predict(x[:10]))
    finally:
        await replica.stop()
