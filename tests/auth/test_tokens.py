"""Access-token make/verify: every forgery and every missing or wrong claim is refused."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from mlgate.auth.keystore import StoredKey, encrypt, generate_key
from mlgate.auth.tokens import TokenService
from mlgate.errors import TokenExpired, TokenInvalid
from mlgate.settings import Settings

KEK = b"k" * 32


@pytest.fixture
def service() -> tuple[TokenService, Any]:
    material = generate_key("EdDSA")
    svc = TokenService(Settings(), KEK)
    svc.load(
        [
            StoredKey(
                kid=material.kid,
                algorithm="EdDSA",
                public_pem=material.public_pem,
                private_encrypted=encrypt(KEK, material.private_pem, aad=material.kid.encode()),
                active=True,
                retired_at=None,
            )
        ]
    )
    private = serialization.load_pem_private_key(material.private_pem, None)
    return svc, (material, private)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": "mlgate",
        "aud": "mlgate-api",
        "sub": str(uuid.uuid4()),
        "iat": now,
        "exp": now + 600,
        "jti": "j1",
        "scope": "models:read",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(private: Any, kid: str, payload: dict[str, Any], **headers: Any) -> str:
    return jwt.encode(
        payload, private, algorithm="EdDSA", headers={"kid": kid, "typ": "at+jwt", **headers}
    )


def test_round_trip_and_scope(service: tuple[TokenService, Any]) -> None:
    svc, _ = service
    user = uuid.uuid4()
    issued = svc.issue_access(user_id=user, session_id=None, scope=frozenset({"models:read"}))
    verified = svc.verify(issued.token)
    assert verified.sub == user
    assert verified.scope == frozenset({"models:read"})
    assert issued.expires_in == 900


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"exp": int(time.time()) - 120}, TokenExpired),
        ({"nbf": int(time.time()) + 600}, TokenInvalid),
        ({"iss": "someone-else"}, TokenInvalid),
        ({"aud": "other-api"}, TokenInvalid),
        ({"exp": None}, TokenInvalid),
        ({"iat": None}, TokenInvalid),
        ({"jti": None}, TokenInvalid),
        ({"sub": None}, TokenInvalid),
        ({"sub": "not-a-uuid"}, TokenInvalid),
        ({"scope": ["models:read"]}, TokenInvalid),
    ],
)
def test_bad_claims_refused(
    service: tuple[TokenService, Any], overrides: dict[str, Any], error: type[Exception]
) -> None:
    svc, (material, private) = service
    with pytest.raises(error):
        svc.verify(sign(private, material.kid, claims(**overrides)))


def test_leeway_of_thirty_seconds(service: tuple[TokenService, Any]) -> None:
    svc, (material, private) = service
    svc.verify(sign(private, material.kid, claims(exp=int(time.time()) - 10)))
    with pytest.raises(TokenExpired):
        svc.verify(sign(private, material.kid, claims(exp=int(time.time()) - 45)))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_alg_none_refused(service: tuple[TokenService, Any]) -> None:
    svc, (material, _) = service
    for alg in ("none", "None", "NONE"):
        header = _b64(json.dumps({"alg": alg, "typ": "at+jwt", "kid": material.kid}).encode())
        body = _b64(json.dumps(claims()).encode())
        with pytest.raises(TokenInvalid):
            svc.verify(f"{header}.{body}.")


def test_hs256_signed_with_public_key_refused(service: tuple[TokenService, Any]) -> None:
    svc, (material, _) = service
    header = _b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": material.kid}).encode())
    body = _b64(json.dumps(claims()).encode())
    import hashlib
    import hmac

    signature = hmac.new(material.public_pem.encode(), f"{header}.{body}".encode(), hashlib.sha256)
    with pytest.raises(TokenInvalid):
        svc.verify(f"{header}.{body}.{_b64(signature.digest())}")


def test_unknown_kid_and_foreign_key_refused(service: tuple[TokenService, Any]) -> None:
    svc, (material, _) = service
    attacker = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(TokenInvalid):
        svc.verify(sign(attacker, "unknown-kid", claims()))
    with pytest.raises(TokenInvalid):  # attacker key with a copied kid
        svc.verify(sign(attacker, material.kid, claims()))


def test_tampered_payload_refused(service: tuple[TokenService, Any]) -> None:
    svc, (material, private) = service
    token = sign(private, material.kid, claims(scope="models:read"))
    header, _, signature = token.split(".")
    forged = _b64(json.dumps(claims(scope="users:write roles:write")).encode())
    with pytest.raises(TokenInvalid):
        svc.verify(f"{header}.{forged}.{signature}")


def test_wrong_typ_and_dangerous_headers_refused(service: tuple[TokenService, Any]) -> None:
    svc, (material, private) = service
    with pytest.raises(TokenInvalid):
        svc.verify(jwt.encode(claims(), private, algorithm="EdDSA", headers={"kid": material.kid}))
    for extra in (
        {"jku": "http://127.0.0.1:1/jwks"},
        {"x5u": "http://127.0.0.1:1/x"},
        {"crit": ["exp"]},
    ):
        with pytest.raises(TokenInvalid):
            svc.verify(sign(private, material.kid, claims(), **extra))


def test_hs256_mode_has_empty_jwks_and_verifies() -> None:
    settings = Settings(jwt_algorithm="HS256", jwt_secret="s" * 48)
    svc = TokenService(settings, KEK)
    assert svc.jwks() == {"keys": []}
    issued = svc.issue_access(user_id=uuid.uuid4(), session_id=None, scope=frozenset())
    assert svc.verify(issued.token).scope == frozenset()
    other = TokenService(Settings(jwt_algorithm="HS256", jwt_secret="t" * 48), KEK)
    with pytest.raises(TokenInvalid):
        other.verify(issued.token)


def test_short_hs256_secret_refused_by_settings() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        Settings(jwt_algorithm="HS256", jwt_secret="short")


def test_rotation_keeps_old_key_verifying(service: tuple[TokenService, Any]) -> None:
    svc, (old, _) = service
    token = svc.issue_access(user_id=uuid.uuid4(), session_id=None, scope=frozenset()).token
    new = generate_key("EdDSA")
    svc.load(
        [
            StoredKey(
                old.kid,
                "EdDSA",
                old.public_pem,
                encrypt(KEK, old.private_pem, aad=old.kid.encode()),
                False,
                None,
            ),
            StoredKey(
                new.kid,
                "EdDSA",
                new.public_pem,
                encrypt(KEK, new.private_pem, aad=new.kid.encode()),
                True,
                None,
            ),
        ]
    )
    svc.verify(token)  # old key still verifies
    fresh = svc.issue_access(user_id=uuid.uuid4(), session_id=None, scope=frozenset()).token
    assert jwt.get_unverified_header(fresh)["kid"] == new.kid
    assert {k["kid"] for k in svc.jwks()["keys"]} == {old.kid, new.kid}


def test_private_key_encrypted_at_rest_needs_the_kek() -> None:
    material = generate_key("EdDSA")
    blob = encrypt(KEK, material.private_pem, aad=material.kid.encode())
    assert b"PRIVATE KEY" not in base64.b64decode(blob)
    svc = TokenService(Settings(), b"x" * 32)
    from cryptography.exceptions import InvalidTag

    with pytest.raises(InvalidTag):
        svc.load([StoredKey(material.kid, "EdDSA", material.public_pem, blob, True, None)])
