"""Serving logic: visibility, prediction, upload, update and delete. No HTTP here."""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from mlgate import metrics
from mlgate.audit.events import Action, AuditEvent
from mlgate.auth.principal import Principal
from mlgate.context import RequestMeta
from mlgate.db import after_commit, utcnow
from mlgate.errors import (
    MlgateError,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    UnsafeFormat,
    ValidationFailed,
)
from mlgate.limits.service import accounting_of
from mlgate.rbac.permissions import ADMIN, USER
from mlgate.serving import catalogue as cat
from mlgate.serving import repository as repo
from mlgate.serving.inputs import rows_to_array
from mlgate.serving.loaders import PICKLE_FORMATS, detect_format, trusted_types
from mlgate.serving.runtime import FloatArray, Outputs
from mlgate.serving.sandbox import CheckResult, Limits, check_upload
from mlgate.serving.storage import ArtifactStore
from mlgate.serving.tables import ModelRow, ModelVersionRow

if TYPE_CHECKING:
    from mlgate.context import AppContext
    from mlgate.serving.registry import ModelRegistry

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ROLE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
DEFAULT_ALLOWED_ROLES = [USER, ADMIN]
TASKS = ("classification", "regression")
PUBLISH_ATTEMPTS = 3


def registry(ctx: AppContext) -> ModelRegistry:
    reg: ModelRegistry = ctx.models
    return reg


def _store(ctx: AppContext) -> ArtifactStore:
    # Bootstrap registers demo models before the registry starts: use a bare store then.
    if ctx.models is not None:
        return registry(ctx).store
    return ArtifactStore(ctx.db, ctx.settings.data_dir / "model-cache")


def _touch(ctx: AppContext, session: AsyncSession, name: str) -> None:
    """A model changed in this unit of work: read the catalogue fresh here, and once it
    has committed, tell the other replicas (Redis notice; they poll anyway)."""
    if ctx.models is not None:
        registry(ctx).touch()
    notifier = ctx.notifier
    if notifier is not None:
        after_commit(session, lambda: notifier.publish("model", name))


async def start_serving(ctx: AppContext) -> None:
    """Load the catalogue, start polling for changes and preloading models."""
    from mlgate.serving.registry import ModelRegistry

    reg = ModelRegistry(ctx.settings, ctx.db)
    ctx.models = reg
    await reg.start()


async def stop_serving(ctx: AppContext) -> None:
    if ctx.models is not None:
        await registry(ctx).stop()
        ctx.models = None


# ---- reading -------------------------------------------------------------------------


async def list_models(session: AsyncSession, principal: Principal) -> list[cat.ModelInfo]:
    models, versions = await repo.catalogue(session)
    return [m for m in cat.build(models, versions).values() if m.admits(principal)]


async def get_model(session: AsyncSession, principal: Principal, name: str) -> cat.ModelInfo:
    row = await repo.get_model(session, name)
    if row is not None:
        info = cat.model_info(row, await repo.versions_of(session, row.id))
        if info.admits(principal):
            return info
    raise NotFound(f"Model '{name}' not found")


# ---- prediction ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Prediction:
    model: cat.ModelInfo
    version: cat.VersionInfo
    outputs: Outputs
    # Headers for the answer (e.g. the RateLimit fields from admission).
    headers: dict[str, str] = field(default_factory=dict)

    def labels(self) -> list[str]:
        classes = self.version.classes or ()
        index = self.outputs.class_index
        return [] if index is None else [classes[i] for i in index.tolist()]

    def predictions(self) -> list[str] | list[float]:
        if self.outputs.values is not None:
            return [float(v) for v in self.outputs.values.tolist()]
        return self.labels()

    def probabilities(self) -> list[list[float]] | None:
        probs = self.outputs.probabilities
        return None if probs is None else probs.astype(float).tolist()


