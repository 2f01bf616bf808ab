"""Fixtures of the multi-process tests: a fresh database and a Redis DB per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import REQUIRE_SERVICES
from tests.scaleout.harness import fresh_pg_database, redis_url_for_test, services_reason

REASON = services_reason()
if REASON and REQUIRE_SERVICES:
    raise RuntimeError(f"MLGATE_REQUIRE_SERVICES=1 but {REASON}")

needs_services = pytest.mark.skipif(REASON is not None, reason=REASON or "")


@pytest.fixture
def pg_db() -> Iterator[str]:
    """A new, empty PostgreSQL database (no migrations yet), dropped afterwards."""
    with fresh_pg_database() as url:
        yield url


@pytest.fixture
def redis_db() -> str:
    return redis_url_for_test()
