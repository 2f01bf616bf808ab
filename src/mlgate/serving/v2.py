"""Open Inference Protocol v2 routes (KServe / Triton clients), same auth as v1."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response

from mlgate import __version__
from mlgate.deps import ContextDep, MetaDep, PrincipalDep, Public, Require
from mlgate.errors import Unavailable
from mlgate.rbac.permissions import Permission
from mlgate.serving import oip, service
from mlgate.serving.catalogue import ModelInfo, VersionInfo
from mlgate.serving.router import ERRORS

router = APIRouter(prefix="/v2", tags=["open inference protocol"], responses=ERRORS)
EXTENSIONS = ["binary_tensor_data", "model_repository"]
# The Open Inference Protocol tensor datatypes; this server's models take FP32, FP64 or
# INT64 inputs (a model's metadata names its own), and answer BYTES labels.
DATATYPES = [
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES", "BF16",
]  # fmt: skip
# Documented only: the route reads raw bytes (Triton's binary tensor extension puts raw
# tensor data after the JSON). The parser refuses unknown fields of the request, its
# input and its outputs (422); `parameters` objects are free-form, as in the protocol.
_PARAMETERS = {
    "type": "object",
    "description": "Free-form protocol parameters; unknown ones are ignored.",
}
INFER_REQUEST_SCHEMA: dict[str, Any] = {
    "title": "InferenceRequest",
    "type": "object",
    "additionalProperties": False,
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string", "description": "Echoed in the answer."},
        "parameters": {
            **_PARAMETERS,
            "properties": {
                "binary_data_output": {
                    "type": "boolean",
                    "description": "Send every output as binary tensor data.",
                }
            },
        },
        "inputs": {
            "type": "array",
            "minItems": 1,
            "maxItems": 1,
            "description": "Exactly one tensor, named 'input', of shape [rows, features].",
            "items": {
                "title": "RequestInput",
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "shape", "datatype"],
                "properties": {
                    "name": {"type": "string", "example": "input"},
                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    "datatype": {"type": "string", "enum": DATATYPES},
                    "parameters": {
                        **_PARAMETERS,
                        "properties": {
                            "binary_data_size": {
                                "type": "integer",
                                "minimum": 0,
                                "description": "Bytes of this tensor in the binary part.",
                            }
                        },
                    },
                    "data": {
                        "type": "array",
                        "description": "Row-major values, flat or nested as [rows][features]; "
                        "absent when the tensor is sent as binary data.",
                        "items": {},
                    },
                },
            },
        },
        "outputs": {
            "type": "array",
            "description": "Outputs to return (default: all), each optionally as binary.",
            "items": {
                "title": "RequestOutput",
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "parameters": {
                        **_PARAMETERS,
                        "properties": {"binary_data": {"type": "boolean"}},
                    },
                },
            },
        },
    },
}
INFER_BODY = {
    "parameters": [
        {
            "name": "Inference-Header-Content-Length",
            "in": "header",
            "required": False,
            "description": "Binary tensor extension: length of the JSON header that "
            "starts the body; raw tensor bytes follow it.",
            "schema": {"type": "integer", "minimum": 1},
        }
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": INFER_REQUEST_SCHEMA,
                "example": {
                    "id": "1",
                    "inputs": [
                        {
                            "name": "input",
                            "datatype": "FP64",
                            "shape": [1, 4],
                            "data": [5.1, 3.5, 1.4, 0.2],
                        }
                    ],
                },
            },
            "application/octet-stream": {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": "A JSON InferenceRequest header of "
                    "Inference-Header-Content-Length bytes, then raw tensor data.",
                }
            },
        },
    },
}


@router.get("", dependencies=[Require(Permission.MODELS_READ)])
async def server_metadata() -> dict[str, Any]:
    return {"name": "mlgate", "version": __version__, "extensions": EXTENSIONS}


@router.get("/health/live", dependencies=[Public()])
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", dependencies=[Public()])
async def ready(ctx: ContextDep) -> dict[str, bool]:
    if ctx.models is None or not service.registry(ctx).ready:
        raise Unavailable("Models are not loaded yet")
    return {"ready": True}


def _metadata(info: ModelInfo, version: VersionInfo) -> dict[str, Any]:
    dtype = "INT64" if all(f.type == "integer" for f in version.features) else "FP64"
    if version.task == "classification":
        outputs = [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {
                "name": "probabilities",
                "datatype": "FP32",
                "shape": [-1, len(version.classes or ())],
            },
        ]
    else:
        outputs = [{"name": "prediction", "datatype": "FP64", "shape": [-1]}]
    return {
        "name": info.name,
        "versions": [str(v) for v in sorted(info.versions)],
        "platform": "onnxruntime_onnx" if version.serving_format == "onnx" else "scikit-learn",
        "inputs": [
            {"name": oip.INPUT_NAME, "datatype": dtype, "shape": [-1, len(version.features)]}
        ],
        "outputs": outputs,
        "parameters": {
            "task": version.task,
            "features": [f.name for f in version.features],
            "classes": list(version.classes or ()),
        },
    }


@router.get("/models/{name}", dependencies=[Require(Permission.MODELS_READ)])
@router.get("/models/{name}/versions/{version}", dependencies=[Require(Permission.MODELS_READ)])
async def model_metadata(
    name: str, ctx: ContextDep, principal: PrincipalDep, version: int | None = None
) -> dict[str, Any]:
    info, chosen = await service.registry(ctx).resolve(name, version, principal)
    return _metadata(info, chosen)


@router.get("/models/{name}/ready", dependencies=[Require(Permission.MODELS_READ)])
@router.get(
    "/models/{name}/versions/{version}/ready", dependencies=[Require(Permission.MODELS_READ)]
)
async def model_ready(
    name: str, ctx: ContextDep, principal: PrincipalDep, version: int | None = None
) -> dict[str, Any]:
    reg = service.registry(ctx)
    info, chosen = await reg.resolve(name, version, principal)
    await reg.load(info, chosen)
    return {"name": name, "version": str(chosen.version), "ready": True}


def _tensors(result: service.Prediction) -> dict[str, tuple[str, list[int], Any]]:
    rows = len(result.outputs)
    if result.outputs.values is not None:
        return {"prediction": ("FP64", [rows], result.outputs.values)}
    tensors: dict[str, tuple[str, list[int], Any]] = {"label": ("BYTES", [rows], result.labels())}
    probs = result.outputs.probabilities
    if probs is not None:
        tensors["probabilities"] = ("FP32", [rows, int(probs.shape[1])], probs.astype(np.float32))
    return tensors


@router.post(
    "/models/{name}/infer",
    dependencies=[Require(Permission.MODELS_PREDICT)],
    openapi_extra=INFER_BODY,
)
@router.post(
    "/models/{name}/versions/{version}/infer",
    dependencies=[Require(Permission.MODELS_PREDICT)],
    openapi_extra=INFER_BODY,
)
async def infer(
    name: str,
    request: Request,
    ctx: ContextDep,
    principal: PrincipalDep,
    meta: MetaDep,
    version: int | None = None,
) -> Response:
    body = oip.decode_body(
        await request.body(), request.headers.get("content-encoding"), ctx.settings.max_body_bytes
    )
    req = oip.parse_request(body, request.headers.get("inference-header-content-length"))
    max_rows = ctx.settings.max_batch_rows
    result = await service.predict_rows(
        ctx, principal, meta, name, version, lambda v: oip.input_batch(req, v, max_rows)
    )
    content, header_length = oip.encode_response(
        req, name, result.version.version, _tensors(result)
    )
    if header_length is None:
        return Response(content, media_type="application/json", headers=result.headers)
    return Response(
        content,
        media_type="application/octet-stream",
        headers={**result.headers, "Inference-Header-Content-Length": str(header_length)},
    )
