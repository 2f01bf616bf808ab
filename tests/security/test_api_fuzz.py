"""Schemathesis against the app's own OpenAPI (OWASP API Top 10, ASVS V16): every
operation, with an admin token and with a plain user's token, never answers 5xx, answers
only documented statuses and content types with bodies that match their schemas, and
refuses the call once the credentials are taken away or spoiled (`ignored_auth`).

The schema is read from the real app at import, so new routes are fuzzed as they land.
The module shares one app on a fresh database; each operation signs in afresh.
Examples per operation come from
MLGATE_FUZZ_EXAMPLES (small by default; `make fuzz` sets 500).
The two-peer-user object-level check (BOLA) is `test_bola.py`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_schema_conformance,
    status_code_conformance,
)

from mlgate.app import create_app
from mlgate.settings import Settings
from tests.conftest import (
    ADMIN_PASSWORD,
    ADMIN_USERNAME,
    USER_PASSWORD,
    Template,
    _pg_admin,
    backends,
    base_settings,
    fresh_database,
)
from tests.security._util import fuzz_settings

FUZZ_SETTINGS = fuzz_settings(10)
# Throttles would answer 429 long before a nightly-size run ends; they have their own tests.
UNTHROTTLED: dict[str, Any] = {
    "rate_limit_guest": None,
    "rate_limit_user": None,
    "rate_limit_admin": None,
    "rate_limit_register": None,
    "daily_quota_guest": None,
    "login_max_failures": 1_000_000,
    "login_max_failures_per_ip": 1_000_000,
    "login_max_failures_per_account": 1_000_000,
}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    ignored_auth,
]


def _spec() -> dict[str, Any]:
    # The routes do not depend on the database; no lifespan runs for this.
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(data_dir=Path(tmp), key_encryption_key="x" * 40))
        spec: dict[str, Any] = app.openapi()
    return spec


schema = schemathesis.openapi.from_dict(_spec())


def _in_thread(coro: Any) -> Any:
    """Run a coroutine on its own loop: pytest-asyncio's loop stays untouched."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@dataclass
class Identities:
    app: Any
    admin: dict[str, str]
    user: dict[str, str]


def _token(client: asgi.ASGIClient, username: str, password: str) -> dict[str, str]:
    response = client.post(
        "/api/v1/auth/token",
        data={"grant_type": "password", "username": username, "password": password},
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture(scope="module", params=backends())
def fuzz_app(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    _templates_root: Path,
    _template_registry: dict[str, Template],
) -> Iterator[Any]:
    """One app on a fresh database for the module, served in-process by Schemathesis's
    ASGI transport (its lifespan runs on that transport's loop, not pytest-asyncio's)."""
    target = tmp_path_factory.mktemp("fuzz")
    url, pg_name = _in_thread(
        fresh_database(request.param, _template_registry, _templates_root, target)
    )
    app = create_app(base_settings(target, url, **UNTHROTTLED), run_bootstrap=False)
    try:
        with asgi.get_client(app) as client:
            for name in ("fuzzpeer1", "fuzzpeer2"):
                body = {"username": name, "email": f"{name}@x.example", "password": USER_PASSWORD}
                response = client.post("/api/v1/auth/register", json=body)
                assert response.status_code == 201, response.text
            yield app
    finally:
        asgi.shutdown_lifespans()
        if pg_name:
            _in_thread(_pg_admin(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)'))


@pytest.fixture
def identities(fuzz_app: Any) -> Identities:
    """Fresh sign-ins per operation: a fuzzed logout must not spoil the next operation."""
    with asgi.get_client(fuzz_app) as client:
        return Identities(
            app=fuzz_app,
            admin=_token(client, ADMIN_USERNAME, ADMIN_PASSWORD),
            user=_token(client, "fuzzpeer1", USER_PASSWORD),
        )


@schema.parametrize()
@FUZZ_SETTINGS
def test_api_conforms_for_admin_and_user(case: schemathesis.Case, identities: Identities) -> None:
    if case.headers:
        # Schemathesis fills the X-API-Key scheme too; both credentials at once is a 400 by
        # design (test_secured_operations_document_auth_errors covers documenting it).
        case.headers.pop("X-API-Key", None)
    for headers in (identities.admin, identities.user):
        case.call_and_validate(app=identities.app, headers=headers, checks=CHECKS)


def test_secured_operations_document_auth_errors() -> None:
    """A client must learn from the schema that a credential can be refused (401), too
    weak (403) or ambiguous (400: Authorization and X-API-Key together)."""
    spec = schema.raw_schema
    missing = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if not isinstance(op, dict) or not op.get("security"):
                continue
            documented = set(op.get("responses", {}))
            lacking = {"400", "401", "403"} - documented
            if lacking:
                missing.append(f"{method.upper()} {path}: {sorted(lacking)}")
    assert not missing, "secured operations that do not document:\n" + "\n".join(missing)
