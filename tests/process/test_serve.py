"""The real `mlgate serve` command: starts, answers, and stops."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import ADMIN_PASSWORD, USER_PASSWORD
from tests.process.serve import running_server, serve_env


def test_serve_register_login_me(tmp_path: Path) -> None:
    with running_server(serve_env(tmp_path / "data")) as (base, _proc):
        with httpx.Client(base_url=base, timeout=10) as client:
            created = client.post(
                "/api/v1/auth/register",
                json={"username": "proc", "email": "proc@example.com", "password": USER_PASSWORD},
            )
            assert created.status_code == 201, created.text
            token = client.post(
                "/api/v1/auth/token",
                data={"grant_type": "password", "username": "proc", "password": USER_PASSWORD},
            ).json()["access_token"]
            me = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
            assert me.status_code == 200
            assert me.json()["username"] == "proc"
            admin = client.post(
                "/api/v1/auth/token",
                data={"grant_type": "password", "username": "admin", "password": ADMIN_PASSWORD},
            )
            assert admin.status_code == 200
            docs = client.get("/docs")
            assert docs.status_code == 200
            assert "swagger-ui-bundle.js" in docs.text
            assert client.get("/docs/assets/swagger-ui-bundle.js").status_code == 200


def test_first_start_prints_generated_admin_password_once(tmp_path: Path) -> None:
    env = serve_env(tmp_path / "data")
    del env["MLGATE_ADMIN_PASSWORD"]
    log = tmp_path / "data"
    with running_server(env) as (base, proc):
        port = base.rsplit(":", 1)[1]
    output = (log / f"serve-{port}.log").read_text()
    lines = [line for line in output.splitlines() if "one-time password" in line]
    assert len(lines) == 1
    password = lines[0].rsplit(" ", 1)[1]
    assert password not in output.replace(lines[0], "")  # never logged elsewhere
    with running_server(env) as (base, _):
        token = httpx.post(
            f"{base}/api/v1/auth/token",
            data={"grant_type": "password", "username": "admin", "password": password},
        )
        assert token.status_code == 200
        port2 = base.rsplit(":", 1)[1]
    assert "one-time password" not in (log / f"serve-{port2}.log").read_text()
