"""Forged access tokens (RFC 8725, OWASP ASVS V9): every one is refused with 401 and an
RFC 6750 `error="invalid_token"` challenge, and none makes the server fetch anything.

Each forgery is built next to a positive control made the same way with honest inputs,
so a refusal is proven to come from the attack and not from a broken helper.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from mlgate.auth.keystore import KeyMaterial, generate_key
from tests.conftest import USER_PASSWORD, Service, bearer
from tests.security._util import assert_no_leak, assert_problem

pytestmark = pytest.mark.asyncio
ME = "/api/v1/users/me"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def compact(header: Any, payload: Any, signature: bytes = b"") -> str:
    return f"{b64json(header)}.{b64json(payload)}.{b64(signature)}"


def signing_input(token: str) -> bytes:
    return token.rsplit(".", 1)[0].encode()


def sign_ed25519(header: dict[str, Any], payload: Any, private: Any) -> str:
    unsigned = f"{b64json(header)}.{b64json(payload)}"
    return f"{unsigned}.{b64(private.sign(unsigned.encode()))}"


def sign_hs256(header: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    unsigned = f"{b64json(header)}.{b64json(payload)}"
    mac = hmac.new(secret, unsigned.encode(), hashlib.sha256).digest()
    return f"{unsigned}.{b64(mac)}"


class Forge:
    """The server's trusted key (installed through TokenService.load_material, the
    hook meant for tools and tests), an attacker's key, and honest claims."""

    def __init__(self, svc: Service, user_id: str) -> None:
        self.svc = svc
        self.settings = svc.settings
        self.user_id = user_id
        self.server: KeyMaterial = generate_key("EdDSA")
        svc.ctx.tokens.load_material(self.server)
        self.server_private = serialization.load_pem_private_key(self.server.private_pem, None)
        self.attacker = ed25519.Ed25519PrivateKey.generate()

    def claims(self, **changes: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.settings.issuer,
            "aud": self.settings.audience,
            "sub": self.user_id,
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "jti": uuid.uuid4().hex,
            "scope": "models:read models:predict apikeys:write",
        }
        for key, value in changes.items():
            if value is _DROP:
                claims.pop(key, None)
            else:
                claims[key] = value
        return claims

    def header(self, **changes: Any) -> dict[str, Any]:
        header: dict[str, Any] = {"alg": "EdDSA", "typ": "at+jwt", "kid": self.server.kid}
        for key, value in changes.items():
            if value is _DROP:
                header.pop(key, None)
            else:
                header[key] = value
        return header

    def trusted(self, header: dict[str, Any] | None = None, **claims: Any) -> str:
        return sign_ed25519(header or self.header(), self.claims(**claims), self.server_private)

    def by_attacker(self, header: dict[str, Any] | None = None, **claims: Any) -> str:
        return sign_ed25519(header or self.header(), self.claims(**claims), self.attacker)


_DROP = object()
DEEP_JSON = b'{"a":' + b"[" * 2500 + b"]" * 2500 + b"}"


async def _forge(svc: Service) -> Forge:
    await svc.register("victim")
    token = await svc.token("victim", USER_PASSWORD)
    me = await svc.client.get(ME, headers=bearer(token))
    assert me.status_code == 200, me.text
    forge = Forge(svc, me.json()["id"])
    # Positive control: the helpers make tokens the server accepts.
    control = await svc.client.get(ME, headers=bearer(forge.trusted()))
    assert control.status_code == 200, control.text
    assert control.json()["username"] == "victim"
    return forge


def assert_invalid_token(response: httpx.Response, name: str) -> None:
    assert response.status_code == 401, (name, response.status_code, response.text[:300])
    challenge = response.headers.get("www-authenticate", "")
    assert challenge.startswith("Bearer"), (name, challenge)
    assert 'error="invalid_token"' in challenge, (name, challenge)
    assert_problem(response, 401)


async def _refused(svc: Service, corpus: dict[str, str]) -> None:
    failures = []
    for name, token in corpus.items():
        response = await svc.client.get(ME, headers={"Authorization": f"Bearer {token}"})
        try:
            assert_invalid_token(response, name)
        except AssertionError as exc:
            failures.append(f"{name}: {exc}")
    assert not failures, "accepted or mis-answered forgeries:\n" + "\n".join(failures)


