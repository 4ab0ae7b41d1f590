"""Next steps for errors of the SQLite files that this package's stores keep."""

from __future__ import annotations

import sqlite3

# Result codes of SQLite (sqlite3.h): the file is damaged, or it is not a SQLite database at all.
SQLITE_CORRUPT = 11
SQLITE_NOTADB = 26
_DAMAGED_CODES = {SQLITE_CORRUPT, SQLITE_NOTADB}
_DAMAGED_TEXTS = ("file is not a database", "database disk image is malformed")


def is_damaged(error: sqlite3.Error) -> bool:
    """Tell whether `error` reports that the file is damaged or is not a SQLite database."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in _DAMAGED_CODES:
        return True
    return any(text in str(error) for text in _DAMAGED_TEXTS)


def next_step(path: str, error: sqlite3.Error) -> str:
    """Return what to do about `error` of the SQLite file at `path`, as a sentence."""
    if is_damaged(error):
        return (
            f"The file {path} is damaged or is not a SQLite database: move it aside and restore it from a "
            "backup, or delete it to start with an empty store."
        )
    return (
        "A 'database is locked' error means another writer held the lock past the busy timeout: retry, or "
        "raise busy_timeout."
    )
