"""Format checks and the sandboxed upload inspection."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from tests.serving.conftest import fit_quietly, iris_xy, onnx_bytes, skops_bytes

from mlgate.errors import MlgateError, UnsafeFormat, ValidationFailed
from mlgate.serving import sandbox
from mlgate.serving.checks import describe_onnx, inspect_artifact
from mlgate.serving.loaders import (
    DEFAULT_TRUSTED_TYPES,
    build_model,
    check_onnx,
    check_skops_archive,
    detect_format,
    trusted_types,
)
from mlgate.serving.runtime import Feature, ModelSpec
from mlgate.serving.sandbox import CheckResult, Limits, check_upload

TRUSTED = list(DEFAULT_TRUSTED_TYPES)
MAX = 10 << 20


class HomemadeClassifier:
    """A class skops has never heard of."""


def _spec(report: dict[str, Any], fmt: str) -> ModelSpec:
    return ModelSpec(
        "m",
        1,
        report["task"],
        tuple(Feature(f["name"], f["type"]) for f in report["features"]),
        tuple(report["classes"]) if report["classes"] else None,
        fmt,
        report["serving_format"],
    )


def test_detect_format() -> None:
    assert detect_format("a.ONNX") == "onnx"
    assert detect_format("a.skops") == "skops"
    assert detect_format("a.joblib") == "joblib"
    with pytest.raises(MlgateError) as err:
        detect_format("a.h5")
    assert err.value.status == 415


def test_onnx_custom_domain_refused() -> None:
    node = helper.make_node("Evil", ["x"], ["y"], domain="com.evil")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("com.evil", 1), helper.make_opsetid("", 18)]
    )
    with pytest.raises(ValidationFailed, match="com.evil"):
        check_onnx(model.SerializeToString())


def test_onnx_external_data_refused() -> None:
    weight = helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 2.0])
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    entry = weight.external_data.add()
    entry.key, entry.value = "location", "/etc/passwd"
    node = helper.make_node("Add", ["x", "w"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(ValidationFailed, match="external data"):
        check_onnx(model.SerializeToString())


def _graph_with(node: Any) -> Any:
    return helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
    )


def test_onnx_external_data_in_sparse_attribute_refused() -> None:
    values = helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
    values.ClearField("float_data")
    values.data_location = TensorProto.EXTERNAL
    entry = values.external_data.add()
    entry.key, entry.value = "location", "/etc/shadow"
    indices = helper.make_tensor("i", TensorProto.INT64, [1], [0])
    sparse = helper.make_sparse_tensor(values, indices, [2])
    node = helper.make_node("Constant", [], ["y"], sparse_value=sparse)
    model = helper.make_model(_graph_with(node), opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(ValidationFailed, match="external data"):
        check_onnx(model.SerializeToString())


def test_onnx_training_info_refused() -> None:
    node = helper.make_node("Relu", ["x"], ["y"])
    model = helper.make_model(_graph_with(node), opset_imports=[helper.make_opsetid("", 18)])
    model.training_info.add().algorithm.CopyFrom(_graph_with(node))
    with pytest.raises(ValidationFailed, match="training"):
        check_onnx(model.SerializeToString())


def test_configured_trusted_types_extend_the_defaults() -> None:
    from types import SimpleNamespace

    extra = SimpleNamespace(skops_trusted_types=["mypkg.Scaler"])
    assert set(trusted_types(extra)) == {*DEFAULT_TRUSTED_TYPES, "mypkg.Scaler"}
    assert trusted_types(SimpleNamespace(skops_trusted_types=[])) == TRUSTED


def test_stored_pickle_refused_without_allow_pickle(iris_logreg: Any) -> None:
    import pickle

    spec = ModelSpec(
        "m",
        1,
        "classification",
        tuple(Feature(f"x{i}") for i in range(4)),
        None,
        "pickle",
        "pickle",
    )
    with pytest.raises(UnsafeFormat):
        build_model(spec, pickle.dumps(iris_logreg), {}, trusted=TRUSTED, max_model_bytes=MAX)
    model = build_model(
        spec, pickle.dumps(iris_logreg), {}, trusted=TRUSTED, max_model_bytes=MAX, allow_pickle=True
    )
    assert len(model.predict(iris_xy()[0][:3])) == 3


def test_onnx_garbage_refused() -> None:
    with pytest.raises(ValidationFailed):
        check_onnx(b"not a model at all")


def test_onnx_classifier_described_and_served(iris_logreg: Any) -> None:
    x, _ = iris_xy()
    data = onnx_bytes(iris_logreg, 4)
    report = describe_onnx(data, {"class_labels": ["a", "b", "c"]})
    assert report["task"] == "classification"
    assert report["classes"] == ["a", "b", "c"]
    model = build_model(
        _spec(report, "onnx"), data, report["runtime"], trusted=TRUSTED, max_model_bytes=MAX
    )
    out = model.predict(x)
    assert out.class_index is not None
    assert out.probabilities is not None
    assert np.array_equal(out.class_index, iris_logreg.predict(x))
    assert np.allclose(out.probabilities, iris_logreg.predict_proba(x), atol=1e-5)


def test_onnx_zipmap_output_supported(iris_logreg: Any) -> None:
    x, _ = iris_xy()
    data = onnx_bytes(iris_logreg, 4, zipmap=True)
    report = describe_onnx(data, {})
    assert report["runtime"].get("prob_zipmap") is True
    model = build_model(
        _spec(report, "onnx"), data, report["runtime"], trusted=TRUSTED, max_model_bytes=MAX
    )
    out = model.predict(x[:5])
    assert out.probabilities is not None
    assert np.allclose(out.probabilities, iris_logreg.predict_proba(x[:5]), atol=1e-5)


def test_wrong_class_label_count_refused(iris_logreg: Any) -> None:
    with pytest.raises(ValidationFailed, match="class_labels"):
        describe_onnx(onnx_bytes(iris_logreg, 4), {"class_labels": ["a", "b"]})


def test_skops_forest_converted_to_onnx_and_agrees() -> None:
    from sklearn.ensemble import RandomForestClassifier

    x, y = iris_xy()
    forest = fit_quietly(RandomForestClassifier(n_estimators=10, random_state=0), x, y)
    report, converted = inspect_artifact(skops_bytes(forest), "skops", {}, TRUSTED, MAX)
    assert report["serving_format"] == "onnx"
    assert converted is not None
    model = build_model(
        _spec(report, "skops"), converted, report["runtime"], trusted=TRUSTED, max_model_bytes=MAX
    )
    out = model.predict(x)
    assert np.array_equal(out.class_index, forest.predict(x))  # type: ignore[arg-type]


def test_skops_without_conversion_served_by_sklearn() -> None:
    from sklearn.datasets import load_diabetes
    from sklearn.kernel_ridge import KernelRidge

    x, y = load_diabetes(return_X_y=True)
    est = fit_quietly(KernelRidge(alpha=0.5), x, y)
    report, converted = inspect_artifact(skops_bytes(est), "skops", {}, TRUSTED, MAX)
    assert report["serving_format"] == "skops"
    assert converted is None
    assert report["task"] == "regression"
    model = build_model(
        _spec(report, "skops"),
        skops_bytes(est),
        report["runtime"],
        trusted=TRUSTED,
        max_model_bytes=MAX,
    )
    out = model.predict(x[:7])
    assert out.values is not None
    assert np.allclose(out.values, est.predict(x[:7]))


def test_unreviewed_skops_type_refused() -> None:
    from sklearn.ensemble import HistGradientBoostingRegressor

    x, y = iris_xy()
    est = fit_quietly(HistGradientBoostingRegressor(max_iter=5), x, y.astype(float))
    with pytest.raises(ValidationFailed, match="TreePredictor"):
        inspect_artifact(skops_bytes(est), "skops", {}, TRUSTED, MAX)


def test_skops_untrusted_class_named() -> None:
    from sklearn.linear_model import LogisticRegression

    class Sneaky(LogisticRegression):
        pass

    x, y = iris_xy()
    blob = skops_bytes(fit_quietly(Sneaky(max_iter=1000), x, y))
    with pytest.raises(ValidationFailed, match="Sneaky") as err:
        inspect_artifact(blob, "skops", {}, TRUSTED, MAX)
    assert err.value.errors
    assert all(e["pointer"] == "/file" and "loc" in e for e in err.value.errors)


def test_tampered_tree_refused() -> None:
    from sklearn.tree import DecisionTreeClassifier

    from mlgate.serving.loaders import check_trees

    x, y = iris_xy()
    tree = fit_quietly(DecisionTreeClassifier(random_state=0), x, y)
    check_trees(tree)
    tree.tree_.children_left[0] = 10_000  # what a malicious file would carry
    with pytest.raises(ValidationFailed, match="out-of-range"):
        check_trees(tree)


def test_skops_zip_bomb_bounded() -> None:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("schema.json", b"\0" * (5 << 20))
    with pytest.raises(ValidationFailed, match="ratio|inflates"):
        check_skops_archive(buffer.getvalue(), MAX)
    with pytest.raises(ValidationFailed, match="inflates"):
        check_skops_archive(buffer.getvalue(), 1024)


def _write(tmp_path: Path, data: bytes, name: str) -> tuple[Path, str]:
    path = tmp_path / name
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


async def test_sandbox_checks_and_converts(tmp_path: Path, iris_logreg: Any) -> None:
    path, sha = _write(tmp_path, skops_bytes(iris_logreg), "m.skops")
    result = await check_upload(path, sha, "skops", {}, TRUSTED, Limits(2048, 60, MAX))
    assert result.report["serving_format"] == "onnx"
    assert result.converted is not None


async def test_sandbox_memory_limit_is_enforced(tmp_path: Path, iris_logreg: Any) -> None:
    # 64 MB cannot even import the ML stack: the child dies and the upload is refused.
    path, sha = _write(tmp_path, skops_bytes(iris_logreg) + b" ", "m.skops")
    with pytest.raises(ValidationFailed, match="memory or CPU"):
        await check_upload(
            path, sha, "skops", {"task": "classification"}, TRUSTED, Limits(64, 60, MAX)
        )


async def test_sandbox_reports_refusal(tmp_path: Path) -> None:
    path, sha = _write(tmp_path, b"garbage", "m.onnx")
    with pytest.raises(MlgateError) as err:
        await check_upload(path, sha, "onnx", {}, TRUSTED, Limits(2048, 60, MAX))
    assert err.value.status == 422
    assert "not a valid ONNX" in err.value.detail


def test_onnx_model_proto_roundtrip_is_clean(iris_logreg: Any) -> None:
    proto = check_onnx(onnx_bytes(iris_logreg, 4))
    assert isinstance(proto, onnx.ModelProto)


def test_sandbox_verdict_cache_is_bounded() -> None:
    saved = dict(sandbox._RESULTS)
    try:
        for i in range(sandbox.RESULTS_MAX_ENTRIES * 3):
            sandbox._remember(f"key{i}", CheckResult({}, b"x" * (1 << 20)))
        assert len(sandbox._RESULTS) <= sandbox.RESULTS_MAX_ENTRIES
        sandbox._remember("huge", CheckResult({}, b"x" * (sandbox.RESULTS_MAX_BYTES + 1)))
        assert sum(len(r.converted or b"") for r in sandbox._RESULTS.values()) <= (
            sandbox.RESULTS_MAX_BYTES
        )
    finally:
        sandbox._RESULTS.clear()
        sandbox._RESULTS.update(saved)


def test_sandbox_child_gets_no_mlgate_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLGATE_JWT_SECRET", "s3cret")
    monkeypatch.setenv("MLGATE_DATABASE_URL", "postgresql://u:pw@db/x")
    env = sandbox._child_env()
    assert not [k for k in env if k.startswith("MLGATE_")]
    assert env["OMP_NUM_THREADS"] == "1"
    assert "PATH" in env
