"""Turn a presented credential into a Principal, reading only the in-memory view."""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import time
import uuid

from mlgate.auth.principal import Principal
from mlgate.auth.tokens import TokenService
from mlgate.auth.view import AuthView, UserState
from mlgate.errors import AccountDisabled, TokenExpired, TokenInvalid, TokenRevoked

API_KEY_PREFIX = "mlg_"
API_KEY_RE = re.compile(r"^mlg_[A-Za-z0-9_-]{43}$")
KEY_TOUCH_INTERVAL = 60.0


def digest(secret: str) -> str:
    """SHA-256 of a high-entropy secret (API key, refresh token): safe to store and index."""
    return hashlib.sha256(secret.encode()).hexdigest()


class Authenticator:
    def __init__(self, tokens: TokenService, view: AuthView) -> None:
        self.tokens = tokens
        self.view = view
        # last_used_at is coalesced: at most one write a minute per key, flushed in batches.
        self._key_uses: dict[uuid.UUID, float] = {}
        self._key_written: dict[uuid.UUID, float] = {}

    async def authenticate(self, credential: str) -> Principal:
        if credential.startswith(API_KEY_PREFIX):
            return await self.api_key(credential)
        return await self.access_token(credential)

    async def access_token(self, token: str) -> Principal:
        claims = self.tokens.verify(token)
        user = await self._active_user(claims.sub)
        if user.tokens_valid_after is not None and claims.iat < math.floor(user.tokens_valid_after):
            raise TokenRevoked("The access token has been revoked")
        if claims.sid is not None:
            session = await self.view.session(claims.sid)
            if session is None or session.revoked or session.user_id != user.id:
                raise TokenRevoked("The session of this token has ended")
        return Principal(
            user_id=user.id,
            username=user.username,
            kind="user",
            roles=user.roles,
            permissions=claims.scope & user.permissions,
            session_id=claims.sid,
            token_id=claims.jti,
        )

    async def api_key(self, key: str) -> Principal:
        if not API_KEY_RE.match(key):
            raise TokenInvalid("The API key is malformed")
        key_hash = digest(key)
        state = await self.view.api_key(key_hash)
        if state is None or not hmac.compare_digest(state.key_hash, key_hash):
            raise TokenInvalid("The API key is not valid")
        if state.revoked:
            raise TokenRevoked("The API key has been revoked")
        if state.expires_at is not None and state.expires_at <= time.time():
            raise TokenExpired("The API key has expired")
        user = await self._active_user(state.user_id)
        now = time.monotonic()
        if now - self._key_written.get(state.id, -math.inf) >= KEY_TOUCH_INTERVAL:
            self._key_uses[state.id] = time.time()
        return Principal(
            user_id=user.id,
            username=user.username,
            kind="api_key",
            roles=user.roles,
            permissions=state.scopes & user.permissions,
            api_key_id=state.id,
        )

    def take_key_uses(self) -> dict[uuid.UUID, float]:
        """Pending last-used times to write; marks them written."""
        uses, self._key_uses = self._key_uses, {}
        now = time.monotonic()
        for key_id in uses:
            self._key_written[key_id] = now
        return uses

    async def _active_user(self, user_id: uuid.UUID) -> UserState:
        user = await self.view.user(user_id)
        if user is None:
            raise TokenInvalid("The credential's account does not exist")
        if not user.is_active:
            raise AccountDisabled("The account is disabled")
        return user
