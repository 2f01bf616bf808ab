"""Bodies of the role routes. Write schemas forbid unknown fields."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from mlgate.rbac.permissions import Permission

RoleName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{1,31}$")]
RateLimit = Annotated[
    str, StringConstraints(pattern=r"^\s*\d+\s*/\s*(second|minute|hour|day)s?\s*$", max_length=32)
]


# Stored in a 32-bit column on every backend.
MAX_QUOTA = 2**31 - 1


class RoleOut(BaseModel):
    name: str
    description: str
    permissions: list[str]
    builtin: bool
    rate_limit: str | None
    daily_quota: int | None
    created_at: datetime


class RoleCreateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: RoleName
    permissions: list[Permission] = Field(max_length=64)
    description: str = Field("", max_length=256)
    rate_limit: RateLimit | None = None
    daily_quota: int | None = Field(None, ge=0, le=MAX_QUOTA)


class RoleUpdateIn(BaseModel):
    """Fields left out stay as they are; `rate_limit` / `daily_quota` null clears them."""

    model_config = ConfigDict(extra="forbid")

    permissions: list[Permission] | None = Field(None, max_length=64)
    description: str | None = Field(None, max_length=256)
    rate_limit: RateLimit | None = None
    daily_quota: int | None = Field(None, ge=0, le=MAX_QUOTA)
