"""Dynamic batching: each caller gets exactly its own rows, whatever the interleaving."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.serving.conftest import iris_xy, onnx_bytes

from mlgate.errors import Unavailable
from mlgate.serving.batching import Batcher
from mlgate.serving.runtime import Feature, ModelSpec, OnnxModel, Outputs

EXECUTOR = ThreadPoolExecutor(max_workers=2)


class Recorder:
    """A regression 'model': the row sum, and how many calls it took."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, batch: Any) -> Outputs:
        with self.lock:
            self.calls.append(int(batch.shape[0]))
        return Outputs(values=batch.sum(axis=1))


async def test_concurrent_requests_share_calls() -> None:
    model = Recorder()
    batcher = Batcher(model, EXECUTOR, max_rows=64, max_wait_s=0.005)
    batches = [np.full((2, 3), float(i)) for i in range(40)]
    results = await asyncio.gather(*(batcher.submit(b) for b in batches))
    for i, out in enumerate(results):
        assert out.values is not None
        assert out.values.tolist() == [3.0 * i, 3.0 * i]
    assert sum(model.calls) == 80
    assert len(model.calls) < 40  # coalesced
    assert max(model.calls) <= 64
    await batcher.close()


async def test_lone_request_is_not_delayed() -> None:
    batcher = Batcher(Recorder(), EXECUTOR, max_rows=64, max_wait_s=0.5)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(5):
        await batcher.submit(np.ones((1, 3)))
    assert loop.time() - start < 0.4
    await batcher.close()


async def test_oversized_request_still_served() -> None:
    batcher = Batcher(Recorder(), EXECUTOR, max_rows=4, max_wait_s=0.001)
    out = await batcher.submit(np.ones((10, 2)))
    assert len(out) == 10
    await batcher.close()


async def test_model_failure_reaches_every_caller() -> None:
    def broken(batch: Any) -> Outputs:
        raise RuntimeError("boom")

    batcher = Batcher(broken, EXECUTOR, max_rows=8, max_wait_s=0.001)
    results = await asyncio.gather(
        *(batcher.submit(np.ones((1, 2))) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)
    assert (
        len(await Batcher(Recorder(), EXECUTOR, max_rows=8, max_wait_s=0).submit(np.ones((1, 2))))
        == 1
    )
    await batcher.close()


async def test_one_bad_request_does_not_fail_its_batch_mates() -> None:
    def picky(batch: Any) -> Outputs:
        if (batch < 0).any():
            raise ValueError("negative input")
        return Outputs(values=batch.sum(axis=1))

    batcher = Batcher(picky, EXECUTOR, max_rows=64, max_wait_s=0.005)
    batches = [np.full((1, 2), -1.0 if i == 3 else float(i)) for i in range(8)]
    results = await asyncio.gather(*(batcher.submit(b) for b in batches), return_exceptions=True)
    assert isinstance(results[3], ValueError)
    for i, out in enumerate(results):
        if i != 3:
            assert isinstance(out, Outputs)
            assert out.values is not None
            assert out.values.tolist() == [2.0 * i]
    await batcher.close()


async def test_close_answers_every_waiting_caller() -> None:
    release = threading.Event()

    def stuck(batch: Any) -> Outputs:
        release.wait(5)
        return Outputs(values=batch.sum(axis=1))

    batcher = Batcher(stuck, EXECUTOR, max_rows=1, max_wait_s=0)
    direct = asyncio.ensure_future(batcher.submit(np.ones((1, 2))))  # idle: called directly
    await asyncio.sleep(0.05)
    running = asyncio.ensure_future(batcher.submit(np.ones((1, 2))))  # a batch, in the executor
    await asyncio.sleep(0.05)
    queued = asyncio.ensure_future(batcher.submit(np.ones((1, 2))))
    await asyncio.sleep(0.01)
    try:
        await asyncio.wait_for(batcher.close(grace_s=0.1), 2)
        results = await asyncio.wait_for(asyncio.gather(running, queued, return_exceptions=True), 2)
    finally:
        release.set()
    assert all(isinstance(r, Unavailable) for r in results), results
    assert len(await asyncio.wait_for(direct, 5)) == 1  # its own call still answers it
    with pytest.raises(Unavailable):
        await batcher.submit(np.ones((1, 2)))


async def test_close_serves_what_is_queued_within_the_grace_period() -> None:
    batcher = Batcher(Recorder(), EXECUTOR, max_rows=1, max_wait_s=0)
    futures = [asyncio.ensure_future(batcher.submit(np.ones((1, 2)))) for _ in range(5)]
    await asyncio.sleep(0)
    await batcher.close()
    assert [len(await f) for f in futures] == [1] * 5


@pytest.fixture(scope="module")
def iris_onnx() -> OnnxModel:
    from sklearn.linear_model import LogisticRegression
    from tests.serving.conftest import fit_quietly

    x, y = iris_xy()
    est = fit_quietly(LogisticRegression(max_iter=1000), x, y)
    from mlgate.serving.checks import describe_onnx

    data = onnx_bytes(est, 4)
    report = describe_onnx(data, {})
    spec = ModelSpec(
        "iris",
        1,
        "classification",
        tuple(Feature(f"x{i}") for i in range(4)),
        ("0", "1", "2"),
        "onnx",
        "onnx",
    )
    model = OnnxModel(spec, data, report["runtime"])
    model.load()
    return model


rows_strategy = st.lists(
    st.lists(st.floats(-10, 10, allow_nan=False, width=32), min_size=4, max_size=4),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    requests=st.lists(rows_strategy, min_size=1, max_size=24),
    max_rows=st.integers(1, 64),
    wait_ms=st.sampled_from([0.0, 0.5, 2.0]),
)
def test_batched_answers_equal_unbatched(
    iris_onnx: OnnxModel, requests: list[list[list[float]]], max_rows: int, wait_ms: float
) -> None:
    arrays = [np.asarray(r, dtype=np.float64) for r in requests]
    expected = [iris_onnx.predict(a) for a in arrays]

    async def run() -> list[Outputs]:
        batcher = Batcher(iris_onnx.predict, EXECUTOR, max_rows=max_rows, max_wait_s=wait_ms / 1e3)
        try:
            return await asyncio.gather(*(batcher.submit(a) for a in arrays))
        finally:
            await batcher.close()

    got = asyncio.run(run())
    for exp, out in zip(expected, got, strict=True):
        assert out.class_index is not None
        assert exp.class_index is not None
        assert np.array_equal(out.class_index, exp.class_index)
        assert out.probabilities is not None
        assert exp.probabilities is not None
        assert np.allclose(out.probabilities, exp.probabilities, atol=1e-6)
