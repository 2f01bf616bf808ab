"""The model runtime: a small ABC every served model implements, and its outputs.

Implementations: `OnnxModel` (onnxruntime, built from bytes) and `SklearnModel` (an
estimator loaded by skops, or pickle when an admin allowed it). Both answer a batch of
rows with class indices + probabilities (classifiers) or numbers (regressors); turning
indices into labels happens at the edge, so batches split cheaply.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Task = Literal["classification", "regression"]
FeatureType = Literal["number", "integer"]
FloatArray = npt.NDArray[np.floating[Any]]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    type: FeatureType = "number"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What callers need to know about one model version."""

    name: str
    version: int
    task: Task
    features: tuple[Feature, ...]
    classes: tuple[str, ...] | None
    format: str
    serving_format: str

    @property
    def width(self) -> int:
        return len(self.features)


@dataclass(frozen=True, slots=True)
class Outputs:
    """Predictions for a batch. Exactly one of `class_index` / `values` is set."""

    class_index: IntArray | None = None
    probabilities: FloatArray | None = None
    values: FloatArray | None = None

    def __len__(self) -> int:
        arr = self.class_index if self.class_index is not None else self.values
        return 0 if arr is None else int(arr.shape[0])

    def slice(self, start: int, stop: int) -> Outputs:
        def cut(arr: Any) -> Any:
            return None if arr is None else arr[start:stop]

        return Outputs(cut(self.class_index), cut(self.probabilities), cut(self.values))


class Model(ABC):
    """A loaded, servable model. `predict` must be thread-safe: it runs in an executor,
    possibly from several threads at once when batching is off."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

    @property
    def metadata(self) -> ModelSpec:
        return self.spec

    @abstractmethod
    def load(self) -> None:
        """Build whatever `predict` needs (session, estimator). Called once, off-loop."""

    @abstractmethod
    def predict(self, batch: FloatArray) -> Outputs:
        """Answer a [rows, features] float64 batch."""


def class_lookup(raw_classes: list[Any]) -> dict[Any, int]:
    """Map a model's raw class values (ints or strings, as JSON keeps them) to indices."""
    lookup: dict[Any, int] = {}
    for i, raw in enumerate(raw_classes):
        lookup[raw] = i
        lookup[str(raw)] = i
    return lookup


def labels_to_index(labels: Any, lookup: dict[Any, int]) -> IntArray:
    values = np.asarray(labels).reshape(-1)
    if values.dtype.kind in "SO":
        items = [v.decode() if isinstance(v, bytes) else v for v in values.tolist()]
    else:
        items = values.tolist()
    try:
        return np.fromiter((lookup[v] for v in items), dtype=np.int64, count=len(items))
    except KeyError as exc:
        raise RuntimeError(f"the model answered an unknown class {exc.args[0]!r}") from None


class OnnxModel(Model):
    """An ONNX graph served by onnxruntime. `runtime` says which outputs mean what:
    input_name, input_dtype, label_output, prob_output, prob_zipmap, value_output,
    raw_classes (see loaders.describe_onnx)."""

    def __init__(self, spec: ModelSpec, data: bytes, runtime: dict[str, Any]) -> None:
        super().__init__(spec)
        self._data: bytes | None = data
        self.runtime = runtime
        self._lookup = class_lookup(list(runtime.get("raw_classes") or []))
        self._session: Any = None

    def load(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # One thread per call: batches already parallelize across models and requests,
        # and oversubscribing two cores makes tail latency worse.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(
            self._data, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._data = None  # the session holds its own copy

    def predict(self, batch: FloatArray) -> Outputs:
        rt = self.runtime
        feed = {rt["input_name"]: np.ascontiguousarray(batch, dtype=np.dtype(rt["input_dtype"]))}
        names = [
            n for n in (rt.get("label_output"), rt.get("prob_output"), rt.get("value_output")) if n
        ]
        result = dict(zip(names, self._session.run(names, feed), strict=True))
        if self.spec.task == "regression":
            values = np.asarray(result[rt["value_output"]], dtype=np.float64).reshape(-1)
            return Outputs(values=values)
        probs = None
        if rt.get("prob_output"):
            raw = result[rt["prob_output"]]
            if rt.get("prob_zipmap"):
                keys = list(rt["raw_classes"])
                raw = [[row[k] for k in keys] for row in raw]
            probs = np.asarray(raw, dtype=np.float32).reshape(batch.shape[0], -1)
        if rt.get("label_output"):
            index = labels_to_index(result[rt["label_output"]], self._lookup)
        else:
            assert probs is not None
            index = np.argmax(probs, axis=1).astype(np.int64)
        return Outputs(class_index=index, probabilities=probs)


class SklearnModel(Model):
    """A scikit-learn estimator, used when skl2onnx cannot convert it faithfully."""

    def __init__(self, spec: ModelSpec, estimator: Any) -> None:
        super().__init__(spec)
        self.estimator = estimator
        self._lookup: dict[Any, int] = {}

    def load(self) -> None:
        if self.spec.task == "classification":
            self._lookup = class_lookup(np.asarray(self.estimator.classes_).tolist())

    def predict(self, batch: FloatArray) -> Outputs:
        if self.spec.task == "regression":
            values = np.asarray(self.estimator.predict(batch), dtype=np.float64).reshape(-1)
            return Outputs(values=values)
        index = labels_to_index(self.estimator.predict(batch), self._lookup)
        probs = None
        if hasattr(self.estimator, "predict_proba"):
            probs = np.asarray(self.estimator.predict_proba(batch), dtype=np.float32)
        return Outputs(class_index=index, probabilities=probs)
