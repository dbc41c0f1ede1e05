"""The star and veto list files of difference imaging (the original ``makestarcat.py``
outputs; the lists are made by :mod:`desgw.diff.starcat`).

Files (text, tab separated, written atomically), as the original:

``SNSTAR_{expnum}_{ccd}_r{R}p{P}.LIST``::

    # ASSOC format for Sextractor input.
    # Star Source: SNSTAR table, CATALOG= r{R}p{P}
    # NVAR: 5
    # VARNAMES:<TAB>OBJID<TAB>RA<TAB>DEC<TAB>mag_{band}<TAB>magerr_{band}
    1<TAB>{ra:.6f}<TAB>{dec:.6f}<TAB>{mag:.4f}<TAB>{magerr:.4f}

``SNVETO_{expnum}_{ccd}_r{R}p{P}.LIST``: the same with ``NVAR: 7`` and two more columns,
``radius`` (arcsec, ``%.6f``) and ``vtype`` (always 6, the original's veto type of a star).
Rows are sorted by RA; OBJID counts from 1. (The ccd in the name is not zero padded, as the
names the original's ``SEdiff.sh`` gave these files.)
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from astropy.table import Table

from desgw.errors import CorruptFileError, MissingFileError
from desgw.io.atomic import atomic_write_text

__all__ = [
    "read_star_list",
    "read_veto_list",
    "snstar_name",
    "snveto_name",
    "write_star_list",
    "write_veto_list",
]


def _tag(expnum: int, ccd: int, rnum: int, pnum: int) -> str:
    for label, v in (("expnum", expnum), ("ccd", ccd), ("rnum", rnum), ("pnum", pnum)):
        if isinstance(v, bool) or int(v) != v or int(v) < 0:
            raise ValueError(f"{label} must be a non-negative integer, got {v!r}")
    return f"{int(expnum)}_{int(ccd)}_r{int(rnum)}p{int(pnum)}"


def snstar_name(expnum: int, ccd: int, rnum: int, pnum: int) -> str:
    """``SNSTAR_{expnum}_{ccd}_r{R}p{P}.LIST`` (no zero padding, as the original)."""
    return f"SNSTAR_{_tag(expnum, ccd, rnum, pnum)}.LIST"


def snveto_name(expnum: int, ccd: int, rnum: int, pnum: int) -> str:
    """``SNVETO_{expnum}_{ccd}_r{R}p{P}.LIST`` (no zero padding, as the original)."""
    return f"SNVETO_{_tag(expnum, ccd, rnum, pnum)}.LIST"


def _format_list(table: Table, band: str, rnum: int, pnum: int, veto: bool) -> str:
    names = ["OBJID", "RA", "DEC", f"mag_{band}", f"magerr_{band}"]
    if veto:
        names += ["radius", "vtype"]
    lines = ["# ASSOC format for Sextractor input.",
             f"# Star Source: SNSTAR table, CATALOG= r{int(rnum)}p{int(pnum)}",
             f"# NVAR: {len(names)}",
             "# VARNAMES:\t" + "\t".join(names)]
    cols = [np.asarray(table[k]) for k in ("OBJID", "RA", "DEC", "mag", "magerr")]
    if veto:
        cols += [np.asarray(table["radius"]), np.asarray(table["vtype"])]
    for row in zip(*cols):
        text = [str(int(row[0])), f"{row[1]:.6f}", f"{row[2]:.6f}", f"{row[3]:.4f}",
                f"{row[4]:.4f}"]
        if veto:
            text += [f"{row[5]:.6f}", str(int(row[6]))]
        lines.append("\t".join(text))
    return "\n".join(lines) + "\n"


def write_star_list(path: str | os.PathLike[str], stars: Table, *, band: str, rnum: int,
                    pnum: int) -> Path:
    """Write an ``SNSTAR_*.LIST`` file atomically (format in the module docstring).

    Parameters
    ----------
    path : path-like
        Output file (e.g. ``outdir / snstar_name(expnum, ccd, rnum, pnum)``).
    stars : astropy.table.Table
        ``OBJID``, ``RA``, ``DEC``, ``mag``, ``magerr``.
    band : str
        Filter, used in the column names ``mag_{band}``.
    rnum, pnum : int
        Processing numbers, written in the header.
    """
    return atomic_write_text(path, _format_list(stars, band, rnum, pnum, veto=False))


def write_veto_list(path: str | os.PathLike[str], veto: Table, *, band: str, rnum: int,
                    pnum: int) -> Path:
    """Write an ``SNVETO_*.LIST`` file atomically.

    ``veto`` is a star list with ``radius`` (arcsec) and ``vtype``
    (:func:`desgw.diff.starcat.make_veto_table`).

    Raises
    ------
    ValueError
        ``veto`` lacks the ``radius`` or ``vtype`` column.
    """
    missing = [c for c in ("radius", "vtype") if c not in veto.colnames]
    if missing:
        raise ValueError(f"a veto list needs the columns {missing}: make it with "
                         "desgw.diff.starcat.make_veto_table")
    return atomic_write_text(path, _format_list(veto, band, rnum, pnum, veto=True))


_VARNAMES = re.compile(r"^#\s*VARNAMES:\s*(.*)$")
_CATALOG = re.compile(r"CATALOG=\s*r(\d+)p(\d+)")


def _read_list(path: str | os.PathLike[str], nvar: int) -> Table:
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(p, None, "star list file does not exist")
    try:
        text = p.read_text(encoding="ascii")
    except (UnicodeDecodeError, OSError) as exc:
        raise CorruptFileError(p, None, f"cannot read as ASCII text: {exc}") from None
    names: list[str] | None = None
    rows: list[list[str]] = []
    meta: dict[str, object] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s:
            continue
        if s.startswith("#"):
            m = _VARNAMES.match(s)
            if m:
                names = m.group(1).split()
            c = _CATALOG.search(s)
            if c:
                meta["rnum"], meta["pnum"] = int(c.group(1)), int(c.group(2))
            continue
        parts = s.split()
        if len(parts) != nvar:
            raise CorruptFileError(p, None, f"line {number}: expected {nvar} columns, "
                                   f"got {len(parts)}")
        rows.append(parts)
    if names is None or len(names) != nvar:
        raise CorruptFileError(p, None, f"no '# VARNAMES:' line with {nvar} names")
    band_m = re.match(r"mag_(.+)$", names[3])
    meta["band"] = band_m.group(1) if band_m else ""
    arr = np.array(rows, dtype=object).reshape(len(rows), nvar)
    try:
        out = Table({"OBJID": arr[:, 0].astype(np.int64), "RA": arr[:, 1].astype(np.float64),
                     "DEC": arr[:, 2].astype(np.float64), "mag": arr[:, 3].astype(np.float64),
                     "magerr": arr[:, 4].astype(np.float64)}, meta=meta)
        if nvar == 7:
            out["radius"] = arr[:, 5].astype(np.float64)
            out["vtype"] = arr[:, 6].astype(np.int64)
    except ValueError as exc:
        raise CorruptFileError(p, None, f"non-numeric value: {exc}") from None
    return out


def read_star_list(path: str | os.PathLike[str]) -> Table:
    """Read an ``SNSTAR_*.LIST`` file.

    Returns
    -------
    astropy.table.Table
        ``OBJID``, ``RA``, ``DEC``, ``mag``, ``magerr``; ``meta`` has ``band``, ``rnum``,
        ``pnum``.

    Raises
    ------
    MissingFileError, CorruptFileError
    """
    return _read_list(path, 5)


def read_veto_list(path: str | os.PathLike[str]) -> Table:
    """Read an ``SNVETO_*.LIST`` file: the star-list columns plus ``radius`` and ``vtype``."""
    return _read_list(path, 7)
