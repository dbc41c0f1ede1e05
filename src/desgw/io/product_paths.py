"""Paths of the products of a CCD (SE and difference imaging) under an exposure directory, with
the original names of :mod:`desgw.io.naming`, and the look-ups of existing products.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from desgw.errors import DesgwInputError, MissingFileError
from desgw.io.checksums import records_problems
from desgw.io.naming import (
    fullcat_name,
    immask_name,
    parse_product_name,
    psf_model_name,
    qc_ccd_name,
)

__all__ = [
    "CCDProductPaths",
    "DiffProductPaths",
    "ccd_product_paths",
    "diff_product_paths",
    "find_exposure_dir",
    "find_fullcats",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CCDProductPaths:
    """The product files of one CCD (original names)."""

    immask: Path
    fullcat: Path
    psfmodel: Path
    qc: Path

    def all(self) -> tuple[Path, ...]:
        """The four paths, the completion marker (``qc``) last."""
        return (self.immask, self.fullcat, self.psfmodel, self.qc)

    def complete(self) -> bool:
        """True when every product exists and matches the size and checksum its completion
        marker (the ``_qc.json``) recorded for it (markers without records: exists only).

        A product truncated or changed after the marker was written makes the CCD incomplete,
        so a resume does it again."""
        if not all(p.is_file() for p in self.all()):
            return False
        try:
            doc = json.loads(self.qc.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # not a marker with records (its reader will say so)
            return True
        records = doc.get("products") if isinstance(doc, dict) else None
        if records is None:
            return True
        problems = records_problems(self.qc.parent, records)
        if problems:
            log.warning("%s: %s; the CCD is not complete", self.qc.name, "; ".join(problems))
        return not problems


def ccd_product_paths(outdir: str | os.PathLike[str], expnum: int, band: str, ccdnum: int,
                      rnum: int, pnum: int) -> CCDProductPaths:
    """Paths of a CCD's products in the exposure directory ``outdir``."""
    d = Path(outdir)
    return CCDProductPaths(
        immask=d / immask_name(expnum, band, ccdnum, rnum, pnum),
        fullcat=d / fullcat_name(expnum, band, ccdnum, rnum, pnum),
        psfmodel=d / psf_model_name(expnum, band, ccdnum, rnum, pnum),
        qc=d / qc_ccd_name(expnum, band, ccdnum, rnum, pnum),
    )


def find_fullcats(directory: Path, expnum: int, rnum: int, pnum: int) -> dict[int, Path]:
    found: dict[int, Path] = {}
    for p in sorted(directory.glob(f"D{int(expnum):08d}_*_r{int(rnum)}p{int(pnum)}"
                                   "_fullcat.fits")):
        try:
            name = parse_product_name(p)
        except ValueError:
            continue
        if name.kind == "fullcat" and name.ccd is not None:
            found[name.ccd] = p
    return found


def find_exposure_dir(out_root: str | os.PathLike[str], expnum: int, rnum: int, pnum: int
                      ) -> Path:
    """The product directory of an exposure under ``out_root`` (any cache, schema and night).

    Looks for ``out_root/*/*/exp/*/{expnum}/`` folders that hold fullcats of ``r{R}p{P}``.

    Raises
    ------
    MissingFileError
        None found.
    DesgwInputError
        Several found (the message lists them).
    """
    root = Path(out_root)
    hits = sorted(d for d in root.glob(f"*/*/exp/*/{int(expnum)}")
                  if d.is_dir() and find_fullcats(d, expnum, rnum, pnum))
    if not hits:
        raise MissingFileError(root, None, f"no product directory of exposure {expnum} with "
                               f"r{rnum}p{pnum} fullcats (looked in */*/exp/*/{expnum})")
    if len(hits) > 1:
        raise DesgwInputError(root, None, f"exposure {expnum} r{rnum}p{pnum} has products in "
                              f"several directories, name one: {[str(h) for h in hits]}")
    return hits[0]


@dataclass(frozen=True)
class DiffProductPaths:
    """Paths of one CCD's difference-imaging products (the table in
    :mod:`desgw.diff.pipeline_products`)."""

    directory: Path
    prefix: str

    def _p(self, suffix: str) -> Path:
        return self.directory / f"{self.prefix}_{suffix}"

    @property
    def diff(self) -> Path:
        return self._p("diff.fits.fz")

    @property
    def template(self) -> Path:
        return self._p("template.fits.fz")

    @property
    def search(self) -> Path:
        return self._p("search.fits.fz")

    def resampled(self, expnum: int, ccdnum: int) -> Path:
        return self._p(f"resamp_{int(expnum)}_{int(ccdnum):02d}.fits.fz")

    @property
    def candidates_fits(self) -> Path:
        return self._p("cands.fits")

    @property
    def candidates_parquet(self) -> Path:
        return self._p("cands.parquet")

    @property
    def fakes(self) -> Path:
        return self._p("fakes.fits")

    @property
    def stamps(self) -> Path:
        return self._p("stamps.fits")

    @property
    def stamps_dir(self) -> Path:
        return self.directory / "stamps"

    @property
    def efficiency(self) -> Path:
        return self._p("efficiency.json")

    @property
    def done(self) -> Path:
        """The completion marker, written last (``P_diffdone.json``)."""
        return self._p("diffdone.json")


def diff_product_paths(exposure_dir: str | os.PathLike[str], expnum: int, band: str, ccdnum: int,
                       rnum: int, pnum: int, season: int) -> DiffProductPaths:
    """Product paths under ``exposure_dir/dp{season}/{band}_{ccd:02d}/``."""
    d = Path(exposure_dir) / f"dp{int(season)}" / f"{band}_{int(ccdnum):02d}"
    prefix = f"D{int(expnum):08d}_{band}_{int(ccdnum):02d}_r{int(rnum)}p{int(pnum)}_dp{int(season)}"
    return DiffProductPaths(d, prefix)
