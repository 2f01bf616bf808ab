"""First start: schema, signing key, first admin, demo models — once, under one lock."""

from __future__ import annotations

import logging
import secrets
import sys
import uuid
from dataclasses import dataclass

from mlgate.auth.signing import ensure_signing_key
from mlgate.context import AppContext
from mlgate.migrate import bootstrap_lock, migrate
from mlgate.rbac.permissions import ADMIN
from mlgate.users import repository as users_repo

log = logging.getLogger(__name__)


@dataclass
class BootstrapResult:
    admin_created: bool = False
    admin_password_generated: str | None = None
    demo_models: list[str] | None = None


async def bootstrap(ctx: AppContext, *, demo_models: bool | None = None) -> BootstrapResult:
    """Idempotent: safe to run on every start and from several processes at once."""
    result = BootstrapResult()
    settings = ctx.settings
    async with bootstrap_lock(ctx.db, settings.data_dir):
        await migrate(ctx.db)
        async with ctx.db.session() as session:
            await ensure_signing_key(session, settings, ctx.kek)
        admin_id = await _ensure_admin(ctx, result)
        if settings.demo_models if demo_models is None else demo_models:
            result.demo_models = await _ensure_demo_models(ctx, admin_id)
    return result


async def _ensure_admin(ctx: AppContext, result: BootstrapResult) -> uuid.UUID | None:
    settings = ctx.settings
    async with ctx.db.session() as session:
        holders = await users_repo.active_holders_of(
            session, await users_repo.permissions_of_roles(session, [ADMIN])
        )
        if holders:
            return sorted(holders)[0]
        generated = settings.admin_password is None
        password = (
            secrets.token_urlsafe(18) if generated else settings.admin_password.get_secret_value()  # type: ignore[union-attr]
        )
        existing = await users_repo.find_by_login(session, settings.admin_username)
        if existing is not None:
            log.warning("no active admin; user %r exists and is left alone", existing.username)
            return None
        user = await ctx.auth.create_user(
            session,
            username=settings.admin_username,
            email=f"{settings.admin_username}@localhost.localdomain",
            password=password,
            roles=[ADMIN],
        )
        result.admin_created = True
        if generated:
            result.admin_password_generated = password
        return user.id


async def _ensure_demo_models(ctx: AppContext, admin_id: uuid.UUID | None) -> list[str]:
    try:
        from mlgate.serving.demo import ensure_demo_models
    except ImportError:  # serving not installed in this build
        return []
    return await ensure_demo_models(ctx, created_by=admin_id)


def announce_admin_password(result: BootstrapResult, username: str) -> None:
    """Print a generated admin password once, to the terminal, never to the log."""
    if result.admin_password_generated is None:
        return
    sys.stderr.write(
        "\n"
        f"  mlgate created the first administrator '{username}'.\n"
        f"  Its one-time password: {result.admin_password_generated}\n"
        "  It is shown only now: log in and change it (POST /api/v1/users/me/password).\n\n"
    )
    sys.stderr.flush()
