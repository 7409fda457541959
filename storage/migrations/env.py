"""Alembic environment: the trace store's metadata, the connection ``storage.db`` hands over.

``storage.db.alembic_config`` builds the configuration in code; a connection in
``config.attributes["connection"]`` is used as is, else one is opened from ``sqlalchemy.url``.
SQLite gets batch mode (``ALTER TABLE`` by copying the table), so column changes work there too.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from storage.models import Base

config = context.config
target_metadata = Base.metadata


def _ours(name: str | None, type_: str, parent_names: object) -> bool:
    """Autogenerate compares our tables only: LangGraph's checkpoint tables share the database."""
    return type_ != "table" or name in target_metadata.tables or name == "alembic_version"


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=_ours,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(str(config.get_main_option("sqlalchemy.url")))
    try:
        with engine.connect() as opened:
            _run(opened)
            opened.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
