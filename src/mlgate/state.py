"""Shared, short-lived state behind one small Protocol: in memory for one process, or
in Redis so that several replicas share rate-limit windows, lockouts and notices."""

from __future__ import annotations

from typing import Protocol


class StateBackend(Protocol):
    async def healthy(self) -> bool:
        """True when the backend answers."""
        ...

    async def close(self) -> None: ...
