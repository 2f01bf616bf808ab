"""Safe model formats: detection, ONNX graph checks, skops archive bounds, and building
servable models from stored bytes.

Everything an upload must pass runs first in the sandbox (see `sandbox.py`); the
checks here run again at every load, because the database is not more trusted than
the upload was.
"""

from __future__ import annotations

import io
import logging
import zipfile
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from mlgate.errors import ErrorCode, MlgateError, UnsafeFormat, ValidationFailed
from mlgate.serving.runtime import Model, ModelSpec, OnnxModel, SklearnModel

log = logging.getLogger("mlgate.serving")

EXTENSIONS = {
    ".onnx": "onnx",
    ".skops": "skops",
    ".pkl": "pickle",
    ".pickle": "pickle",
    ".joblib": "joblib",
}
PICKLE_FORMATS = frozenset({"pickle", "joblib"})
ONNX_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})

# Types trusted beyond skops' own defaults (which already cover scikit-learn's
# estimators). `Tree` is on skops' review list because scikit-learn indexes its node
# arrays unchecked; we trust it only together with `check_trees`, which bounds them.
DEFAULT_TRUSTED_TYPES: tuple[str, ...] = ("sklearn.tree._tree.Tree",)


def trusted_types(settings: Any) -> list[str]:
    """The server's skops allow-list: the defaults plus the configured extras (never
    derived from the uploaded file)."""
    configured = getattr(settings, "skops_trusted_types", None) or []
    return list(dict.fromkeys([*DEFAULT_TRUSTED_TYPES, *configured]))


def detect_format(filename: str | None) -> str:
    name = (filename or "").lower()
    for ext, fmt in EXTENSIONS.items():
        if name.endswith(ext):
            return fmt
    raise MlgateError(
        "Upload a .onnx or .skops file",
        status=415,
        code=ErrorCode.UNSUPPORTED_MEDIA_TYPE,
        title="Unsupported model format",
    )


def _graphs(graph: Any) -> Iterator[Any]:
    """A graph and every subgraph of If/Loop/Scan nodes, depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _graphs(attr.g)
            for sub in attr.graphs:
                yield from _graphs(sub)


def _sparse(sparse: Any) -> Iterator[Any]:
    yield sparse.values
    yield sparse.indices


def _tensors(graph: Any) -> Iterable[Any]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from _sparse(sparse)
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("sparse_tensor"):
                yield from _sparse(attr.sparse_tensor)
            for sparse in attr.sparse_tensors:
                yield from _sparse(sparse)


def check_onnx(data: bytes) -> Any:
    """Parse an ONNX model and refuse anything but standard operators and inline data."""
    import onnx

    try:
        proto = onnx.load_model_from_string(data)
    except Exception:
        raise ValidationFailed("The file is not a valid ONNX model") from None
    for opset in proto.opset_import:
        if opset.domain not in ONNX_DOMAINS:
            raise ValidationFailed(f"ONNX operator domain '{opset.domain}' is not allowed")
    if len(proto.functions):
        raise ValidationFailed("ONNX models with local functions are not supported")
    if len(proto.training_info):
        raise ValidationFailed("ONNX models with training information are not supported")
    for graph in _graphs(proto.graph):
        for node in graph.node:
            if node.domain not in ONNX_DOMAINS:
                raise ValidationFailed(
                    f"ONNX operator '{node.domain}.{node.op_type}' is not in an allowed domain"
                )
        for tensor in _tensors(graph):
            if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
                raise ValidationFailed(
                    f"ONNX tensor '{tensor.name}' uses external data, which is not allowed"
                )
    return proto


def check_skops_archive(data: bytes, max_model_bytes: int) -> None:
    """Bound a skops zip before anything inflates it (zip bombs)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
    except zipfile.BadZipFile:
        raise ValidationFailed("The file is not a valid skops archive") from None
    total = sum(info.file_size for info in infos)
    packed = sum(info.compress_size for info in infos)
    if total > 4 * max_model_bytes:
        raise ValidationFailed("The skops archive inflates beyond 4x the model size limit")
    if total > 100 * max(packed, 1):
        raise ValidationFailed("The skops archive has a compression ratio above 100")


