"""Atomic file writing: write to a hidden temporary name, then rename onto the final name.

A reader never sees a half-written file: either the old file (or none) or the complete new
one. The temporary file lives in the same directory as the final file (so ``os.replace`` is
an atomic rename on the same file system) and keeps the final name's suffixes (``.fits``,
``.fits.fz``, ``.csv``, ...) so that libraries that choose a format by suffix still work.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import secrets
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["atomic_write_blocks", "atomic_write_bytes", "atomic_write_path", "atomic_write_text",
           "clean_stale_temp_files", "fsync_directory", "temp_name_for"]

log = logging.getLogger(__name__)

# ".{stem}.tmp{pid}{8 hex}{suffix}" (temp_name_for)
_TEMP_NAME = re.compile(r"^\..+\.tmp(?P<pid>\d+)[0-9a-f]{8}")

_KNOWN_SUFFIXES = (".fits.fz", ".fits.gz", ".fits", ".fz", ".csv", ".parquet", ".json",
                   ".txt", ".out", ".psf", ".npz", ".npy", ".yaml", ".head")


def _split_suffix(name: str) -> tuple[str, str]:
    lower = name.lower()
    for suffix in _KNOWN_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], name[-len(suffix):]
    stem, dot, ext = name.rpartition(".")
    if dot and stem:
        return stem, "." + ext
    return name, ""


def temp_name_for(final_path: str | os.PathLike[str]) -> Path:
    """Return a fresh hidden temporary path next to ``final_path``.

    The name is ``.{stem}.tmp{pid}{random}{suffix}``, e.g. ``.D001_x.tmp123a1b2c3.fits.fz``
    for ``D001_x.fits.fz``: hidden, unique per process and call, same suffix as the final name.
    """
    final = Path(final_path)
    stem, suffix = _split_suffix(final.name)
    return final.with_name(f".{stem}.tmp{os.getpid()}{secrets.token_hex(4)}{suffix}")


@contextlib.contextmanager
def atomic_write_path(final_path: str | os.PathLike[str]) -> Iterator[Path]:
    """Context manager yielding a temporary path to write; renamed onto ``final_path`` on success.

    Parent directories of ``final_path`` are created. If the body raises, the temporary file
    (if it was created) is removed, the final file is left untouched, and the exception
    propagates. If the body exits normally without creating the temporary file, nothing is
    renamed and a ``FileNotFoundError`` is raised (a writer that silently wrote nothing is a bug).

    Parameters
    ----------
    final_path : str or os.PathLike
        The file to create or replace.

    Yields
    ------
    pathlib.Path
        The temporary path (in the same directory, same suffix as ``final_path``).
    """
    final = Path(final_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name_for(final)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"atomic write of {final}: the temporary file {tmp} "
                                    "was never written")
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_blocks(final_path: str | os.PathLike[str], blocks: Iterable[bytes], *,
                        fsync: bool = True) -> Path:
    """Write the concatenation of ``blocks`` to ``final_path`` atomically; return the final
    path.

    The SHA-256 of the bytes is computed as they are written and noted for the file
    (:func:`desgw.io.checksums.remember_written`), so that the completion marker's record of it
    (:func:`desgw.io.checksums.file_record`) does not read the file back.

    ``fsync`` (default) flushes the file's data to disk before the rename. A writer of many
    small files may pass False and call :func:`fsync_directory` once at the end (each fsync
    costs ~8 ms of wall time on a loaded disk); the rename keeps the write atomic either way.
    """
    from .checksums import remember_written

    digest = hashlib.sha256()
    fh = None
    try:
        with atomic_write_path(final_path) as tmp:
            fh = open(tmp, "wb")  # noqa: SIM115 - kept open past the rename (identity below)
            for block in blocks:
                fh.write(block)
                digest.update(block)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        remember_written(fh.fileno(), digest.hexdigest())  # the renamed file's identity
    finally:
        if fh is not None:
            fh.close()
    return Path(final_path)


def atomic_write_bytes(final_path: str | os.PathLike[str], data: bytes, *,
                       fsync: bool = True) -> Path:
    """Write ``data`` to ``final_path`` atomically; return the final path
    (:func:`atomic_write_blocks` with one block)."""
    return atomic_write_blocks(final_path, (data,), fsync=fsync)


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Flush a directory's entries (the renames into it) to disk; a no-op where a directory
    cannot be opened for that (e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a directory
        pass
    finally:
        os.close(fd)


def atomic_write_text(final_path: str | os.PathLike[str], text: str,
                      encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``final_path`` atomically; return the final path."""
    return atomic_write_bytes(final_path, text.encode(encoding))


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def clean_stale_temp_files(directory: str | os.PathLike[str], *, min_age_s: float = 600.0
                           ) -> list[Path]:
    """Remove the temporary files (:func:`temp_name_for`) that killed writers left under
    ``directory`` (recursively); return what was removed.

    A temporary file is stale when the process named in it no longer runs on this machine and
    it has not changed for ``min_age_s`` seconds (the age guards the writers of other machines
    sharing the folder, whose process ids mean nothing here).
    """
    root = Path(directory)
    if not root.is_dir():
        return []
    now = time.time()
    removed: list[Path] = []
    for p in root.rglob(".*.tmp*"):
        m = _TEMP_NAME.match(p.name)
        if m is None or not p.is_file():
            continue
        try:
            age = now - p.stat().st_mtime
        except FileNotFoundError:
            continue
        if age < min_age_s or _pid_alive(int(m.group("pid"))):
            continue
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    if removed:
        log.info("removed %d stale temporary file(s) of killed writers under %s", len(removed),
                 root)
    return removed
