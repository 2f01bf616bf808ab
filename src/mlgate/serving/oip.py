"""Open Inference Protocol v2 codec, with Triton's binary tensor data extension.

A request body is a JSON header, optionally followed by raw tensor bytes when the
`Inference-Header-Content-Length` header says where the JSON ends. Answers use the same
framing for outputs asked in binary (`binary_data`, or `binary_data_output` for all).
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlgate.errors import PayloadTooLarge, ValidationFailed
from mlgate.serving.catalogue import VersionInfo
from mlgate.serving.inputs import check_rows, tensor_to_array
from mlgate.serving.runtime import FloatArray

DTYPES = {"FP32": "<f4", "FP64": "<f8", "INT64": "<i8"}
INPUT_NAME = "input"


@dataclass(slots=True)
class InferRequest:
    header: dict[str, Any]
    binary: bytes
    id: str | None = None
    outputs: dict[str, bool] | None = None  # name -> binary; None = every output
    binary_default: bool = False
    input: dict[str, Any] = field(default_factory=dict)


def _bad(detail: str, pointer: str = "") -> ValidationFailed:
    loc = ["body"] + [p for p in pointer.split("/") if p]
    return ValidationFailed(detail, errors=[{"loc": loc, "msg": detail, "pointer": pointer or "/"}])


def decode_body(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo a Content-Encoding, refusing to inflate beyond `limit` bytes (zip bombs)."""
    if not encoding or encoding.lower() == "identity":
        return body
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(encoding.lower())
    if wbits is None:
        raise _bad(f"Content-Encoding '{encoding}' is not supported")
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise _bad("The request body could not be decompressed") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"The decompressed request body exceeds {limit} bytes")
    return out


# The protocol's fields. Unknown ones are refused (no silent mass assignment);
# `parameters` objects stay free-form, as the protocol defines them.
REQUEST_FIELDS = frozenset({"id", "parameters", "inputs", "outputs"})
INPUT_FIELDS = frozenset({"name", "shape", "datatype", "parameters", "data"})
OUTPUT_FIELDS = frozenset({"name", "parameters"})


def _known_fields(obj: dict[str, Any], known: frozenset[str], pointer: str) -> None:
    unknown = sorted(str(k) for k in obj if k not in known)
    if unknown:
        errors = [
            {
                "loc": ["body", *[p for p in pointer.split("/") if p], name],
                "msg": "Extra inputs are not permitted",
                "pointer": f"{pointer}/{name}",
            }
            for name in unknown
        ]
        raise ValidationFailed(f"unknown field '{unknown[0]}'", errors=errors)


def parse_request(body: bytes, header_length: str | None) -> InferRequest:
    if header_length is not None:
        try:
            size = int(header_length)
        except ValueError:
            raise _bad("Inference-Header-Content-Length must be an integer") from None
        if not 0 < size <= len(body):
            raise _bad("Inference-Header-Content-Length is out of range")
        head, binary = body[:size], body[size:]
    else:
        head, binary = body, b""
    try:
        doc = json.loads(head)
    except (ValueError, UnicodeDecodeError):
        raise _bad("The request header is not valid JSON") from None
    except RecursionError:
        raise _bad("The request header is nested too deeply") from None
    if not isinstance(doc, dict):
        raise _bad("The request must be a JSON object")
    _known_fields(doc, REQUEST_FIELDS, "")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise _bad("inputs must hold exactly one tensor named 'input'", "/inputs")
    _known_fields(inputs[0], INPUT_FIELDS, "/inputs/0")
    req = InferRequest(doc, binary, input=inputs[0])
    if doc.get("id") is not None:
        req.id = str(doc["id"])
    params = doc.get("parameters") or {}
    req.binary_default = bool(isinstance(params, dict) and params.get("binary_data_output"))
    outputs = doc.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
            raise _bad("outputs must be a list of objects", "/outputs")
        req.outputs = {}
        for i, o in enumerate(outputs):
            _known_fields(o, OUTPUT_FIELDS, f"/outputs/{i}")
            p = o.get("parameters") or {}
            if not isinstance(p, dict):
                raise _bad("output parameters must be an object", f"/outputs/{i}/parameters")
            req.outputs[str(o.get("name"))] = bool(p.get("binary_data", req.binary_default))
    return req


