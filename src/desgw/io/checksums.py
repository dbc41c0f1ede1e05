"""Size and checksum records of product files, kept in completion markers so that a resume
redoes a product that was truncated or changed after its marker was written.

A file that desgw writes from bytes in memory (:func:`desgw.io.atomic.atomic_write_bytes`,
:func:`desgw.io.atomic.atomic_write_blocks`: the tile-compressed images, the FITS tables and
stamps, the JSON documents) has its SHA-256 computed from those bytes as they are written; the
writer notes it (:func:`remember_written`) under the file's identity (device, inode, size,
modification and change times, taken from the open file after the rename). The next
:func:`file_record` of that path whose identity is unchanged takes the noted digest instead of
reading the file again (used once, then forgotten). (A file rewritten in place, to the same
size, within the same clock tick as its writer's last write keeps its identity: its record
then describes what desgw wrote, and the resume's verification finds the difference and
redoes it.)

Verification (:func:`record_problem`) hashes what is on disk, once per process for a file
that does not change: the digest it computed is kept under the file's identity together with
the moment the read began, as git's index keeps file stats. A later verification of a file
with the same identity (any rewrite, truncation, ``touch``, ``os.utime`` or rename over it
changes the size, the inode or the change time) takes the kept digest without reading, but
only when the file's modification and change times are older than that moment by
:data:`RACY_MARGIN_NS` (2 s): a file changed within a clock tick of its hashing could keep
its identity, so such an entry is not trusted and the file is read again next time. The
search CCDs of an exposure, which each check the same template CCDs' products, so read each
template product once per process instead of once per search CCD. (The guard compares the
file system's times with this host's clock: files on a server whose clock runs behind this
host's by more than the margin are trusted too early.)
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["file_record", "record_problem", "records_problems", "remember_written"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


#: Digests noted by writers: file identity -> sha256 hex (bounded; oldest dropped first).
_WRITTEN: dict[tuple[int, ...], str] = {}
_WRITTEN_MAX = 512


#: Digests verified by reading: file identity -> (sha256 hex, time.time_ns() when the read
#: began). Bounded; oldest dropped first.
_VERIFIED: dict[tuple[int, ...], tuple[str, int]] = {}
_VERIFIED_MAX = 4096
_VERIFIED_LOCK = threading.Lock()

#: A verified digest is trusted only for a file whose modification and change times are
#: older than the moment its read began by this margin (ns).
RACY_MARGIN_NS = 2_000_000_000


def _now_ns() -> int:
    return time.time_ns()


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def remember_written(fd: int, sha256_hex: str) -> None:
    """Note the SHA-256 of the file open as ``fd`` (written in full, already renamed to its
    final name, not written again), for the next :func:`file_record` of it."""
    key = _identity(os.fstat(fd))
    if len(_WRITTEN) >= _WRITTEN_MAX:
        _WRITTEN.pop(next(iter(_WRITTEN)))
    _WRITTEN[key] = sha256_hex


def _hash_file(p: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with p.open("rb") as fh:
        while True:
            block = fh.read(_CHUNK)
            if not block:
                break
            size += len(block)
            digest.update(block)
    return size, digest.hexdigest()


def _verified_digest(p: Path) -> str:
    """SHA-256 (hex) of the file at ``p`` as it is on disk now: the digest kept from an earlier
    read of it when its identity is unchanged and older than that read by
    :data:`RACY_MARGIN_NS`, else read (and kept)."""
    st = p.stat()
    key = _identity(st)
    with _VERIFIED_LOCK:
        kept = _VERIFIED.get(key)
    if kept is not None:
        digest, read_at = kept
        if max(st.st_mtime_ns, st.st_ctime_ns) < read_at - RACY_MARGIN_NS:
            return digest
    read_at = _now_ns()  # before the read: a change during it makes the entry racy
    size, digest = _hash_file(p)
    after = p.stat()
    if size == st.st_size and _identity(after) == key:  # unchanged while it was read
        with _VERIFIED_LOCK:
            _VERIFIED.pop(key, None)
            if len(_VERIFIED) >= _VERIFIED_MAX:
                _VERIFIED.pop(next(iter(_VERIFIED)))
            _VERIFIED[key] = (digest, read_at)
    return digest


def file_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"name", "size", "sha256"}`` of a file (name without folder, size in bytes).

    The digest its writer noted (:func:`remember_written`) when the file is unchanged since,
    else read from the file.

    Raises
    ------
    OSError
        The file cannot be read.
    """
    p = Path(path)
    st = p.stat()
    known = _WRITTEN.pop(_identity(st), None)
    if known is not None:
        return {"name": p.name, "size": st.st_size, "sha256": known}
    size, digest = _hash_file(p)
    return {"name": p.name, "size": size, "sha256": digest}


def record_problem(directory: str | os.PathLike[str], record: Any) -> str | None:
    """Why the file a marker's record vouches for no longer matches it (None: it matches).

    ``record`` is a :func:`file_record` mapping (its file looked up in ``directory``) or a bare
    name (a folder, or a file in markers older than the records), only checked to exist.
    """
    if isinstance(record, str):
        return None if (Path(directory) / record).exists() else f"{record}: missing"
    if not isinstance(record, Mapping) or "name" not in record:
        return f"bad product record {record!r}"
    p = Path(directory) / str(record["name"])
    try:
        size = p.stat().st_size
    except OSError:
        return f"{p.name}: missing"
    if "size" in record and int(record["size"]) != size:
        return f"{p.name}: {size} bytes, the marker says {int(record['size'])}"
    if "sha256" in record:
        try:
            found = _verified_digest(p)
        except OSError as exc:
            return f"{p.name}: unreadable ({exc.strerror or exc})"
        if found != record["sha256"]:
            return f"{p.name}: checksum differs from the marker's"
    return None


def records_problems(directory: str | os.PathLike[str], records: Any) -> list[str]:
    """Problems of every record of a marker's ``products`` mapping (empty: all match)."""
    if not isinstance(records, Mapping):
        return ["the marker lists no products"]
    out = []
    for rec in records.values():
        why = record_problem(directory, rec)
        if why is not None:
            out.append(why)
    return out
