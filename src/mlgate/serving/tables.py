"""Model registry tables: models, their versions, and content-addressed artifact chunks."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from mlgate.db import Base, UTCDateTime, utcnow


class ModelRow(Base):
    """A named model. Task, schema and classes live on versions; the default one speaks."""

    __tablename__ = "models"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    allowed_roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    default_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Version numbers are never reused, even after the newest version is deleted.
    latest_version: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[uuid.UUID | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ModelVersionRow(Base):
    """One immutable upload. `sha256` is what was uploaded; `serving_sha256` is what is
    loaded (the ONNX conversion of a `.skops` file, or the upload itself)."""

    __tablename__ = "model_versions"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    model_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("models.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(Integer)
    task: Mapped[str] = mapped_column(String(16))
    format: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str] = mapped_column(ForeignKey("model_artifacts.sha256"), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    serving_sha256: Mapped[str] = mapped_column(ForeignKey("model_artifacts.sha256"), index=True)
    serving_format: Mapped[str] = mapped_column(String(16))
    input_schema: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    classes: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    runtime: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_by: Mapped[uuid.UUID | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (UniqueConstraint("model_id", "version"),)


class ArtifactRow(Base):
    """A complete artifact: inserted only after all its chunks, so its presence means
    the bytes are whole."""

    __tablename__ = "model_artifacts"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    chunk_count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ArtifactChunkRow(Base):
    """At most 1 MiB of an artifact. No foreign key: chunks are written before the
    artifact row that completes them."""

    __tablename__ = "model_artifact_chunks"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
