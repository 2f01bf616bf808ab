"""Request and response bodies of the serving API (v1)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class FeatureOut(BaseModel):
    name: str
    type: Literal["number", "integer"]


class InputSchemaOut(BaseModel):
    features: list[FeatureOut]


class VersionOut(BaseModel):
    version: int
    sha256: str
    size: int
    created_at: datetime
    created_by: uuid.UUID | None
    format: str
    task: Literal["classification", "regression"]


class ModelOut(BaseModel):
    name: str
    description: str
    task: Literal["classification", "regression"] | None
    default_version: int | None
    versions: list[VersionOut]
    input_schema: InputSchemaOut
    classes: list[str] | None = None
    allowed_roles: list[str]


class ModelList(BaseModel):
    items: list[ModelOut]


class PredictRequest(BaseModel):
    """Rows as lists in feature order, or as objects keyed by feature name."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"inputs": [[5.1, 3.5, 1.4, 0.2]]}]},
    )

    inputs: list[Any] = Field(description="Rows: lists of numbers, or {feature: number} objects")
    version: int | None = Field(None, ge=1, description="Defaults to the model's default version")


class PredictResponse(BaseModel):
    model: str
    version: int
    predictions: list[str] | list[float]
    probabilities: list[list[float]] | None = Field(
        None, description="Classifiers: one list per row, in `classes` order"
    )
    request_id: str


class UploadResponse(BaseModel):
    name: str
    version: int
    sha256: str
    size: int
    task: Literal["classification", "regression"]
    format: str


class ModelPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(None, max_length=4000)
    allowed_roles: list[str] | None = Field(None, max_length=64)
    default_version: int | None = Field(None, ge=1)