async def predict_rows(
    ctx: AppContext,
    principal: Principal,
    meta: RequestMeta,
    name: str,
    version: int | None,
    to_batch: Any,
) -> Prediction:
    """Resolve the model (404 unless admitted), build the batch with `to_batch(version)`
    (which raises 413/422), admit, predict off the loop, record, and audit the act.
    Every prediction of both APIs (v1 and Open Inference Protocol) passes here."""
    reg = registry(ctx)
    info, chosen = await reg.resolve(name, version, principal)
    rows = 0
    try:
        batch: FloatArray = to_batch(chosen)
        rows = int(batch.shape[0])
        headers = await _admit(ctx, principal, info, chosen, rows)
        outputs = await reg.predict(info, chosen, batch)
        check_finite(outputs)
    except MlgateError as exc:
        await _audit_predict(ctx, principal, meta, info, chosen, rows, "failure", exc.status)
        raise
    except Exception:
        # A model that fails on valid input: the client gets the generic 500 (logged by
        # the error handler); the audit trail still shows the failed prediction.
        await _audit_predict(ctx, principal, meta, info, chosen, rows, "failure", 500)
        raise
    # Usage and the audit event go to two group-commit writers: wait for both at once,
    # so an answered prediction pays one commit latency, not two. Either failing (the
    # database is down) answers 503; nothing is acknowledged before both committed.
    await asyncio.gather(
        _record(ctx, principal, info, chosen, rows),
        _audit_predict(ctx, principal, meta, info, chosen, rows, "success", 200),
    )
    return Prediction(info, chosen, outputs, headers)


# The one place a prediction is admitted (before inference, rows known) and recorded
# (after a success). Rate limits and quotas plug in here through `ctx.accounting`
# (mlgate.limits.service.Accounting): `admit` raises 429 or returns RateLimit headers,
# `record` counts usage. Both APIs reach these through `predict_rows` only.


async def _admit(
    ctx: AppContext,
    principal: Principal,
    info: cat.ModelInfo,
    version: cat.VersionInfo,
    rows: int,
) -> dict[str, str]:
    """Admit a prediction of `rows` rows, or raise (429). Returns headers for the answer."""
    return await accounting_of(ctx).admit(principal, rows)


async def _record(
    ctx: AppContext,
    principal: Principal,
    info: cat.ModelInfo,
    version: cat.VersionInfo,
    rows: int,
) -> None:
    """Record a successful prediction of `rows` rows (usage counters, metrics)."""
    await accounting_of(ctx).record(principal, info.name, version.version, rows)
    metrics.observe_prediction(info.name, rows)


def check_finite(outputs: Outputs) -> None:
    """422 naming the first row whose output is NaN or infinite: finite inputs far outside
    a model's range can overflow it, and JSON has no such numbers."""
    for arr in (outputs.values, outputs.probabilities):
        if arr is None or arr.size == 0:
            continue
        bad = np.flatnonzero(~np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1))
        if bad.size:
            row = int(bad[0])
            msg = (
                f"row {row}: the model produced a non-finite output; the inputs are likely "
                "outside the range it was trained for"
            )
            error = {"loc": ["body", "inputs", row], "msg": msg, "pointer": f"/inputs/{row}"}
            raise ValidationFailed(msg, errors=[error])


async def predict(
    ctx: AppContext,
    principal: Principal,
    meta: RequestMeta,
    name: str,
    inputs: list[Any],
    version: int | None,
) -> Prediction:
    max_rows = ctx.settings.max_batch_rows
    return await predict_rows(
        ctx,
        principal,
        meta,
        name,
        version,
        lambda v: rows_to_array(inputs, v.features, max_rows),
    )


async def _audit_predict(
    ctx: AppContext,
    principal: Principal,
    meta: RequestMeta,
    info: cat.ModelInfo,
    version: cat.VersionInfo,
    rows: int,
    outcome: Any,
    status: int,
) -> None:
    # Model, version and row count only: inputs and outputs never enter the audit log.
    details = {"model": info.name, "version": version.version, "rows": rows}
    await ctx.audit.submit(
        AuditEvent.of(
            Action.MODEL_PREDICT,
            outcome,
            meta=meta,
            principal=principal,
            resource=f"model:{info.name}",
            status=status,
            details=details,
        )
    )


# ---- changes -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UploadForm:
    name: str
    filename: str | None
    description: str | None = None
    task: str | None = None
    feature_names: list[str] | None = None
    class_labels: list[str] | None = None
    allowed_roles: list[str] | None = None


@dataclass(frozen=True, slots=True)
class SpooledUpload:
    path: Path
    size: int
    sha256: str


