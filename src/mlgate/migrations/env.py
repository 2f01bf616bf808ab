"""Alembic environment. mlgate runs migrations itself (`mlgate serve` / `mlgate init`),
handing a live connection in `config.attributes["connection"]`."""

from __future__ import annotations

from alembic import context

from mlgate.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - offline mode is not supported
    raise RuntimeError("mlgate migrations run through `mlgate init`, not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
