"""Access tokens: short-lived JWTs with a pinned algorithm, verified once and cached.

Verification requires `exp iat iss aud sub jti`, `typ: at+jwt` and a known `kid`;
headers that point at outside key material (`jku`, `x5u`, `jwk`, `x5c`) or demand
unknown extensions (`crit`) are refused rather than followed.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization

from mlgate.auth.keystore import KeyMaterial, StoredKey, decrypt
from mlgate.errors import TokenExpired, TokenInvalid
from mlgate.rbac.permissions import format_scope, parse_scope
from mlgate.settings import Settings

LEEWAY_SECONDS = 30
MAX_TOKEN_CHARS = 8192
ACCESS_TYP = "at+jwt"
REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub", "jti"]
FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "crit"})
CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class AccessClaims:
    sub: uuid.UUID
    sid: uuid.UUID | None
    jti: str
    iat: int
    exp: int
    scope: frozenset[str]


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    jti: str
    expires_in: int


class TokenService:
    """Signs and verifies access tokens with the keys of the database key store."""

    def __init__(self, settings: Settings, kek: bytes) -> None:
        self.settings = settings
        self.algorithm = settings.jwt_algorithm
        self._kek = kek
        self._signing: tuple[str, Any] | None = None
        self._verifying: dict[str, Any] = {}
        self._public_pems: dict[str, str] = {}
        self._cache: OrderedDict[str, AccessClaims] = OrderedDict()
        if self.algorithm == "HS256":
            assert settings.jwt_secret is not None  # enforced by Settings
            secret = settings.jwt_secret.get_secret_value().encode()
            kid = "hs-" + hashlib.sha256(b"mlgate-kid:" + secret).hexdigest()[:12]
            self._signing = (kid, secret)
            self._verifying = {kid: secret}

    @property
    def uses_key_store(self) -> bool:
        return self.algorithm != "HS256"

    def load(self, keys: list[StoredKey]) -> None:
        """Install the stored keys: the newest active one signs, all listed verify."""
        if not self.uses_key_store:
            return
        verifying: dict[str, Any] = {}
        pems: dict[str, str] = {}
        signing: tuple[str, Any] | None = None
        for key in keys:
            if key.algorithm != self.algorithm:
                continue
            verifying[key.kid] = serialization.load_pem_public_key(key.public_pem.encode())
            pems[key.kid] = key.public_pem
            if key.active:
                private_pem = decrypt(self._kek, key.private_encrypted, aad=key.kid.encode())
                signing = (key.kid, serialization.load_pem_private_key(private_pem, None))
        self._verifying, self._public_pems, self._signing = verifying, pems, signing
        self._cache.clear()

    def load_material(self, material: KeyMaterial) -> None:
        """Sign with a key held in memory (tests and tools); it verifies too."""
        private = serialization.load_pem_private_key(material.private_pem, None)
        self._signing = (material.kid, private)
        self._verifying[material.kid] = serialization.load_pem_public_key(
            material.public_pem.encode()
        )
        self._public_pems[material.kid] = material.public_pem
        self._cache.clear()

    def issue_access(
        self, *, user_id: uuid.UUID, session_id: uuid.UUID | None, scope: frozenset[str]
    ) -> IssuedToken:
        if self._signing is None:
            raise RuntimeError("no signing key loaded")
        kid, key = self._signing
        now = int(time.time())
        ttl = self.settings.access_token_ttl_seconds
        jti = secrets.token_urlsafe(16)
        claims: dict[str, Any] = {
            "iss": self.settings.issuer,
            "aud": self.settings.audience,
            "sub": str(user_id),
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": jti,
            "scope": format_scope(scope),
        }
        if session_id is not None:
            claims["sid"] = str(session_id)
        token = jwt.encode(
            claims, key, algorithm=self.algorithm, headers={"kid": kid, "typ": ACCESS_TYP}
        )
        return IssuedToken(token=token, jti=jti, expires_in=ttl)

    def verify(self, token: str) -> AccessClaims:
        """Claims of a valid access token, or TokenInvalid / TokenExpired."""
        cached = self._cache.get(token)
        if cached is not None:
            if cached.exp + LEEWAY_SECONDS < time.time():
                self._cache.pop(token, None)
                raise TokenExpired("The access token has expired")
            self._cache.move_to_end(token)
            return cached
        claims = self._verify_uncached(token)
        self._cache[token] = claims
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return claims

    def _verify_uncached(self, token: str) -> AccessClaims:
        if len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
            raise TokenInvalid("The access token is malformed")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenInvalid("The access token is malformed") from None
        if header.get("alg") != self.algorithm or header.get("typ") != ACCESS_TYP:
            raise TokenInvalid("The access token has the wrong type or algorithm")
        if FORBIDDEN_HEADERS & header.keys():
            raise TokenInvalid("The access token carries a header mlgate does not accept")
        kid = header.get("kid")
        key = self._verifying.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise TokenInvalid("The access token was signed by an unknown key")
        try:
            payload = jwt.decode(
                token,
                key,
                algorithms=[self.algorithm],
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired("The access token has expired") from None
        except jwt.PyJWTError:
            raise TokenInvalid("The access token is invalid") from None
        return _claims(payload)

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        keys = []
        for kid, pem in self._public_pems.items():
            public = serialization.load_pem_public_key(pem.encode())
            jwk: dict[str, Any] = jwt.algorithms.get_default_algorithms()[self.algorithm].to_jwk(
                public, as_dict=True
            )
            jwk.update({"kid": kid, "use": "sig", "alg": self.algorithm})
            keys.append(jwk)
        return {"keys": keys}


def _claims(payload: dict[str, Any]) -> AccessClaims:
    try:
        sub = uuid.UUID(str(payload["sub"]))
        sid_raw = payload.get("sid")
        sid = uuid.UUID(str(sid_raw)) if sid_raw is not None else None
        scope = payload.get("scope", "")
        if not isinstance(scope, str):
            raise ValueError("scope")
        return AccessClaims(
            sub=sub,
            sid=sid,
            jti=str(payload["jti"]),
            iat=int(payload["iat"]),
            exp=int(payload["exp"]),
            scope=parse_scope(scope),
        )
    except (KeyError, ValueError, TypeError):
        raise TokenInvalid("The access token has malformed claims") from None