def _check_form(form: UploadForm) -> None:
    if not NAME_RE.match(form.name):
        raise ValidationFailed(
            "name: 1-64 characters of letters, digits, '.', '_' or '-', starting alphanumeric",
            errors=[{"loc": ["body", "name"], "msg": "invalid model name", "pointer": "/name"}],
        )
    if form.task is not None and form.task not in TASKS:
        raise ValidationFailed("task must be 'classification' or 'regression'")
    check_roles(form.allowed_roles)


def check_roles(roles: list[str] | None) -> None:
    for role in roles or []:
        if not ROLE_RE.match(role):
            raise ValidationFailed(f"allowed_roles: '{role[:64]}' is not a role name")


async def precheck(ctx: AppContext, form: UploadForm, spooled: SpooledUpload) -> CheckResult:
    """The sandbox verdict on an upload (cached per content and options)."""
    settings = ctx.settings
    hints = {
        "task": form.task,
        "feature_names": form.feature_names,
        "class_labels": form.class_labels,
    }
    limits = Limits(
        settings.upload_check_memory_mb, settings.upload_check_cpu_seconds, settings.max_model_bytes
    )
    fmt = detect_format(form.filename)
    return await check_upload(
        spooled.path, spooled.sha256, fmt, hints, trusted_types(settings), limits
    )


async def upload(
    ctx: AppContext,
    session: AsyncSession,
    principal: Principal | None,
    meta: RequestMeta | None,
    form: UploadForm,
    spooled: SpooledUpload,
    *,
    created_by: uuid.UUID | None = None,
    operator: bool = False,
) -> tuple[ModelRow, ModelVersionRow]:
    """Check the artifact in the sandbox, store its chunks, then publish one version row.
    The request session must not have been used before: chunks go first, in their own
    short transactions. `principal` is None for the system (demo models)."""
    settings = ctx.settings
    if principal is not None:
        created_by = principal.user_id
    # `operator`: the local CLI, whose user already holds the database itself.
    is_admin = operator or (principal is not None and ADMIN in principal.roles)
    _check_form(form)
    fmt = detect_format(form.filename)
    if fmt in PICKLE_FORMATS and not (settings.allow_pickle and is_admin):
        raise UnsafeFormat(
            "Pickle and joblib files can run code when loaded; upload .onnx or .skops"
        )
    if spooled.size > settings.max_model_bytes:
        raise PayloadTooLarge(f"The model file exceeds {settings.max_model_bytes} bytes")
    checked = await precheck(ctx, form, spooled)
    report = checked.report
    store = _store(ctx)
    converted = checked.converted
    serving_sha = spooled.sha256
    if converted is not None:
        serving_sha = await asyncio.to_thread(lambda: hashlib.sha256(converted).hexdigest())
    for _ in range(PUBLISH_ATTEMPTS):
        await store.put(spooled.path, spooled.sha256, spooled.size)
        if converted is not None:
            await store.put(converted, serving_sha, len(converted))
        published = await _publish(session, form, report, fmt, spooled, serving_sha, created_by)
        if published is not None:
            break
        await session.rollback()  # an artifact was collected meanwhile: store it again
    else:
        raise Unavailable("The model could not be published; retry")
    model, version = published
    number = version.version
    ctx.audit.record(
        session,
        AuditEvent.of(
            Action.MODEL_UPLOAD,
            "success",
            meta=meta,
            principal=principal,
            actor_id=created_by,
            actor=None if principal else ("cli" if operator else "system"),
            resource=f"model:{form.name}",
            status=201,
            details={
                "version": number,
                "sha256": spooled.sha256,
                "format": fmt,
                "serving_format": report["serving_format"],
            },
        ),
    )
    _touch(ctx, session, form.name)
    return model, version


