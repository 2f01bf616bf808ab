"""Domain exceptions. Raised where a problem is found, rendered once as problem+json.

Services raise these; they never import fastapi. `app.py` installs the one handler.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    NOT_AUTHENTICATED = "not_authenticated"
    TOKEN_INVALID = "token_invalid"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_REVOKED = "token_revoked"
    ACCOUNT_DISABLED = "account_disabled"
    PERMISSION_DENIED = "permission_denied"
    PRIVILEGE_ESCALATION = "privilege_escalation"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CONFLICT = "conflict"
    USERNAME_TAKEN = "username_taken"
    EMAIL_TAKEN = "email_taken"
    LAST_ADMIN = "last_admin"
    VALIDATION_ERROR = "validation_error"
    WEAK_PASSWORD = "weak_password"
    REGISTRATION_CLOSED = "registration_closed"
    INVALID_REQUEST = "invalid_request"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    UNSAFE_FORMAT = "unsafe_format"
    RATE_LIMITED = "rate_limited"
    QUOTA_EXCEEDED = "quota_exceeded"
    UNAVAILABLE = "unavailable"
    INTERNAL_ERROR = "internal_error"


class MlgateError(Exception):
    """Base of every error a client may see.

    `status`, `code` and `title` are class defaults; `detail` explains this instance.
    `headers` are added to the answer (e.g. `Retry-After`), `errors` lists field problems.
    """

    status: int = 500
    code: ErrorCode = ErrorCode.INTERNAL_ERROR
    title: str = "Internal server error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        errors: list[dict[str, Any]] | None = None,
        status: int | None = None,
        code: ErrorCode | None = None,
        title: str | None = None,
    ) -> None:
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        if title is not None:
            self.title = title
        self.detail = detail or self.title
        self.headers = dict(headers or {})
        self.errors = errors
        super().__init__(self.detail)


class AuthError(MlgateError):
    """A 401: the credentials are missing or unusable. Carries an RFC 6750 challenge."""

    status = 401
    code = ErrorCode.NOT_AUTHENTICATED
    title = "Not authenticated"
    challenge_error: str | None = "invalid_token"

    def __init__(self, detail: str | None = None, *, token_sent: bool = True) -> None:
        super().__init__(detail)
        challenge = 'Bearer realm="mlgate"'
        if token_sent and self.challenge_error:
            safe = self.detail.replace('"', "'")
            challenge += f', error="{self.challenge_error}", error_description="{safe}"'
        self.headers["WWW-Authenticate"] = challenge


class NotAuthenticated(AuthError):
    code = ErrorCode.NOT_AUTHENTICATED
    title = "Not authenticated"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or "Credentials are required", token_sent=False)


class TokenInvalid(AuthError):
    code = ErrorCode.TOKEN_INVALID
    title = "Invalid token"


class TokenExpired(AuthError):
    code = ErrorCode.TOKEN_EXPIRED
    title = "Token expired"


class TokenRevoked(AuthError):
    code = ErrorCode.TOKEN_REVOKED
    title = "Token revoked"


class AccountDisabled(AuthError):
    code = ErrorCode.ACCOUNT_DISABLED
    title = "Account disabled"


class PermissionDenied(MlgateError):
    status = 403
    code = ErrorCode.PERMISSION_DENIED
    title = "Permission denied"

    def __init__(self, detail: str | None = None, *, scope: str | None = None) -> None:
        super().__init__(detail)
        if scope:
            self.headers["WWW-Authenticate"] = (
                f'Bearer realm="mlgate", error="insufficient_scope", scope="{scope}"'
            )


class PrivilegeEscalation(MlgateError):
    status = 403
    code = ErrorCode.PRIVILEGE_ESCALATION
    title = "Privilege escalation refused"


class RegistrationClosed(MlgateError):
    status = 403
    code = ErrorCode.REGISTRATION_CLOSED
    title = "Registration is closed"


class InvalidRequest(MlgateError):
    status = 400
    code = ErrorCode.INVALID_REQUEST
    title = "Invalid request"


class NotFound(MlgateError):
    status = 404
    code = ErrorCode.NOT_FOUND
    title = "Not found"


class Conflict(MlgateError):
    status = 409
    code = ErrorCode.CONFLICT
    title = "Conflict"


class UsernameTaken(Conflict):
    code = ErrorCode.USERNAME_TAKEN
    title = "Username taken"


class EmailTaken(Conflict):
    code = ErrorCode.EMAIL_TAKEN
    title = "Email taken"


class LastAdmin(Conflict):
    code = ErrorCode.LAST_ADMIN
    title = "Last administrator"


class ValidationFailed(MlgateError):
    status = 422
    code = ErrorCode.VALIDATION_ERROR
    title = "Validation error"


class WeakPassword(MlgateError):
    status = 422
    code = ErrorCode.WEAK_PASSWORD
    title = "Weak password"


class PayloadTooLarge(MlgateError):
    status = 413
    code = ErrorCode.PAYLOAD_TOO_LARGE
    title = "Payload too large"


class UnsafeFormat(MlgateError):
    status = 415
    code = ErrorCode.UNSAFE_FORMAT
    title = "Unsafe model format"


class RateLimited(MlgateError):
    status = 429
    code = ErrorCode.RATE_LIMITED
    title = "Too many requests"

    def __init__(self, detail: str | None = None, *, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after))})


class QuotaExceeded(RateLimited):
    code = ErrorCode.QUOTA_EXCEEDED
    title = "Daily quota exceeded"


class Unavailable(MlgateError):
    status = 503
    code = ErrorCode.UNAVAILABLE
    title = "Service unavailable"

    def __init__(self, detail: str | None = None, *, retry_after: int = 1) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


class OAuthError(Exception):
    """An RFC 6749 §5.2 error of the token endpoint, rendered in OAuth's own shape."""

    def __init__(
        self,
        error: str,
        description: str,
        *,
        status: int = 400,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.error = error
        self.description = description
        self.status = status
        self.headers = dict(headers or {})
        super().__init__(description)