def input_batch(req: InferRequest, version: VersionInfo, max_rows: int) -> FloatArray:
    """The input tensor as a [rows, features] batch: name, type, shape and values checked
    (and the outputs asked for exist, so a bad request fails before inference)."""
    tensor, width = req.input, len(version.features)
    names = output_names(version)
    unknown = [n for n in req.outputs or {} if n not in names]
    if unknown:
        raise _bad(f"unknown output '{unknown[0]}'; outputs are {', '.join(names)}", "/outputs")
    if tensor.get("name") != INPUT_NAME:
        raise _bad(f"The input tensor must be named '{INPUT_NAME}'", "/inputs/0/name")
    datatype = tensor.get("datatype")
    if datatype not in DTYPES:
        raise _bad("datatype must be FP32, FP64 or INT64", "/inputs/0/datatype")
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(type(d) is int and d >= 0 for d in shape)
        or shape[1] != width
    ):
        raise _bad(f"shape must be [rows, {width}]", "/inputs/0/shape")
    if shape[0] == 0:
        raise _bad("the input holds no rows", "/inputs/0/shape")
    check_rows(shape[0], max_rows)
    params = tensor.get("parameters") or {}
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is not None:
        if type(size) is not int or size != len(req.binary):
            raise _bad("binary_data_size does not match the binary data sent", "/inputs/0")
        itemsize = np.dtype(DTYPES[datatype]).itemsize
        if size != shape[0] * shape[1] * itemsize:
            raise _bad(
                f"binary data holds {size} bytes; shape {shape} needs "
                f"{shape[0] * shape[1] * itemsize}",
                "/inputs/0/shape",
            )
        values: Any = np.frombuffer(req.binary, dtype=DTYPES[datatype])
    else:
        if "data" not in tensor:
            raise _bad("the input tensor has no data", "/inputs/0/data")
        values = _flatten(tensor["data"])
        if datatype == "INT64" and any(type(v) is not int for v in values):
            raise _bad("INT64 data must be integers", "/inputs/0/data")
    return tensor_to_array(values, shape, version.features)


def output_names(version: VersionInfo) -> list[str]:
    if version.task == "regression":
        return ["prediction"]
    return ["label", "probabilities"]


def _flatten(data: Any) -> list[Any]:
    """Tensor data, flat (row-major) or nested as [rows][features]; deeper is refused."""
    if not isinstance(data, list):
        return [data]
    if all(not isinstance(v, list) for v in data):
        return data
    out: list[Any] = []
    for v in data:
        if not isinstance(v, list) or any(isinstance(x, list) for x in v):
            raise _bad("data must be flat or nested as [rows][features]", "/inputs/0/data")
        out.extend(v)
    return out


def _bytes_tensor(labels: list[str]) -> bytes:
    parts = []
    for label in labels:
        raw = label.encode()
        parts.append(struct.pack("<I", len(raw)) + raw)
    return b"".join(parts)


def encode_response(
    req: InferRequest,
    model_name: str,
    version: int,
    tensors: dict[str, tuple[str, list[int], Any]],
) -> tuple[bytes, int | None]:
    """(body, JSON header length when binary outputs follow it)."""
    wanted = req.outputs if req.outputs is not None else dict.fromkeys(tensors, req.binary_default)
    unknown = [n for n in wanted if n not in tensors]
    if unknown:
        raise _bad(f"unknown output '{unknown[0]}'; outputs are {', '.join(tensors)}", "/outputs")
    outputs, blobs = [], []
    for name, binary in wanted.items():
        datatype, shape, data = tensors[name]
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
        if binary:
            blob = (
                _bytes_tensor(data)
                if datatype == "BYTES"
                else np.ascontiguousarray(data, dtype=DTYPES[datatype]).tobytes()
            )
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = data if datatype == "BYTES" else np.asarray(data).reshape(-1).tolist()
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": str(version)}
    if req.id is not None:
        doc["id"] = req.id
    doc["outputs"] = outputs
    head = json.dumps(doc, allow_nan=False).encode()
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)