async def _publish(
    session: AsyncSession,
    form: UploadForm,
    report: dict[str, Any],
    fmt: str,
    spooled: SpooledUpload,
    serving_sha: str,
    created_by: uuid.UUID | None,
) -> tuple[ModelRow, ModelVersionRow] | None:
    """Make the stored artifacts a new version, in the request's transaction. Concurrent
    uploads of one name queue on the model row and get consecutive numbers. None when
    an artifact (or the model) vanished under a concurrent delete: store again, retry."""
    now = utcnow()
    roles = list(dict.fromkeys(form.allowed_roles or DEFAULT_ALLOWED_ROLES))
    await repo.ensure_model(
        session,
        {
            "name": form.name,
            "description": form.description or "",
            "allowed_roles": roles,
            "created_by": created_by,
            "created_at": now,
            "updated_at": now,
        },
    )
    allocated = await repo.allocate_version(session, form.name)
    if allocated is None:
        return None
    model_id, number = allocated
    # After the model row's lock, so uploads and deletes take locks in one order.
    shas = {spooled.sha256, serving_sha}
    if await repo.lock_artifacts(session, sorted(shas)) != shas:
        return None
    model = await session.get(ModelRow, model_id, populate_existing=True)
    assert model is not None  # locked by this transaction
    if form.description is not None:
        model.description = form.description
    if form.allowed_roles is not None:
        model.allowed_roles = roles
    version = ModelVersionRow(
        model_id=model.id,
        version=number,
        task=report["task"],
        format=fmt,
        sha256=spooled.sha256,
        size=spooled.size,
        serving_sha256=serving_sha,
        serving_format=report["serving_format"],
        input_schema=report["features"],
        classes=report["classes"],
        runtime=report["runtime"],
        created_by=created_by,
    )
    await repo.add(session, version)
    model.default_version, model.updated_at = number, now
    await session.flush()
    return model, version


async def _model_row(session: AsyncSession, name: str) -> ModelRow:
    # Writers see every model, so "absent" is the only reason for a 404 here.
    row = await repo.get_model(session, name)
    if row is None:
        raise NotFound(f"Model '{name}' not found")
    return row


async def update(
    ctx: AppContext,
    session: AsyncSession,
    principal: Principal,
    meta: RequestMeta,
    name: str,
    description: str | None,
    allowed_roles: list[str] | None,
    default_version: int | None,
) -> cat.ModelInfo:
    row = await _model_row(session, name)
    versions = await repo.versions_of(session, row.id)
    changed: dict[str, Any] = {}
    if default_version is not None:
        if default_version not in {v.version for v in versions}:
            raise ValidationFailed(f"Model '{name}' has no version {default_version}")
        row.default_version = changed["default_version"] = default_version
    if allowed_roles is not None:
        check_roles(allowed_roles)
        row.allowed_roles = changed["allowed_roles"] = list(dict.fromkeys(allowed_roles))
    if description is not None:
        row.description = description
        changed["description"] = True
    row.updated_at = utcnow()
    await session.flush()
    ctx.audit.record(
        session,
        AuditEvent.of(
            Action.MODEL_UPDATE,
            "success",
            meta=meta,
            principal=principal,
            resource=f"model:{name}",
            status=200,
            details=changed,
        ),
    )
    _touch(ctx, session, name)
    return cat.model_info(row, versions)


async def delete(
    ctx: AppContext,
    session: AsyncSession,
    principal: Principal | None,
    meta: RequestMeta | None,
    name: str,
    version: int | None = None,
) -> None:
    """Delete a version (the previous one becomes default; the last takes the model with
    it) or the whole model; artifacts nothing references any more are collected."""
    row = await _model_row(session, name)
    versions = await repo.versions_of(session, row.id)
    doomed = versions if version is None else [v for v in versions if v.version == version]
    if not doomed:
        raise NotFound(f"Model '{name}' has no version {version}")
    shas = {s for v in doomed for s in (v.sha256, v.serving_sha256)}
    for v in doomed:
        await repo.delete_row(session, v)
    remaining = [v.version for v in versions if v not in doomed]
    if not remaining:
        await repo.delete_row(session, row)
    else:
        if row.default_version not in remaining:
            older = [n for n in remaining if n < (row.default_version or 0)]
            row.default_version = max(older) if older else max(remaining)
        row.updated_at = utcnow()
    await repo.collect_artifacts(session, candidates=sorted(shas), created_before=None)
    ctx.audit.record(
        session,
        AuditEvent.of(
            Action.MODEL_DELETE,
            "success",
            meta=meta,
            principal=principal,
            resource=f"model:{name}",
            status=204,
            details={"versions": [v.version for v in doomed], "model_deleted": not remaining},
        ),
    )
    _touch(ctx, session, name)
