"""The audit event value object and the catalogue of actions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from mlgate.auth.principal import Principal
from mlgate.context import RequestMeta
from mlgate.db import utcnow

Outcome = Literal["success", "failure", "denied"]
ActorType = Literal["user", "api_key", "anonymous"]


class Action:
    REGISTER = "auth.register"
    LOGIN_SUCCESS = "auth.login.success"
    LOGIN_FAILURE = "auth.login.failure"
    TOKEN_REFRESH = "auth.token.refresh"
    TOKEN_REUSE = "auth.token.reuse_detected"
    TOKEN_REVOKE = "auth.token.revoke"
    LOGOUT = "auth.logout"
    PASSWORD_CHANGE = "user.password.change"
    EMAIL_CHANGE = "user.email.change"
    SESSION_REVOKE = "user.session.revoke"
    APIKEY_CREATE = "apikey.create"
    APIKEY_REVOKE = "apikey.revoke"
    ADMIN_USER_CREATE = "admin.user.create"
    ADMIN_USER_UPDATE = "admin.user.update"
    ADMIN_USER_DELETE = "admin.user.delete"
    ADMIN_USER_SESSIONS = "admin.user.sessions.revoke"
    ADMIN_USER_PASSWORD = "admin.user.password"
    ADMIN_USER_UNLOCK = "admin.user.unlock"
    ROLE_CREATE = "admin.role.create"
    ROLE_UPDATE = "admin.role.update"
    ROLE_DELETE = "admin.role.delete"
    MODEL_UPLOAD = "model.upload"
    MODEL_UPDATE = "model.update"
    MODEL_DELETE = "model.delete"
    MODEL_PREDICT = "model.predict"
    ACCESS_DENIED = "access.denied"
    AUDIT_PURGE = "audit.purge"


@dataclass(slots=True)
class AuditEvent:
    action: str
    outcome: Outcome
    actor_id: uuid.UUID | None = None
    actor: str | None = None
    actor_type: ActorType = "anonymous"
    resource: str | None = None
    status: int | None = None
    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=utcnow)
    id: uuid.UUID = field(default_factory=uuid.uuid4)

    @classmethod
    def of(
        cls,
        action: str,
        outcome: Outcome,
        *,
        meta: RequestMeta | None,
        principal: Principal | None = None,
        resource: str | None = None,
        status: int | None = None,
        details: dict[str, Any] | None = None,
        actor_id: uuid.UUID | None = None,
        actor: str | None = None,
    ) -> AuditEvent:
        """An event for a request, its actor taken from the principal when there is one."""
        actor_type: ActorType = "anonymous"
        if principal is not None:
            actor_id, actor, actor_type = principal.user_id, principal.username, principal.kind
        elif actor_id is not None:
            actor_type = "user"
        return cls(
            action=action,
            outcome=outcome,
            actor_id=actor_id,
            actor=actor,
            actor_type=actor_type,
            resource=resource,
            status=status,
            ip=meta.ip if meta else None,
            user_agent=meta.user_agent if meta else None,
            request_id=meta.request_id if meta else None,
            details=dict(details or {}),
        )
