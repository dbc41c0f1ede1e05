"""The exception hierarchy of desgw: failures as types that orchestration acts on.

::

    DesgwError
    ├── DesgwInputError         bad input: names the file, the HDU and the problem
    │   ├── CorruptFileError, MissingCCDError, HeaderError, DataTypeError, MissingFileError
    │   └── (elsewhere) DetrendError, GraphError, DagmakerConfigError, CondorValueError
    ├── NoWorkFoundError        nothing to do (no template, no overlap, no transformation)
    │   └── (elsewhere) refcat.TransformUnavailableError
    ├── AlgorithmError          a deterministic failure on valid input, carrying its numbers
    │   └── (elsewhere) AstrometryError, PSFFitError, PhotometricCalibrationError,
    │       diff.DiffError (its ``kind`` tells "nothing_to_do" from "failed")
    ├── TransientError          an environment failure worth another attempt
    │   ├── TransientTaskError  a task failed transiently (raised by the engine to retry it)
    │   └── (elsewhere) db.DatabaseConnectionError (also a db.DatabaseError)
    └── (elsewhere, not yet in a category) db.DatabaseError, db.DatabaseURLError,
        db.SchemaVersionError,
        db.UnknownExposureError, diff.RealBogusModelError

The engine retries a task only when its exception is a :class:`TransientError` (or one of
the built-in file-system and network errors listed in
:data:`desgw.engine.tasks.TRANSIENT_OS_ERRORS`); every other failure is reported once.

Every error caused by bad input data (a file that is missing, truncated, corrupt, lacks a
CCD or a header keyword, or holds data of the wrong type or shape) is raised as a
:class:`DesgwInputError` subclass whose message names the file, the HDU and the problem.
All exceptions here are picklable, so they survive being sent back from worker processes
(each class with extra constructor arguments defines ``__reduce__``).
"""

from __future__ import annotations

import os
from typing import Any

__all__ = [
    "AlgorithmError",
    "CorruptFileError",
    "DataTypeError",
    "DesgwError",
    "DesgwInputError",
    "HeaderError",
    "MissingCCDError",
    "MissingFileError",
    "NoWorkFoundError",
    "TransientError",
    "TransientTaskError",
    "describe_error",
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


class NoWorkFoundError(DesgwError):
    """There is nothing to do for this step (no template, no overlap, no transformation for the
    band): not a failure of the input or of an algorithm, and not worth a retry."""


class AlgorithmError(DesgwError):
    """A deterministic failure of an algorithm on valid input (too few stars, a fit that does
    not converge). Subclasses carry the numbers that explain it; retrying does not help."""


class TransientError(DesgwError):
    """An environment failure (file system, network, a database server that is down) that may
    succeed when tried again."""


class TransientTaskError(TransientError):
    """A task failed for a reason worth retrying; the engine raises it so Dask re-runs the task.

    Parameters
    ----------
    task_id : str
        The task.
    reason : str
        ``"Type: message"`` of the failure.

    Notes
    -----
    ``str(err)`` is ``"{task_id}: {reason}"``.
    """

    def __init__(self, task_id: str, reason: str) -> None:
        self.task_id = str(task_id)
        self.reason = str(reason)
        super().__init__(f"{self.task_id}: {self.reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.task_id, self.reason))


def describe_error(error: BaseException) -> str:
    """``"Type: message"``: how a failure is shown in logs, summaries and reports."""
    return f"{type(error).__name__}: {error}"
