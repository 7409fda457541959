"""The trace store's one error type, in a module of its own so that every storage module can raise it."""

from __future__ import annotations


class StoreError(RuntimeError):
    """The trace store cannot be opened or written; the message names the database (never its password)."""
