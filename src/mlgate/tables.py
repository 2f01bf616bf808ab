"""Imports every domain's tables so `metadata` is complete (for Alembic and tests)."""

from __future__ import annotations

from mlgate.audit import tables as _audit  # noqa: F401
from mlgate.auth import tables as _auth  # noqa: F401
from mlgate.db import Base
from mlgate.limits import tables as _limits  # noqa: F401
from mlgate.rbac import tables as _rbac  # noqa: F401
from mlgate.serving import tables as _serving  # noqa: F401
from mlgate.users import tables as _users  # noqa: F401

metadata = Base.metadata
