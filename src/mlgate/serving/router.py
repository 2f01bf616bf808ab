"""v1 model routes: thin wrappers that authorize, call the service, shape the answer."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, File, Form, Response, UploadFile, status

from mlgate.deps import ContextDep, MetaDep, PrincipalDep, Require, SessionDep
from mlgate.errors import PayloadTooLarge
from mlgate.openapi import PROBLEM as OPENAPI_PROBLEM
from mlgate.rbac.permissions import Permission
from mlgate.serving import service
from mlgate.serving.catalogue import ModelInfo
from mlgate.serving.schemas import (
    FeatureOut,
    InputSchemaOut,
    ModelList,
    ModelOut,
    ModelPatch,
    PredictRequest,
    PredictResponse,
    UploadResponse,
    VersionOut,
)

PROBLEM: dict[str, Any] = {"content": OPENAPI_PROBLEM}
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Malformed request body", **PROBLEM},
    401: {"description": "Not authenticated", **PROBLEM},
    403: {"description": "Missing permission", **PROBLEM},
    404: {"description": "No such model, or the caller's roles do not admit it", **PROBLEM},
    413: {"description": "Too many rows, or too large a file", **PROBLEM},
    422: {"description": "Invalid input: the row and feature are named", **PROBLEM},
    503: {
        "description": "The model cannot be loaded right now, or the database is down",
        **PROBLEM,
    },
}
UPLOAD_CHUNK = 1 << 20

router = APIRouter(tags=["models"], responses=ERRORS)


def model_out(info: ModelInfo) -> ModelOut:
    default = info.default
    return ModelOut(
        name=info.name,
        description=info.description,
        task=default.task if default else None,
        default_version=info.default_version,
        versions=[
            VersionOut(
                version=v.version,
                sha256=v.sha256,
                size=v.size,
                created_at=v.created_at,
                created_by=v.created_by,
                format=v.format,
                task=v.task,
            )
            for v in sorted(info.versions.values(), key=lambda v: v.version)
        ],
        input_schema=InputSchemaOut(
            features=[
                FeatureOut(name=f.name, type=f.type) for f in (default.features if default else ())
            ]
        ),
        classes=list(default.classes) if default and default.classes is not None else None,
        allowed_roles=list(info.allowed_roles),
    )


@router.get("/models", dependencies=[Require(Permission.MODELS_READ)])
async def list_models(session: SessionDep, principal: PrincipalDep) -> ModelList:
    return ModelList(items=[model_out(m) for m in await service.list_models(session, principal)])


@router.get("/models/{name}", dependencies=[Require(Permission.MODELS_READ)])
async def get_model(name: str, session: SessionDep, principal: PrincipalDep) -> ModelOut:
    return model_out(await service.get_model(session, principal, name))


@router.post(
    "/models/{name}/predict",
    dependencies=[Require(Permission.MODELS_PREDICT)],
    response_model_exclude_none=True,
)
async def predict(
    name: str,
    body: PredictRequest,
    response: Response,
    ctx: ContextDep,
    principal: PrincipalDep,
    meta: MetaDep,
) -> PredictResponse:
    result = await service.predict(ctx, principal, meta, name, body.inputs, body.version)
    response.headers.update(result.headers)
    return PredictResponse(
        model=name,
        version=result.version.version,
        predictions=result.predictions(),
        probabilities=result.probabilities(),
        request_id=meta.request_id,
    )


async def _spool(file: UploadFile, limit: int) -> service.SpooledUpload:
    """Copy the upload to a private file, hashing it and refusing more than `limit`.
    The copy and the hashing run in a thread, off the event loop."""
    return await asyncio.to_thread(_copy_and_hash, file.file, limit)


def _copy_and_hash(source: BinaryIO, limit: int) -> service.SpooledUpload:
    fd, name = tempfile.mkstemp(prefix="mlgate-upload-")
    digest, size = hashlib.sha256(), 0
    try:
        source.seek(0)
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(UPLOAD_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"The model file exceeds {limit} bytes")
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return service.SpooledUpload(Path(name), size, digest.hexdigest())


@router.post(
    "/admin/models",
    dependencies=[Require(Permission.MODELS_WRITE)],
    status_code=status.HTTP_201_CREATED,
    responses={
        409: {"description": "Concurrent upload", **PROBLEM},
        415: {"description": "Unsafe or unknown format", **PROBLEM},
    },
)
async def upload_model(
    ctx: ContextDep,
    session: SessionDep,
    principal: PrincipalDep,
    meta: MetaDep,
    name: Annotated[str, Form(max_length=64)],
    file: Annotated[UploadFile, File(description=".onnx or .skops")],
    description: Annotated[str | None, Form(max_length=4000)] = None,
    task: Annotated[str | None, Form()] = None,
    feature_names: Annotated[list[str] | None, Form()] = None,
    class_labels: Annotated[list[str] | None, Form()] = None,
    allowed_roles: Annotated[list[str] | None, Form()] = None,
) -> UploadResponse:
    form = service.UploadForm(
        name, file.filename, description, task or None, feature_names, class_labels, allowed_roles
    )
    spooled = await _spool(file, ctx.settings.max_model_bytes)
    try:
        model, version = await service.upload(ctx, session, principal, meta, form, spooled)
    finally:
        spooled.path.unlink(missing_ok=True)
    return UploadResponse(
        name=model.name,
        version=version.version,
        sha256=version.sha256,
        size=version.size,
        task=version.task,
        format=version.format,
    )


@router.patch("/admin/models/{name}", dependencies=[Require(Permission.MODELS_WRITE)])
async def update_model(
    name: str,
    body: ModelPatch,
    ctx: ContextDep,
    session: SessionDep,
    principal: PrincipalDep,
    meta: MetaDep,
) -> ModelOut:
    info = await service.update(
        ctx,
        session,
        principal,
        meta,
        name,
        body.description,
        body.allowed_roles,
        body.default_version,
    )
    return model_out(info)


@router.delete(
    "/admin/models/{name}",
    dependencies=[Require(Permission.MODELS_WRITE)],
    status_code=status.HTTP_204_NO_CONTENT,
)
async def delete_model(
    name: str, ctx: ContextDep, session: SessionDep, principal: PrincipalDep, meta: MetaDep
) -> Response:
    await service.delete(ctx, session, principal, meta, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete(
    "/admin/models/{name}/versions/{version}",
    dependencies=[Require(Permission.MODELS_WRITE)],
    status_code=status.HTTP_204_NO_CONTENT,
)
async def delete_version(
    name: str,
    version: int,
    ctx: ContextDep,
    session: SessionDep,
    principal: PrincipalDep,
    meta: MetaDep,
) -> Response:
    await service.delete(ctx, session, principal, meta, name, version)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
