"""The per-process application context: settings and the long-lived services.

Built once in the lifespan (`app.state.ctx`); middleware and dependencies read it.
Subsystems add their own attribute here rather than hanging state on globals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlgate.db import Database
from mlgate.settings import Settings

if TYPE_CHECKING:
    from mlgate.audit.service import AuditService
    from mlgate.auth.authenticate import Authenticator
    from mlgate.auth.passwords import PasswordService
    from mlgate.auth.service import AuthService
    from mlgate.auth.throttle import LoginThrottle
    from mlgate.auth.tokens import TokenService
    from mlgate.auth.view import AuthView
    from mlgate.limits.service import Accounting
    from mlgate.metrics import Metrics
    from mlgate.notify import Notifier
    from mlgate.state import StateBackend


@dataclass
class AppContext:
    settings: Settings
    db: Database
    passwords: PasswordService
    tokens: TokenService
    auth: AuthService
    view: AuthView
    authenticator: Authenticator
    audit: AuditService
    kek: bytes
    state: StateBackend | None = None
    # Abuse control (mlgate.limits, mlgate.auth.throttle), built with the context.
    accounting: Accounting | None = None
    throttle: LoginThrottle | None = None
    # Set by the serving domain (mlgate.serving) at startup.
    models: Any = None
    # Observability and the Redis change-notice accelerator (mlgate.metrics, .notify).
    metrics: Metrics | None = None
    notifier: Notifier | None = None
    extras: dict[str, Any] = field(default_factory=dict)


META_KEY = "mlgate.meta"


@dataclass(frozen=True, slots=True)
class RequestMeta:
    """Facts about the request every audit event and log line needs."""

    request_id: str
    ip: str
    user_agent: str
