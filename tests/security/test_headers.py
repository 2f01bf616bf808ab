"""Headers and error shapes every answer owes a client (ASVS V3/V16, DESIGN § Errors):
request ids, nosniff, problem+json on framework errors, self-hosted docs with a CSP,
and CORS that is off by default and never reflects origins with credentials."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import Service, ServiceFactory
from tests.security._util import assert_no_leak, assert_problem, fill_path, openapi, operations

pytestmark = pytest.mark.asyncio
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
EXTERNAL_URL_RE = re.compile(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}", re.IGNORECASE)
ORIGIN = "https://evil.example"


@pytest.mark.parametrize(
    "incoming", ["abc-123", "A.b_c-9", "x" * 64, "0", "a1b2c3d4e5f60718293a4b5c6d7e8f90"]
)
async def test_request_id_kept_when_well_formed(svc: Service, incoming: str) -> None:
    response = await svc.client.get("/healthz", headers={"X-Request-ID": incoming})
    assert response.headers["x-request-id"] == incoming


async def test_request_id_replaced_when_malformed(svc: Service) -> None:
    hostile = [
        "x" * 65,
        "has space",
        "<script>alert(1)</script>",
        "id\r\nSet-Cookie: a=b",
        "a/b",
        "a;b",
        "é",
        '"quoted"',
        "${jndi:ldap://127.0.0.1/a}",
    ]
    for incoming in hostile:
        try:
            response = await svc.client.get("/healthz", headers={"X-Request-ID": incoming})
        except (httpx.LocalProtocolError, UnicodeEncodeError):
            continue  # the client would not even send it
        out = response.headers["x-request-id"]
        assert out != incoming, incoming
        assert REQUEST_ID_RE.match(out), out
        # The replacement is what an error body reports too.
        missing = await svc.client.get("/nope", headers={"X-Request-ID": incoming})
        assert_problem(missing, 404)
    empty = await svc.client.get("/healthz", headers={"X-Request-ID": ""})
    assert REQUEST_ID_RE.match(empty.headers["x-request-id"])


async def test_every_answer_carries_nosniff_and_request_id(svc: Service) -> None:
    spec = await openapi(svc.client)
    admin = await svc.admin_headers()
    user = await svc.user_headers()
    seen = 0
    for path, method, _ in operations(spec):
        url = fill_path(path, "00000000-0000-0000-0000-000000000000")
        for headers in ({}, user, admin):
            response = await svc.client.request(method.upper(), url, headers=headers)
            assert response.status_code < 500, (method, url, response.status_code, response.text)
            assert response.headers.get("x-content-type-options") == "nosniff", (method, url)
            assert REQUEST_ID_RE.match(response.headers.get("x-request-id", "")), (method, url)
            if response.status_code >= 400:
                assert_no_leak(response)
            seen += 1
    for extra in ("/docs", "/redoc", "/openapi.json", "/docs/assets/swagger-ui.css", "/missing"):
        response = await svc.client.get(extra)
        assert response.headers.get("x-content-type-options") == "nosniff", extra
    assert seen >= 3 * 8


async def test_problem_json_on_404_and_405(svc: Service) -> None:
    body = assert_problem(await svc.client.get("/api/v1/does-not-exist"), 404)
    assert body["code"] == "not_found"
    body = assert_problem(await svc.client.get("/no/such/route/at/all"), 404)
    response = await svc.client.delete("/healthz")
    body = assert_problem(response, 405)
    assert body["code"] == "method_not_allowed"
    assert "allow" in {k.lower() for k in response.headers}
    body = assert_problem(await svc.client.put("/api/v1/users/me"), 405)


async def test_problem_json_on_422_without_internals(svc: Service) -> None:
    cases = [
        {"username": "x"},  # missing fields, too short
        {"username": ["a"], "email": 5, "password": None},
        [],
        "just a string",
    ]
    for payload in cases:
        response = await svc.client.post("/api/v1/auth/register", json=payload)
        body = assert_problem(response, 422)
        assert body["code"] == "validation_error"
        assert body["errors"], body
        for error in body["errors"]:
            assert {"loc", "msg", "pointer"} <= set(error), error
            assert not {"input", "ctx", "url"} & set(error), error
    broken = await svc.client.post(
        "/api/v1/auth/register",
        content=b'{"username": "abc", ',
        headers={"Content-Type": "application/json"},
    )
    assert_problem(broken, 422)


async def test_413_by_content_length_and_by_chunks(svc: Service) -> None:
    limit = svc.settings.max_body_bytes
    big = b'{"username": "' + b"a" * (limit + 10) + b'"}'
    response = await svc.client.post(
        "/api/v1/auth/register", content=big, headers={"Content-Type": "application/json"}
    )
    body = assert_problem(response, 413)
    assert body["code"] == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"username": "'
        for _ in range(limit // 65536 + 2):
            yield b"a" * 65536
        yield b'"}'

    response = await svc.client.post(
        "/api/v1/auth/register", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    body = assert_problem(response, 413)
    assert body["code"] == "payload_too_large"

    # A lying Content-Length is no way around the limit either.
    response = await svc.client.post(
        "/api/v1/auth/token",
        content=b"grant_type=password&username=a&password=" + b"b" * (limit + 1),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 413, response.text
    assert_problem(response, 413)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_are_self_hosted_with_a_csp(svc: Service, page: str) -> None:
    response = await svc.client.get(page)
    assert response.status_code == 200
    html = response.text
    csp = response.headers.get("content-security-policy", "")
    assert "default-src 'none'" in csp or "default-src 'self'" in csp, csp
    assert "script-src" in csp, csp
    assert "*" not in csp.replace("'", " ").split(), csp
    assert "frame-ancestors" in csp, csp
    assert EXTERNAL_URL_RE.search(html) is None, EXTERNAL_URL_RE.search(html)
    for ref in re.findall(r'(?:src|href|spec-url)="([^"]+)"', html):
        assert ref.startswith("/"), ref
        asset = await svc.client.get(ref)
        assert asset.status_code == 200, ref
    # Inline scripts run only with the per-answer nonce, which changes every time.
    nonces = re.findall(r'nonce="([^"]+)"', html)
    again = re.findall(r'nonce="([^"]+)"', (await svc.client.get(page)).text)
    if nonces:
        assert nonces != again
        assert f"'nonce-{nonces[0]}'" in csp


async def test_cors_is_off_by_default(svc: Service) -> None:
    preflight = await svc.client.options(
        "/api/v1/users/me",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-credentials" not in preflight.headers
    simple = await svc.client.get(
        "/api/v1/users/me", headers={"Origin": ORIGIN, **await svc.admin_headers()}
    )
    assert simple.status_code == 200
    assert "access-control-allow-origin" not in simple.headers


async def test_cors_wildcard_never_reflects_or_allows_credentials(
    make_service: ServiceFactory,
) -> None:
    async with make_service(cors_origins=["*"]) as svc:
        admin = await svc.admin_headers()
        for origin in (ORIGIN, "null", "http://127.0.0.1:1"):
            preflight = await svc.client.options(
                "/api/v1/users/me",
                headers={
                    "Origin": origin,
                    "Access-Control-Request-Method": "GET",
                    "Access-Control-Request-Headers": "authorization",
                },
            )
            assert preflight.headers.get("access-control-allow-origin") == "*", preflight.headers
            assert "access-control-allow-credentials" not in preflight.headers
            simple = await svc.client.get("/api/v1/users/me", headers={"Origin": origin, **admin})
            assert simple.headers.get("access-control-allow-origin") == "*"
            assert "access-control-allow-credentials" not in simple.headers


async def test_cors_allow_list_only_answers_listed_origins(make_service: ServiceFactory) -> None:
    good = "https://app.example"
    async with make_service(cors_origins=[good]) as svc:
        ok = await svc.client.get("/healthz", headers={"Origin": good})
        assert ok.headers.get("access-control-allow-origin") == good
        bad = await svc.client.get("/healthz", headers={"Origin": ORIGIN})
        assert bad.headers.get("access-control-allow-origin") in (None, good)
        assert ORIGIN not in bad.headers.get("access-control-allow-origin", "")
        preflight = await svc.client.options(
            "/healthz", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}
        )
        assert ORIGIN not in preflight.headers.get("access-control-allow-origin", "")
