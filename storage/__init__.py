"""The trace store: SQLAlchemy models and session helpers. Depends on nothing else of routegraph."""
