"""Group commit: batches, fails closed when the audit store is down (503, nothing
acknowledged lost), flushes on stop."""

from __future__ import annotations

import asyncio

from mlgate.audit.events import Action, AuditEvent
from mlgate.db import Database
from tests.audit.util import events, rid
from tests.conftest import Service


def _dead_database(svc: Service) -> Database:
    if svc.ctx.db.is_sqlite:
        return Database("sqlite+aiosqlite:////nonexistent-dir/for/mlgate/audit.db")
    # A closed port: the connection is refused at once.
    return Database("postgresql+asyncpg://postgres@127.0.0.1:9/mlgate")


async def _forbidden(svc: Service, headers: dict[str, str], request_id: str) -> int:
    r = await svc.client.get("/api/v1/admin/audit", headers={**headers, **rid(request_id)})
    return r.status_code


async def test_concurrent_events_share_transactions(svc: Service) -> None:
    writer = svc.ctx.audit.writer
    before_batches, before_items = writer.batches, writer.committed
    meta_events = [
        AuditEvent.of(Action.MODEL_PREDICT, "success", meta=None, resource=f"model:m{i}")
        for i in range(200)
    ]
    await asyncio.gather(*(svc.ctx.audit.submit(e) for e in meta_events))
    assert writer.committed - before_items == 200
    assert writer.batches - before_batches < 200 / 4  # many per transaction
    assert len(await events(svc, Action.MODEL_PREDICT)) == 200


async def test_store_down_fails_closed_and_loses_nothing_acknowledged(svc: Service) -> None:
    headers = await svc.user_headers()
    acknowledged = []
    for i in range(5):
        assert await _forbidden(svc, headers, f"ok-{i}") == 403
        acknowledged.append(f"ok-{i}")

    writer = svc.ctx.audit.writer
    good = writer.db
    dead = _dead_database(svc)
    writer.db = dead
    try:
        results = await asyncio.gather(*(_forbidden(svc, headers, f"down-{i}") for i in range(8)))
        assert set(results) == {503}
        r = await svc.client.post(
            "/api/v1/auth/token",
            data={"grant_type": "password", "username": "nobody", "password": "x"},
        )
        assert r.status_code == 503
        assert r.json()["code"] == "unavailable"
    finally:
        writer.db = good
        await dead.dispose()

    assert await _forbidden(svc, headers, "after") == 403  # recovers by itself
    acknowledged.append("after")
    stored = {e.request_id for e in await events(svc, Action.ACCESS_DENIED)}
    assert set(acknowledged) <= stored
    assert not {f"down-{i}" for i in range(8)} & stored  # refused, so never claimed


async def test_stop_flushes_queued_events(svc: Service) -> None:
    audit = svc.ctx.audit
    batch = [
        AuditEvent.of(Action.MODEL_PREDICT, "success", meta=None, resource="model:stop")
        for _ in range(50)
    ]
    waiters = [asyncio.ensure_future(audit.submit(e)) for e in batch]
    await asyncio.sleep(0)
    await audit.stop()
    await asyncio.gather(*waiters)
    assert len(await events(svc, Action.MODEL_PREDICT, resource="model:stop")) == 50
    await audit.start()  # the fixture's shutdown stops it again


async def test_aggregate_counts_survive_batches(svc: Service) -> None:
    audit = svc.ctx.audit
    event = AuditEvent.of(Action.ACCESS_DENIED, "denied", meta=None, status=401)
    for _ in range(3):
        await asyncio.gather(
            *(
                audit.submit_aggregated(
                    AuditEvent.of(Action.ACCESS_DENIED, "denied", meta=None, status=401), "k"
                )
                for _ in range(4)
            )
        )
    del event
    found = await events(svc, Action.ACCESS_DENIED)
    assert len(found) == 1
    assert found[0].details["count"] == 12
