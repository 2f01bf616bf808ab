"""Request and response bodies of the auth routes."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints

Username = Annotated[
    str, StringConstraints(min_length=3, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")
]


class RegisterIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: Username
    email: EmailStr = Field(max_length=320)
    # Length and strength are the password policy's job (422 weak_password, with a reason);
    # the bound here only stops absurd bodies before hashing.
    password: str = Field(max_length=4096)


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    refresh_token: str
    scope: str


class JwksOut(BaseModel):
    keys: list[dict[str, str]]
