"""Size and checksum records of product files, kept in completion markers so that a resume
redoes a product that was truncated or changed after its marker was written."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["file_record", "record_problem", "records_problems"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


def file_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"name", "size", "sha256"}`` of a file (name without folder, size in bytes).

    Raises
    ------
    OSError
        The file cannot be read.
    """
    p = Path(path)
    digest = hashlib.sha256()
    size = 0
    with p.open("rb") as fh:
        while True:
            block = fh.read(_CHUNK)
            if not block:
                break
            size += len(block)
            digest.update(block)
    return {"name": p.name, "size": size, "sha256": digest.hexdigest()}


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
            found = file_record(p)["sha256"]
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