async def _jwks_keys(svc: Service) -> list[dict[str, Any]]:
    response = await svc.client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    keys: list[dict[str, Any]] = response.json()["keys"]
    assert keys, "the JWKS lists no key"
    return keys


async def test_alg_none_and_signature_stripping(svc: Service) -> None:
    forge = await _forge(svc)
    good = forge.trusted()
    head, body, sig = good.split(".")
    corpus: dict[str, str] = {}
    for alg in ("none", "None", "NONE", "nOnE", "NoNe"):
        header = forge.header(alg=alg)
        corpus[f"alg={alg} empty signature"] = compact(header, forge.claims())
        corpus[f"alg={alg} original signature"] = f"{b64json(header)}.{body}.{sig}"
    corpus["alg missing"] = compact(forge.header(alg=_DROP), forge.claims())
    corpus["empty signature"] = f"{head}.{body}."
    corpus["signature of zeros"] = f"{head}.{body}.{b64(bytes(64))}"
    corpus["truncated signature"] = f"{head}.{body}.{sig[:-4]}"
    await _refused(svc, corpus)


async def test_hs256_signed_with_the_public_key(svc: Service) -> None:
    forge = await _forge(svc)
    corpus: dict[str, str] = {}
    for jwk in await _jwks_keys(svc):
        public = jwt.algorithms.OKPAlgorithm.from_jwk(json.dumps(jwk))
        pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        header = forge.header(alg="HS256", kid=jwk["kid"])
        secrets_by_form = {
            "PEM": pem,
            "PEM without newline": pem.strip(),
            "JWK JSON": json.dumps(jwk).encode(),
            "JWK x": jwk["x"].encode(),
            "raw key bytes": raw,
        }
        for form, secret in secrets_by_form.items():
            corpus[f"HS256 with {form} of {jwk['kid']}"] = sign_hs256(
                header, forge.claims(), secret
            )
    await _refused(svc, corpus)


async def test_payload_tampering_keeps_no_signature_valid(svc: Service) -> None:
    forge = await _forge(svc)
    admin = await svc.client.get(ME, headers=await svc.admin_headers())
    admin_id = admin.json()["id"]
    head, body, sig = forge.trusted().split(".")
    everything = "models:read models:predict models:write users:read users:write roles:write"
    corpus = {
        "sub swapped to the admin": f"{head}.{b64json(forge.claims(sub=admin_id))}.{sig}",
        "scope widened": f"{head}.{b64json(forge.claims(scope=everything))}.{sig}",
        "exp extended": f"{head}.{b64json(forge.claims(exp=2**31))}.{sig}",
        "header kid swapped": f"{b64json(forge.header(kid='other'))}.{body}.{sig}",
    }
    await _refused(svc, corpus)


async def test_embedded_key_headers_and_crit(svc: Service) -> None:
    forge = await _forge(svc)
    attacker_jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(forge.attacker.public_key()))
    attacker_jwk["kid"] = "attacker"
    cert_like = base64.b64encode(b"not a certificate").decode()
    corpus = {
        "embedded jwk, attacker kid": forge.by_attacker(
            forge.header(kid="attacker", jwk=attacker_jwk)
        ),
        "embedded jwk, server kid": forge.by_attacker(forge.header(jwk=attacker_jwk)),
        "x5c chain, attacker key": forge.by_attacker(forge.header(x5c=[cert_like])),
        # Signed by the trusted key: the header alone must be refused.
        "embedded jwk, trusted signature": forge.trusted(forge.header(jwk=attacker_jwk)),
        "unknown crit, trusted signature": forge.trusted(
            forge.header(crit=["urn:example:must-understand"], **{"urn:example:must-understand": 1})
        ),
        "crit naming exp, trusted signature": forge.trusted(forge.header(crit=["exp"])),
    }
    await _refused(svc, corpus)


