"""Signing-key lifecycle: first key on first start, rotation, pruning of old keys."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from mlgate.auth import repository as auth_repo
from mlgate.auth.keystore import encrypt, generate_key
from mlgate.auth.tables import SigningKeyRow
from mlgate.auth.tokens import LEEWAY_SECONDS
from mlgate.db import utcnow
from mlgate.settings import Settings


async def ensure_signing_key(session: AsyncSession, settings: Settings, kek: bytes) -> bool:
    """Make a key for the configured algorithm when none is active; True if one was made."""
    if settings.jwt_algorithm == "HS256":
        return False
    keys = await auth_repo.signing_keys(session)
    if any(k.active and k.algorithm == settings.jwt_algorithm for k in keys):
        return False
    await _add_key(session, settings, kek)
    return True


async def rotate_signing_key(session: AsyncSession, settings: Settings, kek: bytes) -> str:
    """A new active key; the old one keeps verifying until its tokens have expired."""
    if settings.jwt_algorithm == "HS256":
        raise ValueError("HS256 uses MLGATE_JWT_SECRET: rotate it by changing the secret")
    now = utcnow()
    await auth_repo.retire_active_keys(session, settings.jwt_algorithm, now)
    keep_for = timedelta(seconds=settings.access_token_ttl_seconds + LEEWAY_SECONDS)
    await auth_repo.drop_keys_retired_before(session, now - keep_for)
    kid = await _add_key(session, settings, kek)
    await auth_repo.add_change(session, "signing_key", kid)
    return kid


async def _add_key(session: AsyncSession, settings: Settings, kek: bytes) -> str:
    material = generate_key(settings.jwt_algorithm)
    session.add(
        SigningKeyRow(
            kid=material.kid,
            algorithm=material.algorithm,
            public_pem=material.public_pem,
            private_encrypted=encrypt(kek, material.private_pem, aad=material.kid.encode()),
            active=True,
        )
    )
    await session.flush()
    return material.kid
