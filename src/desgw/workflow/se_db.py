"""Database records of an SE run: the exposure, its CCD products with their quality, and the
zeropoints (:mod:`desgw.db`).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desgw.io.product_paths import ccd_product_paths
from desgw.io.settings import Settings

from .se_types import SERunReport

if TYPE_CHECKING:  # pragma: no cover
    from desgw.io.raw import ExposureHeader
    from desgw.se.photocal import ExposureZP

__all__ = [
    "record_calibration",
    "record_se_exposure",
]

log = logging.getLogger(__name__)


def record_se_exposure(report: SERunReport, settings: Settings, exposure: ExposureHeader,
                  raw_path: Path | None) -> None:
    """The exposure, its CCD products and its zeropoints in the database (upserts, so a
    repeat is harmless), tried again with backoff for up to ``settings.db_timeout_s`` while the
    database is locked or unreachable (:func:`desgw.db.retry_database`)."""
    from desgw.db import retry_database

    retry_database(lambda: _record(report, settings, exposure, raw_path),
                   timeout_s=settings.db_timeout_s,
                   what=f"database records of exposure {report.expnum}")


def _record(report: SERunReport, settings: Settings, exposure: ExposureHeader,
            raw_path: Path | None) -> None:
    from desgw.db import (
        CCDProduct,
        connect,
        record_ccd_products,
        register_exposure,
    )

    paths_of = {c: ccd_product_paths(report.outdir, report.expnum, report.band, c, report.rnum,
                                     report.pnum) for c in report.ccds}
    with connect(settings.db_url, busy_timeout_s=settings.db_timeout_s,
                 connect_timeout_s=min(10.0, max(1.0, settings.db_timeout_s))) as db:
        register_exposure(db, exposure, raw_path)
        products = []
        for ccd, s in sorted(report.ccds.items()):
            m = getattr(s.qc, "metrics", None)

            def opt(name: str, m: Any = m) -> float | None:
                v = getattr(m, name, None) if m is not None else None
                return float(v) if v is not None and math.isfinite(float(v)) else None

            zp_s = opt("zp_per_second")
            if ccd in report.zeropoints and m is not None and m.exptime > 0:
                zp_s = report.zeropoints[ccd] - 2.5 * math.log10(m.exptime)
            products.append(CCDProduct(
                expnum=report.expnum, ccdnum=ccd, rnum=report.rnum, pnum=report.pnum,
                status="done" if s.ok else "failed",
                image_path=str(paths_of[ccd].immask) if s.ok else None,
                catalog_path=str(paths_of[ccd].fullcat) if s.ok else None,
                fwhm_arcsec=opt("fwhm_arcsec"), sky_brightness=opt("sky_mag_arcsec2"),
                zp=zp_s, astrom_rms_arcsec=opt("astrometric_rms_arcsec"),
                n_stars=None if m is None else int(m.n_stars),
                t_eff=None if m is None else opt("teff", m.teff),
                qc_passed=None if s.qc is None or not hasattr(s.qc, "passed")
                else bool(s.qc.passed),
                qc_reasons=tuple(getattr(s.qc, "reasons", ())) if s.ok else
                (s.reason or "failed",)))
        record_ccd_products(db, products)
        if report.expcalib is not None:
            record_calibration(db, report.expnum, report.rnum, report.pnum, report.expcalib)


def record_calibration(db: Any, expnum: int, rnum: int, pnum: int, expo: ExposureZP) -> int:
    """An exposure calibration's zeropoints in the database (``zeropoints``: ccdnum 0 the
    exposure, flag 1 replaced, 2 outlier, 4 exposure flagged) and the exposure's detections'
    magnitudes put on its final CCD zeropoints (:func:`desgw.db.recalibrate_detections`): the
    fused CCD tasks stored them on each CCD's own SE zeropoint before the calibration ran.

    Parameters
    ----------
    db : desgw.db.Database
        Open database; the exposure must be registered.
    expnum, rnum, pnum : int
    expo : ExposureZP
        The calibration (:func:`desgw.se.expcalib.run_expcalib`).

    Returns
    -------
    int
        Detections whose magnitudes were put on the calibrated zeropoints.
    """
    from desgw.db import Zeropoint, recalibrate_detections, record_zeropoints

    rows = []
    if math.isfinite(expo.zp) and math.isfinite(expo.zp_err):
        rows.append(Zeropoint(expnum=int(expnum), ccdnum=0, rnum=int(rnum), pnum=int(pnum),
                              zp=expo.zp, zp_err=expo.zp_err, n_stars=int(expo.exposure.n_used),
                              flag=int(bool(expo.exposure_flagged))))
    for ccd, z in sorted(expo.ccds.items()):
        if not (math.isfinite(z.zp) and math.isfinite(z.zp_err)):
            continue
        flag = (1 if z.replaced else 0) | (2 if z.outlier else 0) | \
            (4 if z.exposure_flagged else 0)
        rows.append(Zeropoint(expnum=int(expnum), ccdnum=int(ccd), rnum=int(rnum),
                              pnum=int(pnum), zp=float(z.zp), zp_err=float(z.zp_err),
                              n_stars=int(z.measured.n_used), flag=flag))
    record_zeropoints(db, rows)
    n = recalibrate_detections(db, int(expnum), {r.ccdnum: r.zp for r in rows if r.ccdnum > 0})
    if n:
        log.info("exposure %d: %d detections' magnitudes put on the calibrated CCD zeropoints",
                 expnum, n)
    return n
