"""Dynamic batching benchmark: requests/s at 1, 16 and 64 concurrent clients, batching
on vs off, for the ONNX iris model and a 100-tree forest served through scikit-learn.

Runs the serving path in process (input validation, batcher or executor, model), so
the numbers measure batching rather than HTTP and auth overhead; no network traffic.
Usage: python bench/serving.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from mlgate.serving.batching import Batcher
from mlgate.serving.checks import describe_onnx
from mlgate.serving.inputs import rows_to_array
from mlgate.serving.runtime import Feature, Model, ModelSpec, OnnxModel, SklearnModel

CLIENTS = (1, 16, 64)


def build_models() -> dict[str, Model]:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    features = tuple(Feature(f"x{i}") for i in range(4))
    classes = ("setosa", "versicolor", "virginica")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logreg = LogisticRegression(max_iter=1000).fit(x, y)
        data = convert_sklearn(logreg, initial_types=[("input", DoubleTensorType([None, 4]))],
                               options={id(logreg): {"zipmap": False}}).SerializeToString()
        forest = RandomForestClassifier(n_estimators=100, random_state=0).fit(x, y)
    onnx_spec = ModelSpec("iris", 1, "classification", features, classes, "onnx", "onnx")
    iris = OnnxModel(onnx_spec, data, describe_onnx(data, {})["runtime"])
    sk_spec = ModelSpec("forest", 1, "classification", features, classes, "skops", "skops")
    sk = SklearnModel(sk_spec, forest)
    for model in (iris, sk):
        model.load()
    return {"onnx-iris": iris, "sklearn-forest-100": sk}


async def measure(model: Model, clients: int, batching: bool, seconds: float,
                  executor: ThreadPoolExecutor) -> float:
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


async def main(seconds: float) -> None:
    models = build_models()
    executor = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2))
    print(f"{'model':20} {'clients':>7} {'off req/s':>10} {'on req/s':>10} {'ratio':>6}")
    for name, model in models.items():
        for clients in CLIENTS:
            off = await measure(model, clients, False, seconds, executor)
            on = await measure(model, clients, True, seconds, executor)
            print(f"{name:20} {clients:7d} {off:10.0f} {on:10.0f} {on / off:6.2f}")
    executor.shutdown()


def cli(argv: Any = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    args = parser.parse_args(argv)
    asyncio.run(main(args.seconds))


if __name__ == "__main__":
    cli()