async def test_jku_and_x5u_are_never_fetched(svc: Service) -> None:
    forge = await _forge(svc)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        attacker_jwk = json.loads(
            jwt.algorithms.OKPAlgorithm.to_jwk(forge.attacker.public_key())
        ) | {"kid": "attacker"}
        corpus = {}
        for header_name, path in (("jku", "/jwks.json"), ("x5u", "/cert.pem")):
            for host in ("127.0.0.1", "localhost"):
                url = f"http://{host}:{port}{path}"
                corpus[f"{header_name} {host}, attacker kid"] = forge.by_attacker(
                    forge.header(kid="attacker", **{header_name: url})
                )
                corpus[f"{header_name} {host}, server kid, attacker key"] = forge.by_attacker(
                    forge.header(**{header_name: url})
                )
                corpus[f"{header_name} {host}, trusted signature"] = forge.trusted(
                    forge.header(**{header_name: url})
                )
        assert attacker_jwk["kid"] == "attacker"
        await _refused(svc, corpus)
        time.sleep(0.2)  # a fetch started in a background thread would have connected by now
        try:
            connection, peer = listener.accept()
        except BlockingIOError:
            pass
        else:
            connection.close()
            pytest.fail(f"the server connected to the jku/x5u URL (from {peer})")
    finally:
        listener.close()


async def test_kid_injection_and_unknown_kid(svc: Service) -> None:
    forge = await _forge(svc)
    hostile_kids = [
        "../../../../../../dev/null",
        "/dev/null",
        "../../../../etc/passwd",
        "..\\..\\..\\windows\\win.ini",
        "file:///dev/null",
        "' OR '1'='1",
        "x' UNION SELECT 'AAAA' --",
        "1; DROP TABLE users; --",
        "$(touch /tmp/mlgate-kid-pwned)",
        "`id`",
        "| nc 127.0.0.1 9 #",
        "kid\x00" + forge.server.kid,
        forge.server.kid + " ",
        forge.server.kid.upper(),
        "",
        "unknown-kid",
    ]
    corpus: dict[str, str] = {}
    for kid in hostile_kids:
        header = forge.header(kid=kid)
        corpus[f"kid={kid!r} attacker key"] = forge.by_attacker(header)
        # The classic: kid points at /dev/null, so the "key" is empty.
        corpus[f"kid={kid!r} HS256 empty secret"] = sign_hs256(
            forge.header(alg="HS256", kid=kid), forge.claims(), b""
        )
    for kid in (["list"], {"o": 1}, 7, None, True):
        corpus[f"kid of type {type(kid).__name__}"] = forge.by_attacker(forge.header(kid=kid))
    corpus["kid missing"] = forge.trusted(forge.header(kid=_DROP))
    corpus["copied kid, attacker key"] = forge.by_attacker()
    await _refused(svc, corpus)
    assert not os.path.exists("/tmp/mlgate-kid-pwned")


async def test_claims_are_enforced(svc: Service) -> None:
    forge = await _forge(svc)
    now = int(time.time())
    # Positive controls: a token at the edge of the 30 s leeway is still accepted.
    edge = await svc.client.get(ME, headers=bearer(forge.trusted(exp=now - 5)))
    assert edge.status_code == 200, edge.text
    corpus = {
        "expired": forge.trusted(exp=now - 120, iat=now - 900, nbf=now - 900),
        "long expired": forge.trusted(exp=1, iat=0, nbf=0),
        "nbf in the future": forge.trusted(nbf=now + 300),
        "expired despite a fresh iat": forge.trusted(exp=now - 60, iat=now),
        "missing exp": forge.trusted(exp=_DROP),
        "missing iat": forge.trusted(iat=_DROP),
        "missing sub": forge.trusted(sub=_DROP),
        "missing jti": forge.trusted(jti=_DROP),
        "missing iss": forge.trusted(iss=_DROP),
        "missing aud": forge.trusted(aud=_DROP),
        "wrong iss": forge.trusted(iss="https://evil.example"),
        "wrong aud": forge.trusted(aud="another-api"),
        "aud list without ours": forge.trusted(aud=["another-api", "third"]),
        "sub of nobody": forge.trusted(sub=str(uuid.uuid4())),
        "sub not a uuid": forge.trusted(sub="admin"),
        "exp a string": forge.trusted(exp="tomorrow"),
        "typ missing": forge.trusted(forge.header(typ=_DROP)),
        "typ JWT": forge.trusted(forge.header(typ="JWT")),
        "alg RS256 label on an EdDSA signature": forge.trusted(forge.header(alg="RS256")),
    }
    await _refused(svc, corpus)


