"""Writing an export file without losing anything: the one way ``routegraph traces export`` writes, whatever
the format.

* The trace store's own files (the database, its ``-wal``, ``-shm`` and ``-journal``, through a symlink or
  a hard link too) are never written, even with ``force``: an export over the live store destroys it.
* An existing file is replaced only with ``force``; a directory, a missing or non-directory parent, a
  read-only file or directory is an :class:`ExportError` saying which, before any row is read.
* The rows go to a temporary file beside the target, renamed over it once complete: a failure midway
  leaves the old file (or none) and no partial one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path


class ExportError(ValueError):
    """An export cannot be written to that path; the message says why and what to do instead."""


def check_target(out: Path, *, force: bool, protected: Sequence[Path] = ()) -> None:
    """Raise :class:`ExportError` unless an export may be written to ``out`` (see the module docstring)."""
    if _is_protected(out, protected):
        raise ExportError(f"{out} is one of the trace store's own files; write the export to another file")
    if out.is_dir():
        raise ExportError(f"{out} is a directory; give a file name, e.g. {out / 'runs.jsonl'}")
    parent = out.absolute().parent
    if not parent.exists():
        raise ExportError(f"cannot write {out}: directory {parent} does not exist")
    if not parent.is_dir():
        raise ExportError(f"cannot write {out}: {parent} is not a directory")
    if out.exists():
        if not force:
            raise ExportError(f"{out} already exists; pass --force to replace it")
        if not out.is_file():
            raise ExportError(f"{out} is not a regular file; write the export to a file")
        if not os.access(out, os.W_OK):
            raise ExportError(f"{out} is read-only; not replacing it")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(f"cannot write {out}: directory {parent} is not writable by this user")


def _is_protected(out: Path, protected: Sequence[Path]) -> bool:
    target = out.resolve()  # through symlinks, for paths that do not exist too
    for path in protected:
        if target == path.resolve():
            return True
        with suppress(OSError):  # a hard link to the database is the database
            if out.exists() and path.exists() and os.path.samefile(out, path):
                return True
    return False


@contextmanager
def replacing(out: Path) -> Iterator[Path]:
    """A temporary file beside ``out`` for the caller to write; renamed over ``out`` when the block ends
    without an error, removed otherwise. Problems of the file system are :class:`ExportError`."""
    mode = _mode_for(out)
    try:
        handle, name = tempfile.mkstemp(dir=out.absolute().parent, prefix=f".{out.name}.", suffix=".tmp")
    except OSError as exc:
        raise ExportError(f"cannot write {out}: {exc.strerror or exc}") from None
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        with temporary.open("rb+") as written:
            os.fsync(written.fileno())  # the rename must not land before the bytes it names
        temporary.chmod(mode)
        os.replace(temporary, out)
    except OSError as exc:  # disk full, a file system that went read-only
        raise ExportError(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
        temporary.unlink(missing_ok=True)


def _mode_for(out: Path) -> int:
    """The permissions the export gets: those of the file it replaces, else what the umask allows
    (mkstemp's own 0600 would hide a shared export from its readers)."""
    if out.is_file():
        return out.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
