"""Fixtures of the serving unit tests: a throwaway database and small models."""

from __future__ import annotations

import io
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mlgate.tables  # noqa: F401 - every table on the metadata
from mlgate.db import Base, Database


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'serving.db'}")
    async with database.engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    yield database
    await database.dispose()


def iris_xy() -> tuple[Any, Any]:
    from sklearn.datasets import load_iris

    data = load_iris()
    return data.data, data.target


def fit_quietly(estimator: Any, x: Any, y: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return estimator.fit(x, y)


def onnx_bytes(estimator: Any, width: int, *, zipmap: bool = False) -> bytes:
    """An ONNX file made here with skl2onnx, as a user would."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    options = {id(estimator): {"zipmap": zipmap}} if hasattr(estimator, "classes_") else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proto = convert_sklearn(
            estimator, initial_types=[("input", FloatTensorType([None, width]))], options=options
        )
    return bytes(proto.SerializeToString())


def skops_bytes(estimator: Any) -> bytes:
    import skops.io as sio

    buffer = io.BytesIO()
    buffer.write(sio.dumps(estimator))
    return buffer.getvalue()


@pytest.fixture(scope="session")
def iris_logreg() -> Any:
    from sklearn.linear_model import LogisticRegression

    x, y = iris_xy()
    return fit_quietly(LogisticRegression(max_iter=1000), x, y)


@pytest.fixture(scope="session")
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


@pytest.fixture
async def serving(make_service: Any) -> AsyncIterator[Any]:
    """A fresh app with the demo models registered."""
    async with make_service() as service:
        yield service
