"""Usage counters: one row per (user, model, UTC day), upserted; never a row per request."""

from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy import BigInteger, Date, String
from sqlalchemy.orm import Mapped, mapped_column

from mlgate.db import Base


class UsageRow(Base):
    __tablename__ = "usage_daily"

    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    day: Mapped[date] = mapped_column(Date(), primary_key=True)
    model: Mapped[str] = mapped_column(String(64), primary_key=True)
    predictions: Mapped[int] = mapped_column(BigInteger, default=0)
    rows: Mapped[int] = mapped_column(BigInteger, default=0)
