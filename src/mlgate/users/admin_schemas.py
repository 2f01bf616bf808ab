"""Bodies of the admin user routes and of the session listing. Write schemas forbid
unknown fields (no mass assignment)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from mlgate.auth.schemas import Username
from mlgate.rbac.schemas import MAX_QUOTA
from mlgate.users.schemas import UserOut

RoleName = Annotated[str, StringConstraints(min_length=1, max_length=32)]


class AdminUserOut(UserOut):
    daily_quota: int | None = Field(description="Per-user override of the daily quota")
    updated_at: datetime


class UserPage(BaseModel):
    items: list[AdminUserOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")


class AdminUserCreateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: Username
    email: EmailStr = Field(max_length=320)
    password: str = Field(max_length=4096)
    roles: list[RoleName] | None = Field(None, max_length=32)
    is_active: bool = True


class AdminUserPatchIn(BaseModel):
    """Only the fields sent change; `daily_quota: null` removes the override."""

    model_config = ConfigDict(extra="forbid")

    roles: list[RoleName] | None = Field(None, max_length=32)
    is_active: bool | None = None
    email: EmailStr | None = Field(None, max_length=320)
    daily_quota: int | None = Field(None, ge=0, le=MAX_QUOTA)


class AdminPasswordIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: str = Field(max_length=4096)


class SessionOut(BaseModel):
    id: uuid.UUID
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    ip: str | None
    user_agent: str | None
    current: bool = Field(description="True for the session of the calling token")
