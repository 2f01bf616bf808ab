"""Audit events as the API shows them, and their JSON Lines and CSV renderings."""

from __future__ import annotations

import csv
import io
import json
import uuid
from typing import Any, Literal

from pydantic import BaseModel

from mlgate.audit.service import iso
from mlgate.audit.tables import AuditEventRow

FIELDS = [
    "id",
    "at",
    "actor_id",
    "actor",
    "actor_type",
    "action",
    "resource",
    "outcome",
    "status",
    "ip",
    "user_agent",
    "request_id",
    "details",
]
# Spreadsheets run cells starting with these as formulas (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class AuditEventOut(BaseModel):
    id: uuid.UUID
    at: str
    actor_id: uuid.UUID | None
    actor: str | None
    actor_type: Literal["user", "api_key", "anonymous"]
    action: str
    resource: str | None
    outcome: Literal["success", "failure", "denied"]
    status: int | None
    ip: str | None
    user_agent: str | None
    request_id: str | None
    details: dict[str, Any]


class AuditPage(BaseModel):
    items: list[AuditEventOut]
    next_cursor: str | None


def event_dict(row: AuditEventRow) -> dict[str, Any]:
    """The JSON shape of an event (the API item and a JSON Lines line)."""
    return {
        "id": str(row.id),
        "at": iso(row.at),
        "actor_id": str(row.actor_id) if row.actor_id else None,
        "actor": row.actor,
        "actor_type": row.actor_type,
        "action": row.action,
        "resource": row.resource,
        "outcome": row.outcome,
        "status": row.status,
        "ip": row.ip,
        "user_agent": row.user_agent,
        "request_id": row.request_id,
        "details": row.details or {},
    }


def event_out(row: AuditEventRow) -> AuditEventOut:
    return AuditEventOut.model_validate(event_dict(row))


def jsonl_line(row: AuditEventRow) -> str:
    # json.dumps escapes CR and LF, so data can never start a line of its own.
    return json.dumps(event_dict(row), ensure_ascii=False, separators=(",", ":")) + "\n"


def neutralize(cell: str) -> str:
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return str(value)


def _csv(values: list[str]) -> str:
    buffer = io.StringIO()
    # Every cell quoted: an embedded CR or LF stays inside its quoted cell.
    csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\r\n").writerow(values)
    return buffer.getvalue()


def csv_header() -> str:
    return _csv(FIELDS)


def csv_line(row: AuditEventRow) -> str:
    data = event_dict(row)
    return _csv([neutralize(_cell(data[name])) for name in FIELDS])
