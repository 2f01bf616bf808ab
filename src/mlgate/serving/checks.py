"""What an upload must prove before it is stored: it loads, it answers a sample, and
its schema is known. Runs inside the sandbox subprocess (see `sandbox.py`).

Scikit-learn estimators are converted to ONNX when skl2onnx can do it and the
conversion agrees with the estimator on a sample; otherwise the estimator is served.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlgate.errors import ValidationFailed
from mlgate.serving.loaders import check_onnx, load_pickle, load_skops
from mlgate.serving.runtime import Feature, ModelSpec, OnnxModel, Outputs, SklearnModel, Task

ONNX_INPUT_TYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
}
CLASSIFIER_OPS = {"LinearClassifier", "TreeEnsembleClassifier", "SVMClassifier", "ZipMap"}
SAMPLE_ROWS = 64


def _features(width: int, hints: dict[str, Any], kind: str = "number") -> list[dict[str, str]]:
    names = list(hints.get("feature_names") or [])
    if names and len(names) != width:
        raise ValidationFailed(f"feature_names has {len(names)} names; the model takes {width}")
    if len(set(names)) != len(names):
        raise ValidationFailed("feature_names must be unique")
    names = names or [f"x{i}" for i in range(width)]
    return [{"name": n, "type": kind} for n in names]


def _classes(raw: list[Any], hints: dict[str, Any]) -> list[str]:
    labels = list(hints.get("class_labels") or [])
    if labels and len(labels) != len(raw):
        raise ValidationFailed(f"class_labels has {len(labels)} labels; the model has {len(raw)}")
    return labels or [str(r) for r in raw]


def _onnx_raw_classes(proto: Any) -> list[Any] | None:
    for node in proto.graph.node:
        if node.domain == "ai.onnx.ml" and node.op_type in CLASSIFIER_OPS:
            for attr in node.attribute:
                if attr.name == "classlabels_int64s" and len(attr.ints):
                    return [int(v) for v in attr.ints]
                if attr.name == "classlabels_strings" and len(attr.strings):
                    return [v.decode() for v in attr.strings]
    return None


def describe_onnx(data: bytes, hints: dict[str, Any]) -> dict[str, Any]:
    """Which input and outputs an ONNX model has, what they mean, and its schema."""
    import onnxruntime as ort

    proto = check_onnx(data)
    try:
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ValidationFailed(f"onnxruntime cannot load the model: {str(exc)[:300]}") from None
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ValidationFailed(f"The model must have exactly one input; it has {len(inputs)}")
    dtype = ONNX_INPUT_TYPES.get(inputs[0].type)
    shape = list(inputs[0].shape)
    if dtype is None or len(shape) != 2:
        raise ValidationFailed("The model input must be a float, double or int64 [rows, features]")
    width = shape[1] if isinstance(shape[1], int) else len(hints.get("feature_names") or [])
    if width <= 0:
        raise ValidationFailed("The input width is not fixed in the model: give feature_names")
    rt: dict[str, Any] = {"input_name": inputs[0].name, "input_dtype": dtype}
    for out in session.get_outputs():
        rank = len(out.shape or [])
        if out.type.startswith("seq(map(") and "prob_output" not in rt:
            rt.update(prob_output=out.name, prob_zipmap=True)
        elif out.type in ("tensor(int64)", "tensor(string)") and "label_output" not in rt:
            rt["label_output"] = out.name
        elif out.type in ("tensor(float)", "tensor(double)"):
            wide = rank == 2 and out.shape[1] != 1
            key = "prob_output" if wide else "value_output"
            rt.setdefault(key, out.name)
    task: Task = hints.get("task") or (
        "classification" if "label_output" in rt or "prob_output" in rt else "regression"
    )
    sample = np.zeros((3, width), dtype=np.float64)
    spec = _spec(task, _features(width, hints, "integer" if dtype == "int64" else "number"), None)
    raw = _onnx_raw_classes(proto)
    if task == "regression":
        if "value_output" not in rt:
            raise ValidationFailed("A regression model needs one float output of shape [rows]")
        rt = {k: rt[k] for k in ("input_name", "input_dtype", "value_output")}
    else:
        if "prob_output" not in rt and "label_output" not in rt:
            raise ValidationFailed("A classifier needs a label or probabilities output")
        rt.pop("value_output", None)
        if raw is None and "prob_output" in rt:
            first = session.run([rt["prob_output"]], {rt["input_name"]: sample.astype(dtype)})[0]
            width_c = len(first[0]) if rt.get("prob_zipmap") else np.asarray(first).shape[1]
            raw = list(range(width_c))
        if raw is None:
            raw = list(range(len(hints.get("class_labels") or [])))
        if not raw:
            raise ValidationFailed("The classifier's classes are unknown: give class_labels")
        rt["raw_classes"] = raw
    report: dict[str, Any] = {
        "task": task,
        "features": spec_features(spec),
        "classes": _classes(raw or [], hints) if task == "classification" else None,
        "serving_format": "onnx",
        "runtime": rt,
    }
    _try_sample(OnnxModel(_spec(task, spec.features, report["classes"]), data, rt), sample)
    return report


def spec_features(spec: ModelSpec) -> list[dict[str, str]]:
    return [{"name": f.name, "type": f.type} for f in spec.features]


def _spec(task: Task, features: Any, classes: Any) -> ModelSpec:
    feats = tuple(f if isinstance(f, Feature) else Feature(f["name"], f["type"]) for f in features)
    return ModelSpec("upload", 0, task, feats, tuple(classes) if classes else None, "-", "-")


def _try_sample(model: Any, sample: Any) -> Outputs:
    try:
        model.load()
        out: Outputs = model.predict(sample)
    except ValidationFailed:
        raise
    except Exception as exc:
        raise ValidationFailed(f"The model failed on a sample input: {str(exc)[:300]}") from None
    if len(out) != sample.shape[0]:
        raise ValidationFailed("The model did not answer one prediction per row")
    return out


def describe_estimator(
    estimator: Any, fmt: str, hints: dict[str, Any]
) -> tuple[dict[str, Any], bytes | None]:
    from sklearn.base import is_classifier, is_regressor

    width = getattr(estimator, "n_features_in_", None)
    if not hasattr(estimator, "predict") or not isinstance(width, int | np.integer):
        raise ValidationFailed("The file does not hold a fitted scikit-learn estimator")
    inferred = (
        "classification"
        if is_classifier(estimator)
        else ("regression" if is_regressor(estimator) else None)
    )
    task: Task | None = hints.get("task") or inferred  # type: ignore[assignment]
    if task is None:
        raise ValidationFailed("The estimator's task is unknown: give task")
    if task == "classification" and not hasattr(estimator, "classes_"):
        raise ValidationFailed("A classifier must have classes_")
    names = getattr(estimator, "feature_names_in_", None)
    if not hints.get("feature_names") and names is not None:
        hints = {**hints, "feature_names": [str(n) for n in names]}
    features = _features(int(width), hints)
    raw = np.asarray(estimator.classes_).tolist() if task == "classification" else None
    classes = _classes(raw, hints) if raw is not None else None
    spec = _spec(task, features, classes)
    sample = np.random.default_rng(0).normal(size=(SAMPLE_ROWS, int(width)))
    expected = _try_sample(SklearnModel(spec, estimator), sample)
    report: dict[str, Any] = {"task": task, "features": features, "classes": classes, "runtime": {}}
    for converted in _conversions(estimator, int(width), task):
        try:
            described = describe_onnx(converted, {**hints, "task": task, "class_labels": classes})
        except ValidationFailed:
            continue
        rt = described["runtime"]
        if expected.probabilities is None:
            rt.pop("prob_output", None)
        if rt.get("raw_classes") is not None and rt["raw_classes"] != raw:
            continue
        got = _try_sample(OnnxModel(spec, converted, rt), sample)
        if _agree(expected, got):
            return {**report, "serving_format": "onnx", "runtime": rt}, converted
    return {**report, "serving_format": fmt}, None


def _conversions(estimator: Any, width: int, task: str) -> Any:
    """ONNX candidates, double precision first (exact for linear models), then float
    (exact for trees, which scikit-learn evaluates in float32)."""
    try:
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType
    except ImportError:
        return
    options = {id(estimator): {"zipmap": False}} if task == "classification" else None
    for tensor_type in (DoubleTensorType, FloatTensorType):
        try:
            proto = convert_sklearn(
                estimator, initial_types=[("input", tensor_type([None, width]))], options=options
            )
        except Exception:  # noqa: S112 - an unconvertible estimator is served as is
            continue
        yield proto.SerializeToString()


def _agree(expected: Outputs, got: Outputs) -> bool:
    if expected.values is not None:
        if got.values is None:
            return False
        scale = 1.0 + float(np.max(np.abs(expected.values)))
        return bool(np.allclose(expected.values, got.values, rtol=1e-5, atol=1e-6 * scale))
    if got.class_index is None or expected.class_index is None:
        return False
    if not np.array_equal(expected.class_index, got.class_index):
        return False
    if expected.probabilities is not None:
        if got.probabilities is None or got.probabilities.shape != expected.probabilities.shape:
            return False
        return bool(np.allclose(expected.probabilities, got.probabilities, atol=1e-4))
    return True


def inspect_artifact(
    data: bytes, fmt: str, hints: dict[str, Any], trusted: list[str], max_model_bytes: int
) -> tuple[dict[str, Any], bytes | None]:
    """The report stored with a version, and the ONNX conversion to serve (if any)."""
    if fmt == "onnx":
        return describe_onnx(data, hints), None
    if fmt == "skops":
        estimator = load_skops(data, trusted, max_model_bytes)
    else:
        try:
            estimator = load_pickle(data, fmt)
        except Exception as exc:
            raise ValidationFailed(
                f"The file could not be unpickled: {type(exc).__name__}"
            ) from None
    return describe_estimator(estimator, fmt, hints)
