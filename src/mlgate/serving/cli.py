"""`mlgate models ...`: list, add and remove models directly in the database."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from mlgate.errors import MlgateError

if TYPE_CHECKING:
    from mlgate.context import AppContext

app = typer.Typer(help="Manage served models.", no_args_is_help=True)
console = Console()
T = TypeVar("T")
CHUNK = 1 << 20


def _run(action: Callable[[AppContext], Awaitable[T]]) -> T:
    """Run `action` on the app context of the configured database (migrated first);
    a failure is one clear line and exit status 1, never a traceback."""
    from mlgate.cli import load_settings, run, with_context

    settings = load_settings()
    return run(lambda: with_context(settings, action))


@app.command("list")
def list_models() -> None:
    """List models and their versions."""
    from mlgate.serving import catalogue as cat
    from mlgate.serving import repository as repo

    async def action(ctx: AppContext) -> dict[str, cat.ModelInfo]:
        async with ctx.db.session() as session:
            return cat.build(*await repo.catalogue(session))

    table = Table("name", "task", "default", "versions", "allowed roles", "description")
    for info in _run(action).values():
        default = info.default
        table.add_row(
            info.name,
            default.task if default else "-",
            str(info.default_version or "-"),
            ", ".join(f"{v}:{info.versions[v].format}" for v in sorted(info.versions)),
            ", ".join(info.allowed_roles),
            info.description[:60],
        )
    console.print(table)


def _spool(path: Path) -> tuple[Path, int, str]:
    """Copy to a private file with a progress bar, hashing on the way."""
    total = path.stat().st_size
    fd, name = tempfile.mkstemp(prefix="mlgate-add-")
    digest = hashlib.sha256()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
    )
    with (
        Progress(*columns, console=console, transient=True) as progress,
        path.open("rb") as src,
        os.fdopen(fd, "wb") as out,
    ):
        task = progress.add_task(f"reading {path.name}", total=total)
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
            progress.advance(task, len(chunk))
    return Path(name), total, digest.hexdigest()


@app.command("add")
def add(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    name: Annotated[str, typer.Option(help="Model name")],
    allowed_roles: Annotated[list[str] | None, typer.Option(help="Repeat for each role")] = None,
    task: Annotated[str | None, typer.Option(help="classification or regression")] = None,
    description: Annotated[str | None, typer.Option()] = None,
    feature_names: Annotated[list[str] | None, typer.Option(help="Repeat per feature")] = None,
    class_labels: Annotated[list[str] | None, typer.Option(help="Repeat per class")] = None,
) -> None:
    """Check, store and publish a model file (.onnx or .skops) as a new version."""
    from mlgate.serving import service

    spooled_path, size, sha = _spool(path)
    form = service.UploadForm(
        name,
        path.name,
        description,
        task,
        feature_names or None,
        class_labels or None,
        allowed_roles or None,
    )

    async def action(ctx: AppContext) -> int:
        if size > ctx.settings.max_model_bytes:
            raise MlgateError(f"{path.name} exceeds MLGATE_MAX_MODEL_BYTES", status=413)
        with console.status("checking and storing the model"):
            async with ctx.db.session() as session:
                _, version = await service.upload(
                    ctx,
                    session,
                    None,
                    None,
                    form,
                    service.SpooledUpload(spooled_path, size, sha),
                    operator=True,
                )
        return version.version

    try:
        version = _run(action)
    finally:
        spooled_path.unlink(missing_ok=True)
    console.print(f"added {name} version {version} ({size} bytes, sha256 {sha[:12]})")


@app.command("remove")
def remove(
    name: str,
    version: Annotated[int | None, typer.Option(help="Only this version")] = None,
) -> None:
    """Remove a model, or one of its versions."""
    from mlgate.serving import service

    async def action(ctx: AppContext) -> None:
        async with ctx.db.session() as session:
            await service.delete(ctx, session, None, None, name, version)

    _run(action)
    console.print(f"removed {name}" + (f" version {version}" if version else ""))
