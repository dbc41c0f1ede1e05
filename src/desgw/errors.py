"""Exception classes for the desgw package.

Every error caused by bad input data (a file that is missing, truncated, corrupt, lacks a
CCD or a header keyword, or holds data of the wrong type or shape) is raised as a
:class:`DesgwInputError` subclass whose message names the file, the HDU and the problem.
All exceptions here are picklable, so they survive being sent back from worker processes.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = [
    "DesgwError",
    "DesgwInputError",
    "CorruptFileError",
    "MissingCCDError",
    "HeaderError",
    "DataTypeError",
    "MissingFileError",
]


class DesgwError(Exception):
    """Base class of every exception raised deliberately by desgw."""


class DesgwInputError(DesgwError):
    """Bad input data: names the file, the HDU (if any) and the problem.

    Parameters
    ----------
    path : str or os.PathLike or None
        The file concerned (``None`` when no file is involved, e.g. an in-memory header).
    hdu : str, int or None
        The HDU concerned: an index, an EXTNAME, or ``None`` for the whole file.
    problem : str
        What is wrong, in words.

    Notes
    -----
    ``str(err)`` is ``"{path}[HDU {hdu}]: {problem}"``; the ``[HDU ...]`` part is omitted when
    ``hdu`` is ``None``.
    """

    def __init__(self, path: str | os.PathLike[str] | None, hdu: str | int | None,
                 problem: str, **extra: Any) -> None:
        self.path = None if path is None else os.fspath(path)
        self.hdu = hdu
        self.problem = str(problem)
        self._extra = dict(extra)
        for key, value in extra.items():
            setattr(self, key, value)
        super().__init__(self.path, hdu, self.problem)

    def __str__(self) -> str:
        where = self.path if self.path is not None else "<no file>"
        if self.hdu is not None:
            where = f"{where}[HDU {self.hdu}]"
        return f"{where}: {self.problem}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.path, self.hdu, self.problem, self._extra))


def _rebuild(cls: type[DesgwInputError], path: str | None, hdu: str | int | None,
             problem: str, extra: dict[str, Any]) -> DesgwInputError:
    return cls(path, hdu, problem, **extra)


class CorruptFileError(DesgwInputError):
    """The file is truncated, corrupt or not FITS (or not the expected format)."""


class MissingCCDError(DesgwInputError):
    """The requested CCD is not in the file.

    The attribute ``present`` (tuple of int) lists the CCDNUMs that are in the file.
    """

    def __init__(self, path: str | os.PathLike[str] | None, hdu: str | int | None,
                 problem: str, *, present: tuple[int, ...] = (), **extra: Any) -> None:
        super().__init__(path, hdu, problem, present=tuple(present), **extra)


class HeaderError(DesgwInputError):
    """A header keyword is missing or malformed.

    The attribute ``keyword`` (str or None) names the keyword.
    """

    def __init__(self, path: str | os.PathLike[str] | None, hdu: str | int | None,
                 problem: str, *, keyword: str | None = None, **extra: Any) -> None:
        super().__init__(path, hdu, problem, keyword=keyword, **extra)


class DataTypeError(DesgwInputError):
    """Pixel data of the wrong type (BITPIX/dtype) or shape, or a section outside the array."""


class MissingFileError(DesgwInputError):
    """An input file does not exist."""
