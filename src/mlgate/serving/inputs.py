"""Turning request rows into a float64 batch, or a 422 that names the row and feature.

JSON gives Python values: bools are ints to Python and NaN/Infinity parse as floats,
so both are refused explicitly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mlgate.errors import PayloadTooLarge, ValidationFailed
from mlgate.serving.runtime import Feature, FloatArray

MAX_ERRORS = 20
NUMBER_TYPES = (int, float)


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
    if feature.type == "integer" and isinstance(value, float) and not value.is_integer():
        return f"feature '{feature.name}' must be an integer, got {value}"
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


def tensor_to_array(
    values: Any, shape: list[int], datatype: str, features: tuple[Feature, ...]
) -> FloatArray:
    """An Open Inference Protocol input (already a flat list or array) as a batch."""
    arr = np.asarray(values)
    if arr.dtype == object or arr.dtype.kind not in "iuf":
        flat = list(np.asarray(values, dtype=object).reshape(-1).tolist())
        for i, v in enumerate(flat):
            if type(v) not in NUMBER_TYPES:
                row, col = divmod(i, max(1, len(features)))
                raise ValidationFailed(
                    f"input row {row}: feature '{features[col].name}' must be a number, "
                    f"got {_describe(v)}",
                    errors=[
                        {
                            "loc": ["body", "inputs", 0, "data", i],
                            "msg": "not a number",
                            "pointer": f"/inputs/0/data/{i}",
                        }
                    ],
                )
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
    bad = np.argwhere(~np.isfinite(batch))
    if bad.size:
        row, col = (int(x) for x in bad[0])
        raise ValidationFailed(
            f"input row {row}: feature '{features[col].name}' must be a finite number",
            errors=[
                {
                    "loc": ["body", "inputs", 0, "data", row * len(features) + col],
                    "msg": "not finite",
                    "pointer": f"/inputs/0/data/{row * len(features) + col}",
                }
            ],
        )
    for col, feature in enumerate(features):
        if feature.type == "integer" and datatype != "INT64":
            column = batch[:, col]
            if not np.all(column == np.round(column)):
                row = int(np.argmax(column != np.round(column)))
                raise ValidationFailed(
                    f"input row {row}: feature '{feature.name}' must be an integer"
                )
    return batch