def load_skops(data: bytes, trusted: list[str], max_model_bytes: int) -> Any:
    import skops.io as sio
    from skops.io.exceptions import UntrustedTypesFoundException

    check_skops_archive(data, max_model_bytes)
    try:
        estimator = sio.loads(data, trusted=trusted)
    except UntrustedTypesFoundException:
        # Only to name them in the answer: the allow-list itself never comes from here.
        found = [t for t in sio.get_untrusted_types(data=data) if t not in trusted]
        raise ValidationFailed(
            "The skops file contains untrusted types: " + ", ".join(found or ["unknown"]),
            errors=[
                {"loc": ["body", "file"], "msg": f"untrusted type {t}", "pointer": "/file"}
                for t in found
            ],
        ) from None
    except Exception as exc:
        raise ValidationFailed(
            f"The skops file could not be loaded: {type(exc).__name__}"
        ) from None
    check_trees(estimator)
    return estimator


def load_pickle(data: bytes, fmt: str) -> Any:
    """Unpickle: arbitrary code execution by design. Callers have checked ALLOW_PICKLE
    and the built-in admin role; every load is logged."""
    log.warning("loading a %s model: pickle can run arbitrary code", fmt)
    if fmt == "joblib":
        import joblib  # type: ignore[import-untyped]

        return joblib.load(io.BytesIO(data))
    import pickle

    return pickle.loads(data)  # noqa: S301 - admin-approved, ALLOW_PICKLE, logged


def _estimators(obj: Any, depth: int = 0) -> Iterator[Any]:
    if depth > 8:
        return
    yield obj
    for attr in ("steps", "estimators_", "estimator_", "transformers_", "estimators"):
        value = getattr(obj, attr, None)
        if isinstance(value, list | tuple | np.ndarray):
            for item in np.asarray(value, dtype=object).reshape(-1).tolist():
                if isinstance(item, tuple):
                    item = item[1]
                if item is not None and not isinstance(item, str):
                    yield from _estimators(item, depth + 1)
        elif value is not None and not isinstance(value, str):
            yield from _estimators(value, depth + 1)


def check_trees(estimator: Any) -> None:
    """Bound every decision tree's node indices (scikit-learn does not check them)."""
    for part in _estimators(estimator):
        tree = getattr(part, "tree_", None)
        if tree is None or not hasattr(tree, "children_left"):
            continue
        count = int(tree.node_count)
        n_features = int(getattr(part, "n_features_in_", tree.n_features))
        left, right = np.asarray(tree.children_left), np.asarray(tree.children_right)
        feature = np.asarray(tree.feature)
        ok = (
            left.shape == right.shape == feature.shape == (count,)
            and bool(np.all((left == -1) | ((left > np.arange(count)) & (left < count))))
            and bool(np.all((right == -1) | ((right > np.arange(count)) & (right < count))))
            and bool(np.all((feature == -2) | ((feature >= 0) & (feature < n_features))))
            and np.asarray(tree.value).shape[0] == count
        )
        if not ok:
            raise ValidationFailed("A decision tree in the model has out-of-range node indices")


def build_model(
    spec: ModelSpec,
    data: bytes,
    runtime: dict[str, Any],
    *,
    trusted: list[str],
    max_model_bytes: int,
    allow_pickle: bool = False,
) -> Model:
    """A loaded model from its serving artifact. Runs off the event loop. A stored pickle
    is loaded only while ALLOW_PICKLE is still on: the database is not more trusted than
    the upload was."""
    model: Model
    if spec.serving_format == "onnx":
        check_onnx(data)
        model = OnnxModel(spec, data, runtime)
    elif spec.serving_format == "skops":
        model = SklearnModel(spec, load_skops(data, trusted, max_model_bytes))
    elif spec.serving_format in PICKLE_FORMATS:
        if not allow_pickle:
            raise UnsafeFormat(
                f"Model {spec.name} version {spec.version} is a {spec.serving_format} file "
                "and MLGATE_ALLOW_PICKLE is off"
            )
        model = SklearnModel(spec, load_pickle(data, spec.serving_format))
    else:
        raise ValidationFailed(f"Unknown serving format '{spec.serving_format}'")
    model.load()
    return model
