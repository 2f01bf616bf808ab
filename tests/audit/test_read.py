"""The read side: filters, keyset cursors, exports that match the API, append-only."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mlgate.audit.schemas import FORMULA_STARTS
from tests.audit.util import rid
from tests.conftest import ADMIN_USERNAME, Service

AUDIT = "/api/v1/admin/audit"
EVIL_AGENT = '=HYPERLINK("http://x")\r\nforged,line'


async def _seed(svc: Service) -> dict[str, str]:
    for i in range(3):
        await svc.create_user("user", username=f"ghost{i}")
        await svc.client.post(
            "/api/v1/auth/token",
            data={"grant_type": "password", "username": f"ghost{i}", "password": "nope nope"},
            headers=rid(f"seed-fail-{i}"),
        )
    await svc.client.post(
        "/api/v1/auth/token",
        data={"grant_type": "password", "username": "-nobody", "password": "nope nope"},
        headers={"User-Agent": EVIL_AGENT, "X-Request-ID": "seed-evil"},
    )
    await svc.register()
    return await svc.admin_headers()


async def _all(svc: Service, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        r = await svc.client.get(AUDIT, params=query, headers=headers)
        assert r.status_code == 200, r.text
        page = r.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def test_cursor_pages_walk_everything_in_order(svc: Service) -> None:
    admin = await _seed(svc)
    everything = await _all(svc, admin, limit=1000)
    paged = await _all(svc, admin, limit=2)
    assert [e["id"] for e in paged] == [e["id"] for e in everything]
    assert len(everything) >= 6
    keys = [(e["at"], e["id"]) for e in everything]
    assert keys == sorted(keys)
    assert all(e["at"].endswith("Z") for e in everything)
    backwards = await _all(svc, admin, limit=3, order="desc")
    assert [e["id"] for e in backwards] == [e["id"] for e in reversed(everything)]


async def test_filters(svc: Service) -> None:
    admin = await _seed(svc)
    fails = await _all(svc, admin, action="auth.login.failure")
    assert {e["request_id"] for e in fails} == {
        "seed-fail-0",
        "seed-fail-1",
        "seed-fail-2",
        "seed-evil",
    }
    assert all(e["outcome"] == "failure" for e in fails)
    auth = await _all(svc, admin, action="auth.*")
    assert {e["action"] for e in auth} >= {"auth.login.failure", "auth.register"}
    assert all(e["action"].startswith("auth.") for e in auth)
    one = await _all(svc, admin, request_id="seed-fail-1")
    assert [e["actor"] for e in one] == ["ghost1"]
    by_actor = await _all(svc, admin, actor="GHOST2")
    assert [e["request_id"] for e in by_actor] == ["seed-fail-2"]
    admin_logins = await _all(svc, admin, actor=ADMIN_USERNAME, action="auth.login.success")
    assert len(admin_logins) == 1
    admin_id = admin_logins[0]["actor_id"]
    by_id = await _all(svc, admin, actor_id=admin_id, outcome="success")
    assert by_id
    assert all(e["actor_id"] == admin_id for e in by_id)
    by_resource = await _all(svc, admin, resource=admin_logins[0]["resource"])
    assert [e["id"] for e in by_resource] == [admin_logins[0]["id"]]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert await _all(svc, admin, since=future) == []
    assert len(await _all(svc, admin, until=future)) == len(await _all(svc, admin))
    r = await svc.client.get(AUDIT, params={"cursor": "garbage!"}, headers=admin)
    assert r.status_code == 422
    r = await svc.client.get(AUDIT, params={"outcome": "maybe"}, headers=admin)
    assert r.status_code == 422


async def test_single_event_and_append_only(svc: Service) -> None:
    admin = await _seed(svc)
    event = (await _all(svc, admin))[0]
    r = await svc.client.get(f"{AUDIT}/{event['id']}", headers=admin)
    assert r.status_code == 200
    assert r.json() == event
    for method in ("PUT", "PATCH", "DELETE"):
        for path in (AUDIT, f"{AUDIT}/{event['id']}"):
            r = await svc.client.request(method, path, headers=admin, json={})
            assert r.status_code == 405, (method, path)
            assert r.headers["content-type"].startswith("application/problem+json")
    r = await svc.client.get(f"{AUDIT}/{event['id']}", headers=admin)
    assert r.json() == event


def _unneutralize(cell: str) -> str:
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(FORMULA_STARTS) else cell


async def test_exports_parse_and_match_the_api(svc: Service) -> None:
    admin = await _seed(svc)
    until = datetime.now(UTC).isoformat()
    api = await _all(svc, admin, until=until)

    r = await svc.client.get(f"{AUDIT}/export", params={"until": until}, headers=admin)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/x-ndjson")
    lines = r.text.splitlines()
    assert [json.loads(line) for line in lines] == api  # CR/LF in data never split a line

    r = await svc.client.get(
        f"{AUDIT}/export", params={"format": "csv", "until": until}, headers=admin
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(r.text, newline="")))
    header, body = rows[0], rows[1:]
    assert header[:3] == ["id", "at", "actor_id"]
    assert len(body) == len(api)
    for row, item in zip(body, api, strict=True):
        record = dict(zip(header, row, strict=True))
        for name, value in item.items():
            cell = record[name]
            if cell.startswith("'"):
                assert cell[1:].startswith(FORMULA_STARTS)
            expected = "" if value is None else value
            if name == "details":
                assert json.loads(cell or "{}") == value
            else:
                assert _unneutralize(cell) == str(expected), name
    evil = next(dict(zip(header, r, strict=True)) for r in body if "seed-evil" in r)
    assert evil["user_agent"].startswith("'=")
    assert "\r\n" in evil["user_agent"]  # kept as data inside its quoted cell


async def test_export_needs_audit_read(svc: Service) -> None:
    user = await svc.user_headers()
    r = await svc.client.get(f"{AUDIT}/export", headers=user)
    assert r.status_code == 403
    r = await svc.client.get(f"{AUDIT}/export", params={"format": "xml"}, headers=user)
    assert r.status_code in (403, 422)


@pytest.mark.parametrize("page", [1, 7])
async def test_iterate_is_paged(svc: Service, page: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The export reads in pages (constant memory) and still yields every event once."""
    import mlgate.audit.service as service

    admin = await _seed(svc)
    monkeypatch.setattr(service, "EXPORT_PAGE", page)
    api = await _all(svc, admin)
    seen = [str(row.id) async for row in svc.ctx.audit.iterate(service.repo.AuditFilter())]
    assert seen[: len(api)] == [e["id"] for e in api]
