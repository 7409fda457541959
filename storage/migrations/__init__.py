"""Alembic migrations of the trace store (run in code by ``storage.db.make_engine``; no alembic.ini)."""
