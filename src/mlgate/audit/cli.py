"""`mlgate audit ...`: tail (and follow), export, and purge by retention date.

They act on the configured database directly. Output escapes control characters, so a
username or user agent cannot forge lines on a terminal.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

from mlgate.audit import repository as repo
from mlgate.audit import schemas
from mlgate.audit.service import iso

if TYPE_CHECKING:
    from mlgate.audit.tables import AuditEventRow
    from mlgate.context import AppContext

app = typer.Typer(help="Read, export and purge the audit log.", no_args_is_help=True)
FOLLOW_POLL_SECONDS = 1.0
# Events are stamped when they happen and committed a moment later; following looks
# back this far so a late commit is not skipped, and drops the ids it already showed.
FOLLOW_OVERLAP = timedelta(seconds=10)


def parse_when(value: str) -> datetime:
    """An ISO date (midnight UTC) or datetime (naive means UTC). A malformed value exits 1
    with one line (a Click usage error would print a multi-line box and exit 2)."""
    from mlgate.cli import fail

    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(0), tzinfo=UTC)
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise fail(f"not an ISO date or datetime: {value!r}") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _safe(value: object) -> str:
    text = "-" if value is None or value == "" else str(value)
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def line(row: AuditEventRow) -> str:
    fields = [
        iso(row.at),
        row.action,
        row.outcome,
        row.status,
        row.actor,
        row.actor_type,
        row.ip,
        row.resource,
        row.request_id,
    ]
    details = schemas.event_dict(row)["details"]
    text = "  ".join(_safe(f) for f in fields)
    return text + (f"  {_safe(details)}" if details else "")


def _filter(action: str | None, actor: str | None, since: str | None) -> repo.AuditFilter:
    return repo.AuditFilter(action=action, actor=actor, since=parse_when(since) if since else None)


async def _tail(ctx: AppContext, f: repo.AuditFilter, count: int, follow: bool) -> None:
    async with ctx.db.session() as session:
        rows = list(reversed(await repo.page(session, f, after=None, limit=count, descending=True)))
    for row in rows:
        typer.echo(line(row))
    if not follow:
        return
    last = rows[-1].at if rows else datetime.now(UTC)
    # Everything already committed counts as seen: the look-back window must not print
    # older events that --lines left out.
    start = replace(
        f, since=max(last - FOLLOW_OVERLAP, f.since) if f.since else last - FOLLOW_OVERLAP
    )
    async with ctx.db.session() as session:
        seen = {row.id for row in await repo.page(session, start, after=None, limit=10_000)}
    seen |= {row.id for row in rows}
    while True:
        await asyncio.sleep(FOLLOW_POLL_SECONDS)
        since = last - FOLLOW_OVERLAP
        window = replace(f, since=max(since, f.since) if f.since else since)
        async with ctx.db.session() as session:
            fresh = await repo.page(session, window, after=None, limit=10_000)
        for row in fresh:
            if row.id not in seen:
                typer.echo(line(row))
                seen.add(row.id)
                last = max(last, row.at)
        cutoff = last - FOLLOW_OVERLAP
        seen = {r.id for r in fresh if r.at >= cutoff} | (seen if len(seen) < 100_000 else set())


@app.command("tail")
def tail(
    lines: Annotated[int, typer.Option("-n", "--lines", min=1, max=10_000)] = 20,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events")
    ] = False,
    action: Annotated[str | None, typer.Option(help="Action, or a prefix like 'auth.*'")] = None,
    actor: Annotated[str | None, typer.Option(help="Username")] = None,
    since: Annotated[str | None, typer.Option(help="ISO date or datetime (UTC)")] = None,
) -> None:
    """Print the latest events, oldest first; with --follow keep printing new ones."""
    from mlgate.cli import load_settings, run, with_context

    settings = load_settings()
    f = _filter(action, actor, since)

    async def go(ctx: Any) -> None:
        await _tail(ctx, f, lines, follow)

    try:
        run(lambda: with_context(settings, go))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


async def write_export(ctx: AppContext, f: repo.AuditFilter, fmt: str, out: TextIO) -> int:
    count = 0
    if fmt == "csv":
        out.write(schemas.csv_header())
    render = schemas.csv_line if fmt == "csv" else schemas.jsonl_line
    async for row in ctx.audit.iterate(f):
        out.write(render(row))
        count += 1
    out.flush()
    return count


@app.command("export")
def export(
    format: Annotated[str, typer.Option("--format", help="jsonl or csv")] = "jsonl",
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="File (default stdout)")
    ] = None,
    action: Annotated[str | None, typer.Option(help="Action, or a prefix like 'auth.*'")] = None,
    actor: Annotated[str | None, typer.Option(help="Username")] = None,
    since: Annotated[str | None, typer.Option(help="ISO date or datetime (UTC)")] = None,
    until: Annotated[str | None, typer.Option(help="ISO date or datetime (UTC), exclusive")] = None,
) -> None:
    """Write every matching event in (at, id) order, as JSON Lines or CSV."""
    from mlgate.cli import fail, load_settings, run, with_context

    if format not in ("jsonl", "csv"):
        raise fail("--format is jsonl or csv")
    settings = load_settings()
    f = repo.AuditFilter(
        action=action,
        actor=actor,
        since=parse_when(since) if since else None,
        until=parse_when(until) if until else None,
    )

    async def go(ctx: Any) -> None:
        if output is None:
            await write_export(ctx, f, format, sys.stdout)
            return
        with open(output, "w", encoding="utf-8", newline="") as handle:
            count = await write_export(ctx, f, format, handle)
        typer.echo(f"exported {count} events to {output}", err=True)

    run(lambda: with_context(settings, go))


@app.command("purge")
def purge(
    before: Annotated[str, typer.Option("--before", help="Delete events before this ISO date")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")] = False,
) -> None:
    """Delete events older than DATE (retention). Leaves an `audit.purge` checkpoint."""
    from mlgate.cli import fail, load_settings, run, with_context

    settings = load_settings()
    cutoff = parse_when(before)

    async def count(ctx: Any) -> int:
        n: int = await ctx.audit.count_before(cutoff)
        return n

    async def go(ctx: Any) -> int:
        n: int = await ctx.audit.purge(cutoff, actor="cli")
        return n

    pending = run(lambda: with_context(settings, count))
    if not yes and not typer.confirm(
        f"Delete {pending} audit events before {iso(cutoff)}? This cannot be undone"
    ):
        raise fail("purge cancelled")
    deleted = run(lambda: with_context(settings, go))
    typer.echo(f"deleted {deleted} audit events before {iso(cutoff)}")
