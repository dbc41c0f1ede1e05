"""``makestarcat.py``: the SNSTAR and SNVETO lists of one search CCD from the template
exposures' ``_ZP.csv`` tables and the search exposure's ``{expnum}.out`` (the lists by
:mod:`desgw.diff.starcat`, the files by :mod:`desgw.io.star_lists`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from astropy.table import Table

from desgw.diff.starcat import make_star_catalog, make_veto_table
from desgw.errors import DesgwInputError, MissingFileError
from desgw.io.corners import read_corners_out
from desgw.io.star_lists import (
    snstar_name,
    snveto_name,
    write_star_list,
    write_veto_list,
)
from desgw.io.zp_tables import read_expcalib_csv

__all__ = ["MakestarcatResult", "makestarcat_main"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MakestarcatResult:
    """What :func:`makestarcat_main` wrote.

    Attributes
    ----------
    stars : astropy.table.Table
        The star list (see :func:`make_star_catalog`).
    snstar_path, snveto_path : pathlib.Path
        The files written.
    catalog_paths : tuple of pathlib.Path
        The SE tables that were read.
    """

    stars: Table
    snstar_path: Path
    snveto_path: Path
    catalog_paths: tuple[Path, ...]


def _find_catalogs(rootdir: Path, expnum: int, rnum: int, pnum: int,
                   include_search: bool) -> list[Path]:
    pattern = re.compile(rf"^D(\d{{8}})_\d{{2}}_r{int(rnum)}p{int(pnum)}_ZP\.csv$")
    found = []
    for path in sorted(rootdir.rglob(f"D*_r{int(rnum)}p{int(pnum)}_ZP.csv")):
        m = pattern.match(path.name)
        if m and (include_search or int(m.group(1)) != int(expnum)):
            found.append(path)
    return found


def makestarcat_main(*, expnum: int, nite: int, rnum: int, pnum: int, band: str, season: int,
                     ccd: int = 1, outdir: str | os.PathLike[str] = ".",
                     rootdir: str | os.PathLike[str] = ".", snstar: str | None = None,
                     snveto: str | None = None,
                     catalogs: Sequence[str | os.PathLike[str]] | None = None,
                     corners_file: str | os.PathLike[str] | None = None,
                     include_search: bool = False) -> MakestarcatResult:
    """``makestarcat.py``: write the SNSTAR and SNVETO lists of one search CCD.

    Parameters (the original options in brackets)
    ----------
    expnum : int
        Search exposure number [``-e``].
    nite : int
        Night of the search exposure [``-n``] (recorded in the log only, as the original).
    rnum, pnum : int
        Processing numbers [``-r``, ``-p``].
    band : str
        Filter [``-b``].
    season : int
        Season of the run [``-s``] (recorded in the log only, as the original).
    ccd : int
        Search CCD [``--ccd``, default 1].
    outdir : path-like
        Directory of the outputs [``-outdir``, default ``./``].
    rootdir : path-like
        Where the SE ``D{expnum:08d}_{ccd:02d}_r{R}p{P}_ZP.csv`` tables and ``{expnum}.out``
        are looked for (recursively) [``-rootdir``, default ``./``].
    snstar, snveto : str or None
        Output file names [``-snstar``, ``-snveto``]; default :func:`snstar_name`,
        :func:`snveto_name`. Relative names are inside ``outdir``.
    catalogs : sequence of path-like or None
        Explicit ``_ZP.csv`` tables to use instead of searching ``rootdir`` (desgw addition).
    corners_file : path-like or None
        The search exposure's ``{expnum}.out``; default ``rootdir/{expnum}.out``, else the
        first one found under ``rootdir``.
    include_search : bool
        Also use the search exposure's own tables (the original did not).

    Returns
    -------
    MakestarcatResult

    Raises
    ------
    MissingFileError
        No corners file, or no SE table.
    DesgwInputError
        The corners file lacks the CCD.
    """
    root, out = Path(rootdir), Path(outdir)
    if corners_file is None:
        default = root / f"{int(expnum)}.out"
        found = [default] if default.is_file() else sorted(root.rglob(f"{int(expnum)}.out"))
        if not found:
            raise MissingFileError(default, None, "CCD corners file of the search exposure "
                                   "not found")
        corners_file = found[0]
    corners = read_corners_out(corners_file)
    if int(ccd) not in corners.corners:
        raise DesgwInputError(corners_file, None, f"CCD {ccd} is not in the corners file "
                              f"(has {sorted(corners.corners)})")
    paths = ([Path(c) for c in catalogs] if catalogs is not None
             else _find_catalogs(root, expnum, rnum, pnum, include_search))
    if not paths:
        raise MissingFileError(root, None, f"no SE tables D*_r{rnum}p{pnum}_ZP.csv found")
    log.info("makestarcat expnum=%s nite=%s season=%s ccd=%s band=%s: %d SE tables",
             expnum, nite, season, ccd, band, len(paths))
    tables = [read_expcalib_csv(p) for p in paths]
    stars = make_star_catalog(tables, ccd_footprint=corners.corners[int(ccd)])
    star_path = out / (snstar or snstar_name(expnum, ccd, rnum, pnum))
    veto_path = out / (snveto or snveto_name(expnum, ccd, rnum, pnum))
    write_star_list(star_path, stars, band=band, rnum=rnum, pnum=pnum)
    write_veto_list(veto_path, make_veto_table(stars), band=band, rnum=rnum, pnum=pnum)
    log.info("wrote %s and %s (%d stars)", star_path, veto_path, len(stars))
    return MakestarcatResult(stars=stars, snstar_path=star_path, snveto_path=veto_path,
                             catalog_paths=tuple(paths))
