"""The `mlgate` command: serve, init, check-config, users, keys, models, audit."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from mlgate.errors import MlgateError
from mlgate.settings import Settings

T = TypeVar("T")
app = typer.Typer(help="mlgate: ML models over HTTP behind built-in auth.", no_args_is_help=True)
users_app = typer.Typer(help="Manage user accounts.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage token signing keys.", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(1)


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = str(first["msg"]).removeprefix("Value error, ")
        raise fail(f"invalid settings: {where + ': ' if where else ''}{message}") from None


def run(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; a policy or input failure exits non-zero with one clear line."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return asyncio.run(_run(factory))
    except MlgateError as exc:
        raise fail(exc.detail) from None
    except SQLAlchemyError as exc:
        raise fail(f"database error: {type(exc).__name__}") from None
    except (OSError, ValueError) as exc:
        raise fail(str(exc)) from None


async def _run(factory: Callable[[], Awaitable[T]]) -> T:
    return await factory()


async def with_context(settings: Settings, action: Callable[[Any], Awaitable[T]]) -> T:
    """Build the app context on the configured database (migrated first), run, close."""
    from mlgate.app import build_context, load_signing_keys
    from mlgate.auth.signing import ensure_signing_key
    from mlgate.migrate import bootstrap_lock, migrate

    ctx = build_context(settings)
    try:
        async with bootstrap_lock(ctx.db, settings.data_dir):
            await migrate(ctx.db)
            async with ctx.db.session() as session:
                await ensure_signing_key(session, settings, ctx.kek)
        await load_signing_keys(ctx)
        return await action(ctx)
    finally:
        ctx.passwords.close()
        if ctx.state is not None:
            await ctx.state.close()
        await ctx.db.dispose()


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes")] = 1,
) -> None:
    """Run migrations, make signing keys, load models and serve."""
    import uvicorn

    from mlgate.logs import configure_logging

    settings = load_settings()
    problems = [c.message for c in settings.checks(workers=workers) if c.level == "fail"]
    if workers > 1 and settings.is_sqlite:
        raise fail(
            "SQLite serves one worker: use PostgreSQL (MLGATE_DATABASE_URL) for --workers > 1"
        )
    if workers > 1 and not settings.redis_url:
        raise fail(
            "--workers > 1 needs MLGATE_REDIS_URL: without it each worker would keep its own "
            "rate limits and lockouts"
        )
    if settings.env == "production" and problems:
        raise fail("; ".join(problems))
    configure_logging(settings.log_format, settings.log_level)
    if workers == 1:
        from mlgate.app import create_app

        uvicorn.run(
            create_app(settings),
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
        )
        return
    from mlgate.bootstrap import announce_admin_password, bootstrap

    async def first_start() -> None:
        async def go(ctx: Any) -> None:
            announce_admin_password(await bootstrap(ctx), settings.admin_username)

        await with_context(settings, go)

    run(first_start)
    uvicorn.run(
        "mlgate.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
    )


@app.command()
def init(
    demo_models: Annotated[bool, typer.Option(help="Register the demo models")] = True,
) -> None:
    """Create or upgrade the database, signing key, first admin and demo models."""
    from mlgate.bootstrap import announce_admin_password, bootstrap

    settings = load_settings()

    async def go(ctx: Any) -> None:
        result = await bootstrap(ctx, demo_models=demo_models)
        announce_admin_password(result, settings.admin_username)
        console.print("mlgate is initialised", highlight=False)

    run(lambda: with_context(settings, go))


@app.command("check-config")
def check_config(
    workers: Annotated[int, typer.Option(min=1, help="Worker processes you plan to run")] = 1,
) -> None:
    """Print the production checklist against the current settings; exit 1 on a failure."""
    # Evaluated as development so a failing production config is reported, not refused.
    settings = load_settings(env="development")
    marks = {
        "ok": "[green]ok  [/green]",
        "warn": "[yellow]warn[/yellow]",
        "fail": "[red]FAIL[/red]",
    }
    checks = settings.checks(workers=workers)
    console.print("mlgate production checklist", highlight=False)
    for check in checks:
        console.print(f"{marks[check.level]} {check.message}", highlight=False, soft_wrap=True)
    failed = sum(check.level == "fail" for check in checks)
    warned = sum(check.level == "warn" for check in checks)
    console.print(f"{failed} failed, {warned} warnings", highlight=False)
    if failed:
        raise typer.Exit(1)


@users_app.command("create")
def users_create(
    username: str,
    email: Annotated[str, typer.Option(help="Email address")],
    admin: Annotated[bool, typer.Option("--admin", help="Give the admin role")] = False,
    role: Annotated[str | None, typer.Option(help="Role to give")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin")] = False,
) -> None:
    """Create a user. The password is prompted for (never echoed) or read from stdin."""
    from pydantic import TypeAdapter

    from mlgate.auth.schemas import RegisterIn

    settings = load_settings()
    if admin and role:
        raise fail("use --admin or --role, not both")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        TypeAdapter(RegisterIn).validate_python(
            {"username": username, "email": email, "password": password}
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        field = first["loc"][0] if first["loc"] else "input"
        raise fail(f"{field}: {str(first['msg']).removeprefix('Value error, ')}") from None
    roles = ["admin"] if admin else [role or settings.default_role]

    async def go(ctx: Any) -> None:
        from mlgate.users import repository as users_repo

        async with ctx.db.session() as session:
            if await users_repo.existing_roles(session, roles) != set(roles):
                raise fail(f"no such role: {', '.join(roles)}")
            user = await ctx.auth.create_user(
                session, username=username, email=email, password=password, roles=roles
            )
        console.print(f"created user {user.username} ({user.id}) with roles {', '.join(roles)}")

    run(lambda: with_context(settings, go))


@users_app.command("list")
def users_list() -> None:
    """List users."""
    settings = load_settings()

    async def go(ctx: Any) -> None:
        from mlgate.users import repository as users_repo
        from mlgate.users import service as users_service

        table = Table("id", "username", "email", "roles", "active", "last login")
        async with ctx.db.session() as session:
            rows = await users_repo.list_page(
                session, q=None, role=None, is_active=None, after=None, limit=100_000
            )
            for user in await users_service.describe_many(session, rows):
                table.add_row(
                    str(user.id),
                    user.username,
                    user.email,
                    ",".join(user.roles),
                    "yes" if user.is_active else "no",
                    user.last_login_at.isoformat() if user.last_login_at else "-",
                )
        console.print(table)

    run(lambda: with_context(settings, go))


sessions_app = typer.Typer(help="Manage a user's sessions.", no_args_is_help=True)
users_app.add_typer(sessions_app, name="sessions")


def _admin_action(username: str, action: Callable[[Any, Any, Any], Awaitable[str]]) -> None:
    """Run `action(service, session, user)` on USERNAME in one transaction; print its line."""
    settings = load_settings()

    async def go(ctx: Any) -> str:
        from mlgate.users.admin_service import AdminUserService

        service = AdminUserService(ctx.auth)
        async with ctx.db.session() as session:
            user = await service.find(session, username)
            return await action(service, session, user)

    console.print(run(lambda: with_context(settings, go)), highlight=False)


@users_app.command("set-role")
def users_set_role(
    username: str,
    roles: Annotated[list[str], typer.Argument(help="The user's roles from now on")],
) -> None:
    """Replace the user's roles (the last administrator cannot be demoted)."""
    from mlgate.users.admin_schemas import AdminUserPatchIn
    from mlgate.users.admin_service import CLI_META

    async def act(service: Any, session: Any, user: Any) -> str:
        patch = AdminUserPatchIn(roles=roles)
        await service.update(session, CLI_META, None, user.id, patch)
        return f"{user.username} now has roles {', '.join(sorted(set(roles)))}"

    _admin_action(username, act)


