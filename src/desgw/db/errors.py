"""Exceptions of :mod:`desgw.db` (picklable; messages never hold a password)."""

from __future__ import annotations

from desgw.errors import DesgwError, TransientError

__all__ = ["DatabaseConnectionError", "DatabaseError", "DatabaseURLError", "SchemaVersionError",
           "UnknownExposureError"]


class DatabaseError(DesgwError):
    """Base class of the database errors. ``str(err)`` names the database by its redacted URL."""


class DatabaseConnectionError(DatabaseError, TransientError):
    """The database cannot be opened or reached (worth a retry when the server is down)."""


class DatabaseURLError(DatabaseError):
    """A database URL that is not a URL desgw accepts (a libpq ``key=value`` string, a plain
    path, an unescaped ``@`` in the password). The message never repeats the text given: it may
    hold a password."""


class SchemaVersionError(DatabaseError):
    """The database holds a schema this desgw does not understand (newer, unknown or foreign)."""


class UnknownExposureError(DatabaseError):
    """A row refers to an exposure number that is not registered in the exposures table.

    The attribute ``expnum`` holds the exposure number.
    """

    def __init__(self, message: str, expnum: int) -> None:
        super().__init__(message, expnum)
        self.expnum = int(expnum)

    def __str__(self) -> str:
        return str(self.args[0])