async def test_refresh_token_is_not_an_access_token(svc: Service) -> None:
    await svc.register("carol")
    tokens = await svc.login("carol", USER_PASSWORD)
    ok = await svc.client.get(ME, headers=bearer(tokens["access_token"]))
    assert ok.status_code == 200
    await _refused(svc, {"refresh token as bearer": tokens["refresh_token"]})
    as_key = await svc.client.get(ME, headers={"X-API-Key": tokens["refresh_token"]})
    assert as_key.status_code == 401, as_key.text


async def test_access_token_in_query_string_is_ignored(svc: Service) -> None:
    await svc.register("dave")
    token = await svc.token("dave", USER_PASSWORD)
    for name in ("access_token", "token", "api_key"):
        response = await svc.client.get(ME, params={name: token})
        assert response.status_code == 401, (name, response.text)
        body = assert_problem(response, 401)
        assert body["code"] == "not_authenticated"
        # No token was received through a channel mlgate reads: no invalid_token error.
        assert "error=" not in response.headers["www-authenticate"]


async def test_non_compact_serializations(svc: Service) -> None:
    forge = await _forge(svc)
    good = forge.trusted()
    head, body, sig = good.split(".")
    flattened = json.dumps({"protected": head, "payload": body, "signature": sig})
    general = json.dumps({"payload": body, "signatures": [{"protected": head, "signature": sig}]})
    std_b64 = good.replace("-", "+").replace("_", "/")
    corpus = {
        "flattened JSON serialization": flattened,
        "general JSON serialization": general,
        "two segments": f"{head}.{body}",
        "four segments": f"{good}.{sig}",
        "JWE-shaped five segments": f"{head}..{body}.{sig}.{sig[:22]}",
        "padded segments": f"{head}==.{body}.{sig}",
        "whitespace inside": f"{head}. {body}.{sig}",
        "quoted": f'"{good}"',
        "detached payload": f"{head}..{sig}",
        "header not JSON": f"{b64(b'not json')}.{body}.{sig}",
        "header a JSON list": f"{b64json(['alg', 'EdDSA'])}.{body}.{sig}",
        "payload a JSON list": sign_ed25519(forge.header(), ["sub"], forge.server_private),
        "deeply nested header": f"{b64(DEEP_JSON)}.{body}.",
    }
    if std_b64 != good:
        corpus["standard base64 alphabet"] = std_b64
    await _refused(svc, corpus)


async def test_malformed_authorization_headers(svc: Service) -> None:
    forge = await _forge(svc)
    good = forge.trusted()
    for value in (
        f"Basic {good}",
        f"Token {good}",
        "Bearer",
        "Bearer ",
        f"Bearer {good} extra",
        f"Bearer\t{good}x",
    ):
        response = await svc.client.get(ME, headers={"Authorization": value})
        assert response.status_code == 401, (value, response.text)
        assert_problem(response, 401)
    both = await svc.client.get(ME, headers={**bearer(good), "X-API-Key": "mlg_" + "a" * 43})
    assert both.status_code == 400, both.text
    assert_problem(both, 400)


@pytest.mark.parametrize("size", [8193, 65_536, 1_048_576])
async def test_oversized_tokens_fail_fast(svc: Service, size: int) -> None:
    forge = await _forge(svc)
    padding = "A" * size
    shapes: dict[str, Callable[[], str]] = {
        "long payload": lambda: f"{b64json(forge.header())}.{padding}.{b64(bytes(64))}",
        "long header": lambda: f"{padding}.{b64json(forge.claims())}.",
        "many dots": lambda: "." * size,
        "huge claim": lambda: forge.by_attacker(pad="x" * size),
    }
    for name, make in shapes.items():
        token = make()
        started = time.perf_counter()
        response = await svc.client.get(ME, headers={"Authorization": f"Bearer {token}"})
        elapsed = time.perf_counter() - started
        assert response.status_code < 500, (name, size, response.status_code)
        assert response.status_code in (400, 401, 413, 431), (name, size, response.status_code)
        assert elapsed < 1.0, f"{name} of {size} bytes took {elapsed:.2f}s"
        assert_no_leak(response)