def _set_active(username: str, active: bool) -> None:
    async def act(service: Any, session: Any, user: Any) -> str:
        await service.set_active(session, None, user.id, active)
        return f"{user.username} is {'enabled' if active else 'disabled'}"

    _admin_action(username, act)


@users_app.command("disable")
def users_disable(username: str) -> None:
    """Disable a user: its sessions end and its tokens and API keys stop working."""
    _set_active(username, False)


@users_app.command("enable")
def users_enable(username: str) -> None:
    """Enable a disabled user (ended sessions stay ended)."""
    _set_active(username, True)


@users_app.command("reset-password")
def users_reset_password(
    username: str,
    password_stdin: Annotated[bool, typer.Option("--password-stdin")] = False,
) -> None:
    """Set a user's password (prompted, or read from stdin); the user's sessions end."""
    from mlgate.users.admin_service import CLI_META

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("New password", hide_input=True, confirmation_prompt=True)

    async def act(service: Any, session: Any, user: Any) -> str:
        await service.set_password(session, CLI_META, None, user.id, password)
        return f"password of {user.username} set; its sessions have ended"

    _admin_action(username, act)


@users_app.command("unlock")
def users_unlock(username: str) -> None:
    """Clear a user's login lockout and failure counters (shared ones need Redis)."""
    from mlgate.auth.throttle import unlock_username

    settings = load_settings()

    async def go(ctx: Any) -> str:
        user = await unlock_username(ctx, username)
        return f"{user.username} is unlocked"

    console.print(run(lambda: with_context(settings, go)), highlight=False)


@sessions_app.command("revoke")
def users_sessions_revoke(username: str) -> None:
    """End every session of a user (force logout)."""
    from mlgate.users.admin_service import CLI_META

    async def act(service: Any, session: Any, user: Any) -> str:
        count = await service.revoke_sessions(session, CLI_META, None, user.id)
        return f"ended {count} session(s) of {user.username}"

    _admin_action(username, act)


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Add a new active signing key; the old one verifies until its tokens expire."""
    from mlgate.auth.signing import rotate_signing_key

    settings = load_settings()

    async def go(ctx: Any) -> None:
        async with ctx.db.session() as session:
            kid = await rotate_signing_key(session, settings, ctx.kek)
        console.print(f"new signing key {kid} is active")

    run(lambda: with_context(settings, go))


def _mount_optional() -> None:
    import importlib

    for module_name, name in OPTIONAL_COMMANDS:
        module = importlib.import_module(module_name)
        app.add_typer(module.app, name=name)


# Command groups of the other domains; each module exposes a Typer `app`.
OPTIONAL_COMMANDS: list[tuple[str, str]] = [
    ("mlgate.serving.cli", "models"),
    ("mlgate.audit.cli", "audit"),
]


def main() -> None:
    _mount_optional()
    app()
