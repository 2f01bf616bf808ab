"""Turning request rows into a float64 batch, or a 422 that names the row and feature.

JSON gives Python values: bools are ints to Python and NaN/Infinity parse as floats,
so both are refused explicitly, and so are integers too large for a float. Numbers must
lie within float32's range (models commonly compute in float32: scikit-learn's trees
and most ONNX graphs), and integer features within +-2**53 (exact in float64).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mlgate.errors import PayloadTooLarge, ValidationFailed
from mlgate.serving.runtime import Feature, FloatArray

MAX_ERRORS = 20
NUMBER_TYPES = (int, float)
MAX_MAGNITUDE = float(np.finfo(np.float32).max)
MAX_INTEGER = 2**53


def check_rows(count: int, max_rows: int) -> None:
    if count > max_rows:
        raise PayloadTooLarge(f"{count} rows sent; at most {max_rows} per request")


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__


def _bad_value(value: Any, feature: Feature) -> str | None:
    if type(value) not in NUMBER_TYPES:
        return f"feature '{feature.name}' must be a number, got {_describe(value)}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"feature '{feature.name}' must be a finite number, got {_describe(value)}"
    if abs(value) > MAX_MAGNITUDE:
        return f"feature '{feature.name}' is out of range (at most {MAX_MAGNITUDE:.4g} in size)"
    if feature.type == "integer":
        if isinstance(value, float) and not value.is_integer():
            return f"feature '{feature.name}' must be an integer, got {value}"
        if abs(value) > MAX_INTEGER:
            return f"feature '{feature.name}' is out of range (at most 2**53 in size)"
    return None


def rows_to_array(inputs: list[Any], features: tuple[Feature, ...], max_rows: int) -> FloatArray:
    """Rows as lists (in feature order) or as {feature: value} objects."""
    if not inputs:
        raise ValidationFailed(
            "inputs must hold at least one row",
            errors=[{"loc": ["body", "inputs"], "msg": "empty", "pointer": "/inputs"}],
        )
    check_rows(len(inputs), max_rows)
    width = len(features)
    names = [f.name for f in features]
    errors: list[dict[str, Any]] = []
    matrix: list[list[Any]] = []

    def fail(row: int, key: str | int | None, msg: str) -> None:
        loc: list[Any] = ["body", "inputs", row] + ([] if key is None else [key])
        pointer = f"/inputs/{row}" + ("" if key is None else f"/{key}")
        errors.append({"loc": loc, "msg": f"row {row}: {msg}", "pointer": pointer})

    for r, row in enumerate(inputs):
        if len(errors) >= MAX_ERRORS:
            break
        if isinstance(row, dict):
            unknown = [k for k in row if k not in names]
            missing = [n for n in names if n not in row]
            if unknown:
                fail(r, str(unknown[0]), f"unknown feature '{unknown[0]}'")
                continue
            if missing:
                fail(r, missing[0], f"feature '{missing[0]}' is missing")
                continue
            values = [row[n] for n in names]
            keys: list[str | int] = list(names)
        elif isinstance(row, list):
            if len(row) != width:
                fail(r, None, f"has {len(row)} values; the model takes {width} features")
                continue
            values, keys = row, list(range(width))
        else:
            fail(r, None, f"must be a list of {width} numbers or an object of features")
            continue
        for c, value in enumerate(values):
            problem = _bad_value(value, features[c])
            if problem is not None:
                fail(r, keys[c], problem)
                break
        matrix.append(values)
    if errors:
        raise ValidationFailed(errors[0]["msg"], errors=errors)
    return np.asarray(matrix, dtype=np.float64)


def _tensor_error(index: int, width: int, features: tuple[Feature, ...], msg: str) -> Exception:
    row, col = divmod(index, max(1, width))
    name = features[col].name if col < len(features) else str(col)
    return ValidationFailed(
        f"input row {row}: feature '{name}' {msg}",
        errors=[
            {
                "loc": ["body", "inputs", 0, "data", index],
                "msg": msg,
                "pointer": f"/inputs/0/data/{index}",
            }
        ],
    )


def tensor_to_array(values: Any, shape: list[int], features: tuple[Feature, ...]) -> FloatArray:
    """An Open Inference Protocol input (already a flat list or array) as a batch."""
    width = len(features)
    arr = np.asarray(values) if isinstance(values, np.ndarray) else None
    if arr is None:
        flat = values if isinstance(values, list) else [values]
        for i, v in enumerate(flat):
            if type(v) not in NUMBER_TYPES:
                raise _tensor_error(i, width, features, f"must be a number, got {_describe(v)}")
            if isinstance(v, int) and abs(v) > MAX_MAGNITUDE:
                raise _tensor_error(i, width, features, "is out of range")
        arr = np.asarray(flat, dtype=np.float64)
    arr = arr.reshape(-1)
    expected = int(np.prod(shape)) if shape else 0
    if arr.size != expected:
        raise ValidationFailed(
            f"input has {arr.size} values but its shape {shape} needs {expected}",
            errors=[
                {
                    "loc": ["body", "inputs", 0, "shape"],
                    "msg": "shape does not match data",
                    "pointer": "/inputs/0/shape",
                }
            ],
        )
    batch = arr.astype(np.float64).reshape(shape)
    bad = np.flatnonzero(~np.isfinite(batch))
    if bad.size:
        raise _tensor_error(int(bad[0]), width, features, "must be a finite number")
    big = np.flatnonzero(np.abs(batch) > MAX_MAGNITUDE)
    if big.size:
        raise _tensor_error(int(big[0]), width, features, "is out of range")
    for col, feature in enumerate(features):
        if feature.type != "integer":
            continue
        column = batch[:, col]
        wrong = np.flatnonzero((column != np.round(column)) | (np.abs(column) > MAX_INTEGER))
        if wrong.size:
            index = int(wrong[0]) * width + col
            raise _tensor_error(index, width, features, "must be an integer within +-2**53")
    return batch
