"""Immutable snapshots of registry metadata, built from database rows."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mlgate.auth.principal import Principal
from mlgate.rbac.permissions import Permission
from mlgate.serving.runtime import Feature, ModelSpec, Task
from mlgate.serving.tables import ModelRow, ModelVersionRow


@dataclass(frozen=True, slots=True)
class VersionInfo:
    version: int
    task: Task
    format: str
    serving_format: str
    sha256: str
    serving_sha256: str
    size: int
    features: tuple[Feature, ...]
    classes: tuple[str, ...] | None
    runtime: dict[str, Any]
    created_at: datetime
    created_by: uuid.UUID | None


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    description: str
    allowed_roles: tuple[str, ...]
    default_version: int | None
    versions: dict[int, VersionInfo]

    def spec(self, version: VersionInfo) -> ModelSpec:
        return ModelSpec(
            name=self.name,
            version=version.version,
            task=version.task,
            features=version.features,
            classes=version.classes,
            format=version.format,
            serving_format=version.serving_format,
        )

    @property
    def default(self) -> VersionInfo | None:
        if self.default_version is None:
            return None
        return self.versions.get(self.default_version)

    def admits(self, principal: Principal) -> bool:
        """Writers see every model; everyone else needs a role the model admits."""
        if principal.has(Permission.MODELS_WRITE):
            return True
        return bool(set(self.allowed_roles) & principal.roles)


def version_info(row: ModelVersionRow) -> VersionInfo:
    return VersionInfo(
        version=row.version,
        task="classification" if row.task == "classification" else "regression",
        format=row.format,
        serving_format=row.serving_format,
        sha256=row.sha256,
        serving_sha256=row.serving_sha256,
        size=row.size,
        features=tuple(
            Feature(f["name"], "integer" if f.get("type") == "integer" else "number")
            for f in row.input_schema
        ),
        classes=tuple(row.classes) if row.classes is not None else None,
        runtime=dict(row.runtime or {}),
        created_at=row.created_at,
        created_by=row.created_by,
    )


def model_info(row: ModelRow, versions: Sequence[ModelVersionRow]) -> ModelInfo:
    return ModelInfo(
        name=row.name,
        description=row.description or "",
        allowed_roles=tuple(row.allowed_roles or ()),
        default_version=row.default_version,
        versions={v.version: version_info(v) for v in versions},
    )


def build(models: Sequence[ModelRow], versions: Sequence[ModelVersionRow]) -> dict[str, ModelInfo]:
    by_model: dict[uuid.UUID, list[ModelVersionRow]] = {}
    for v in versions:
        by_model.setdefault(v.model_id, []).append(v)
    return {m.name: model_info(m, by_model.get(m.id, [])) for m in models}
