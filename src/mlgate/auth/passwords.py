"""Password hashing: Argon2id for new hashes, legacy bcrypt verified then upgraded.

Hashing is deliberately slow, so every hash, verification and strength estimate runs
in a dedicated thread pool, never on the event loop, and at most `max_concurrency` of
them are in flight at once (each Argon2 computation holds `argon2_memory_cost` KiB).
Passwords are never logged.
"""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import unicodedata
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import argon2.exceptions
from pwdlib import PasswordHash
from pwdlib.exceptions import PwdlibError
from pwdlib.hashers.argon2 import Argon2Hasher
from pwdlib.hashers.bcrypt import BcryptHasher

from mlgate.auth import password_policy
from mlgate.settings import Settings

T = TypeVar("T")

LEGACY_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
BCRYPT_MAX_BYTES = 72
"""bcrypt only ever used the first 72 bytes; bcrypt>=5 raises instead of truncating."""

# A hash that cannot be read is a failed login, never an error page.
_UNUSABLE_HASH_ERRORS = (PwdlibError, ValueError, TypeError, argon2.exceptions.Argon2Error)


def normalize_password(password: str) -> str:
    """NFKC, so the same password typed on different keyboards or IMEs hashes the same."""
    return unicodedata.normalize("NFKC", password)


class PasswordService:
    """Hashes and verifies passwords off the event loop, and checks the password policy.

    One instance per process; call `close()` on shutdown. The semaphore is created
    unbound and attaches to the first event loop that has to wait on it.
    """

    def __init__(self, settings: Settings, *, max_concurrency: int | None = None) -> None:
        limit = max_concurrency or os.cpu_count() or 1
        if limit < 1:
            raise ValueError("max_concurrency must be at least 1")
        self._settings = settings
        self._limit = limit
        self._argon2 = Argon2Hasher(
            memory_cost=settings.argon2_memory_cost,
            time_cost=settings.argon2_time_cost,
            parallelism=settings.argon2_parallelism,
        )
        self._bcrypt = BcryptHasher()
        self._hasher = PasswordHash((self._argon2, self._bcrypt))
        self._executor = ThreadPoolExecutor(
            max_workers=limit, thread_name_prefix="mlgate-passwords"
        )
        self._semaphore = asyncio.Semaphore(limit)
        # Unknown users are checked against this, with the same parameters, so a login
        # for a missing account costs what a real one does. Computed in the pool; it is
        # the first task queued, so nothing can wait on it before it starts.
        self._dummy_hash: Future[str] = self._executor.submit(
            self._argon2.hash, secrets.token_urlsafe(32)
        )

    @property
    def max_concurrency(self) -> int:
        return self._limit

    async def hash(self, password: str) -> str:
        """An Argon2id hash of the NFKC-normalized password, with the current parameters."""
        return await self._run(functools.partial(self._hash_sync, password))

    async def verify_and_update(
        self, password: str, stored_hash: str | None
    ) -> tuple[bool, str | None]:
        """Check `password` against `stored_hash` (None for an unknown user).

        Returns `(verified, new_hash)`; `new_hash` is set when the stored hash is legacy
        bcrypt or Argon2 with other parameters, and should replace it. Malformed hashes
        count as a failed verification.
        """
        return await self._run(functools.partial(self._verify_sync, password, stored_hash))

    async def check_policy(self, password: str, *, username: str, email: str | None = None) -> None:
        """Raise `WeakPassword` when the password breaks the policy (see `password_policy`)."""
        await self._run(
            functools.partial(
                password_policy.check_password,
                password,
                username=username,
                email=email,
                min_length=self._settings.password_min_length,
            )
        )

    def close(self) -> None:
        """Stop the pool: queued work is cancelled, running work is allowed to finish."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def _run(self, work: Callable[[], T]) -> T:
        # The semaphore keeps excess requests waiting on the loop (where cancellation is
        # free) instead of piling up in the executor's queue.
        async with self._semaphore:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, work)

    def _hash_sync(self, password: str) -> str:
        return self._hasher.hash(normalize_password(password))

    def _verify_sync(self, password: str, stored_hash: str | None) -> tuple[bool, str | None]:
        normalized = normalize_password(password)
        if stored_hash is None:
            self._verify_dummy(normalized)
            return False, None
        try:
            if stored_hash.startswith(LEGACY_BCRYPT_PREFIXES):
                return self._verify_bcrypt(normalized, stored_hash)
            if self._argon2.identify(stored_hash):
                return self._hasher.verify_and_update(normalized, stored_hash)
        except _UNUSABLE_HASH_ERRORS:
            return False, None
        # Unknown scheme (or a disabled-login marker): spend the same time as a real check.
        self._verify_dummy(normalized)
        return False, None

    def _verify_bcrypt(self, normalized: str, stored_hash: str) -> tuple[bool, str | None]:
        secret = normalized.encode("utf-8")[:BCRYPT_MAX_BYTES]
        if not self._bcrypt.verify(secret, stored_hash):
            return False, None
        return True, self._hasher.hash(normalized)

    def _verify_dummy(self, normalized: str) -> None:
        try:
            self._argon2.verify(normalized, self._dummy_hash.result())
        except _UNUSABLE_HASH_ERRORS:
            pass
