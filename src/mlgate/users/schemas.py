"""Bodies of the user routes. Write schemas forbid unknown fields (no mass assignment)."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, EmailStr, Field


class UserOut(BaseModel):
    id: uuid.UUID
    username: str
    email: str
    roles: list[str]
    permissions: list[str]
    is_active: bool
    created_at: datetime
    last_login_at: datetime | None


class UpdateMeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailStr | None = Field(None, max_length=320)
    current_password: str | None = Field(None, max_length=4096)


class PasswordChangeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: str = Field(max_length=4096)
    new_password: str = Field(max_length=4096)
