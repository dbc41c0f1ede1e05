"""When a raw exposure that is arriving in a folder may be read (the rule of ``desgw watch``).

A file in the watched folder is read only when all three hold:

1. **Its name is final**: it matches the raw patterns (``DECam_*.fits[.fz]``,
   ``c4d_*.fits[.fz]``) and does not start with ``.``. Writers should copy under another
   name (``.DECam_00123456.fits.fz.part``) and rename into place when done: a rename is
   atomic, so the file appears complete at once.
2. **Its FITS structure is complete** (:func:`fits_structure_complete`): the file is a whole
   number of 2880-byte blocks, every HDU header ends with an ``END`` card and the data of every
   HDU (``|BITPIX|/8 * GCOUNT * (PCOUNT + NAXIS1 * ... * NAXISn)`` bytes, padded to a block)
   is there, ending exactly at the end of the file; when the primary header has ``NEXTEND``,
   that many extensions are present.
3. **It is settled** (:class:`LandingWatch`): its size and modification time were the same at
   two looks at least ``settle_s`` apart. A writer that writes in place and pauses exactly at
   an HDU boundary for longer than ``settle_s`` could still be read early; that is why (1) is
   the convention to use.

Only the file system is read (a header walk of a few kB per HDU); nothing is decompressed.
"""

from __future__ import annotations

import fnmatch
import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RAW_NAME_PATTERNS", "LandingWatch", "fits_structure_complete", "is_final_name"]

#: Names of raw exposures (the same patterns as :data:`desgw.workflow.dagmaker.RAW_PATTERNS`).
RAW_NAME_PATTERNS: tuple[str, ...] = ("DECam_*.fits.fz", "DECam_*.fits", "c4d_*.fits.fz",
                                      "c4d_*.fits")

_BLOCK = 2880
_CARD = 80


def is_final_name(name: str) -> bool:
    """True when a file name is that of a raw exposure under its final name."""
    return not name.startswith(".") and any(fnmatch.fnmatchcase(name, p)
                                            for p in RAW_NAME_PATTERNS)


def _card_value(card: bytes) -> str:
    text = card[10:].decode("ascii", errors="replace")
    return text.split("/", 1)[0].strip().strip("'").strip()


def _read_header(f, size: int) -> dict[str, str] | None:
    """Keywords of the header at the file's position (None when it is not all there)."""
    keys: dict[str, str] = {}
    while True:
        if f.tell() + _BLOCK > size:
            return None
        block = f.read(_BLOCK)
        if len(block) < _BLOCK:
            return None
        for i in range(0, _BLOCK, _CARD):
            card = block[i:i + _CARD]
            key = card[:8].decode("ascii", errors="replace").strip()
            if key == "END":
                return keys
            if card[8:10] == b"= " and key not in keys:
                keys[key] = _card_value(card)


def _data_bytes(keys: dict[str, str]) -> int:
    bitpix = abs(int(keys["BITPIX"]))
    naxis = int(keys.get("NAXIS", "0"))
    if naxis == 0:
        return 0
    n = 1
    for k in range(1, naxis + 1):
        n *= int(keys[f"NAXIS{k}"])
    pcount = int(keys.get("PCOUNT", "0"))
    gcount = int(keys.get("GCOUNT", "1"))
    return bitpix // 8 * gcount * (pcount + n)


def fits_structure_complete(path: str | os.PathLike[str]) -> bool:
    """True when a FITS file's HDUs are all there (rule 2 of the module docstring).

    Never raises for a bad or partial file (False); only the headers are read.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        if size == 0 or size % _BLOCK:
            return False
        n_hdus = 0
        nextend: int | None = None
        with open(p, "rb") as f:
            while f.tell() < size:
                keys = _read_header(f, size)
                if keys is None or "BITPIX" not in keys:
                    return False
                if n_hdus == 0 and "NEXTEND" in keys:
                    nextend = int(keys["NEXTEND"])
                nbytes = _data_bytes(keys)
                padded = -(-nbytes // _BLOCK) * _BLOCK
                if f.tell() + padded > size:
                    return False
                f.seek(padded, os.SEEK_CUR)
                n_hdus += 1
        return n_hdus > 0 and (nextend is None or n_hdus - 1 == nextend)
    except (OSError, ValueError, KeyError):
        return False


@dataclass
class _Look:
    size: int
    mtime_ns: int
    at: float


class LandingWatch:
    """Finds the raw exposures of a folder that are complete (see the module docstring).

    Parameters
    ----------
    folder : path
        The folder the exposures land in.
    settle_s : float
        Minimum time between the two looks that must agree (s).
    """

    def __init__(self, folder: str | os.PathLike[str], *, settle_s: float = 1.0) -> None:
        self.folder = Path(folder)
        self.settle_s = float(settle_s)
        self._looks: dict[Path, _Look] = {}
        self._done: set[Path] = set()

    def forget(self, path: Path) -> None:
        """Look at ``path`` again (a file replaced under the same name)."""
        self._done.discard(path)
        self._looks.pop(path, None)

    def poll(self, now: float | None = None) -> list[Path]:
        """Files that became complete since the last call, oldest first (by mtime)."""
        now = time.time() if now is None else float(now)
        ready: list[tuple[int, Path]] = []
        try:
            entries = list(os.scandir(self.folder))
        except OSError:
            return []
        for entry in entries:
            if not entry.is_file() or not is_final_name(entry.name):
                continue
            path = Path(entry.path)
            if path in self._done:
                continue
            try:
                st = entry.stat()
            except OSError:
                continue
            prev = self._looks.get(path)
            if prev is None or prev.size != st.st_size or prev.mtime_ns != st.st_mtime_ns:
                self._looks[path] = _Look(st.st_size, st.st_mtime_ns, now)
                continue
            if now - prev.at < self.settle_s:
                continue
            if not fits_structure_complete(path):
                continue
            self._done.add(path)
            self._looks.pop(path, None)
            ready.append((st.st_mtime_ns, path))
        return [p for _, p in sorted(ready)]
