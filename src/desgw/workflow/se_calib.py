"""Exposure-level steps of the SE runner after the CCDs: the photometric calibration of the
fullcats on disk (``BLISS-expCalib``) and the exposure quality.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from desgw.errors import MissingCCDError, MissingFileError
from desgw.io.corners import read_corners_out
from desgw.io.naming import (
    corners_out_name,
    parse_product_name,
)
from desgw.io.product_paths import find_fullcats

from .se_types import SERunReport

if TYPE_CHECKING:  # pragma: no cover
    from desgw.se.photocal import ExposureZP, Method as ZPMethod

__all__ = [
    "calibrate_exposure",
    "exposure_quality",
]

log = logging.getLogger(__name__)


def calibrate_exposure(expnum: int, rnum: int, pnum: int, *, directory: str | os.PathLike[str],
                       refcat_dir: str | os.PathLike[str], ccds: Iterable[int] | None = None,
                       band: str | None = None, corners: Mapping[int, Any] | None = None,
                       epoch: float | None = None, mags_type: str = "mag_psf",
                       sex_mag_zeropoint: float = 25.0, use_color_terms: bool = True,
                       verbose: int = 0, debug: bool = False, zp_method: str | None = None,
                       zp_error_floor: float | None = None,
                       ccd_zp: str = "shrinkage") -> ExposureZP:
    """Photometric calibration of an exposure's fullcats on disk (``BLISS-expCalib``).

    Parameters
    ----------
    expnum, rnum, pnum : int
        Exposure and processing version of the fullcats.
    directory : path
        Folder holding the ``..._fullcat.fits`` files; the CSV files are written there.
    refcat_dir : path
        Gaia store.
    ccds : iterable of int, optional
        CCDs to calibrate (default: every fullcat found).
    band : str, optional
        Band (default: from the fullcat names).
    corners : mapping of int to (ra[4], dec[4]), optional
        CCD corners for the Gaia queries (default: ``{expnum}.out`` in ``directory`` if there,
        else the box of each catalog's positions).
    epoch : float, optional
        Julian year of the exposure for proper motions (default: from ``MJD-OBS`` of the
        fullcat headers when present, else none).
    mags_type, sex_mag_zeropoint, verbose, debug
        As the original options (see :func:`desgw.se.expcalib.run_expcalib`).
    use_color_terms : bool
        Gaia -> DES colour terms (default) or Gaia G for every band (the original).
    zp_method, zp_error_floor : optional
        Estimator of each CCD's own zeropoint and its error floor (mag); default
        :data:`desgw.se.expcalib.DEFAULT_ZP_METHOD` / ``DEFAULT_ERROR_FLOOR`` (the SE's).
    ccd_zp : {"shrinkage", "own"}
        Final CCD zeropoints: the empirical-Bayes estimates over the exposure's CCDs
        (default) or each CCD's own (the original); see
        :class:`desgw.se.photocal.ZeropointRules`.

    Returns
    -------
    ExposureZP
        Zeropoints in desgw's sign (``m_AB = -2.5 log10(FLUX [e-]) + zp``).

    Raises
    ------
    MissingFileError
        No fullcat of the exposure in ``directory``.
    MissingCCDError
        A CCD of ``ccds`` has no fullcat.
    PhotometricCalibrationError
        Too few calibration stars in the whole exposure.
    """
    from desgw.io.fitstable import read_table
    from desgw.refcat import RefCatStore, mjd_to_jyear
    from desgw.se.expcalib import DEFAULT_ERROR_FLOOR, DEFAULT_ZP_METHOD, run_expcalib
    from desgw.se.photocal import ZP_METHODS, ZeropointRules

    method = DEFAULT_ZP_METHOD if zp_method is None else zp_method
    if method not in ZP_METHODS:
        raise ValueError(f"zp_method must be one of {ZP_METHODS}, got {method!r}")
    d = Path(directory)
    found = find_fullcats(d, expnum, rnum, pnum)
    if not found:
        raise MissingFileError(d, None, f"no D{int(expnum):08d}_*_r{rnum}p{pnum}_fullcat.fits")
    wanted = sorted(found) if ccds is None else sorted(int(c) for c in ccds)
    missing = [c for c in wanted if c not in found]
    if missing:
        raise MissingCCDError(d, None, f"no fullcat for CCD(s) {missing} of exposure {expnum} "
                              f"r{rnum}p{pnum}", present=tuple(sorted(found)))
    if band is None:
        band = parse_product_name(found[wanted[0]]).band
    catalogs = {c: read_table(found[c]) for c in wanted}
    if epoch is None:
        mjds = [float(t.meta["MJD-OBS"]) for t in catalogs.values() if "MJD-OBS" in t.meta]
        epoch = mjd_to_jyear(mjds[0]) if mjds else None
    if corners is None and (d / corners_out_name(expnum)).is_file():
        corners = read_corners_out(d / corners_out_name(expnum)).corners
    ccd_corners = None if corners is None else {c: corners[c] for c in wanted if c in corners}
    floor = DEFAULT_ERROR_FLOOR if zp_error_floor is None else float(zp_error_floor)
    rules = ZeropointRules(method=method, error_floor=floor, ccd_zp=ccd_zp)
    return run_expcalib(expnum, rnum, pnum, wanted, catalogs=catalogs,
                        refcat=RefCatStore(refcat_dir), band=str(band), mags_type=mags_type,
                        sex_mag_zeropoint=sex_mag_zeropoint, outdir=d, verbose=verbose,
                        debug=debug, use_color_terms=use_color_terms, corners=ccd_corners,
                        epoch=epoch, method=cast("ZPMethod", method), error_floor=floor,
                        rules=rules)


# ----------------------------------------------------------------------------- exposure QC
def exposure_quality(report: SERunReport, *, assess: bool) -> Any:
    """Exposure metrics from the CCD metrics (calibrated zeropoints when there are), assessed
    unless ``assess`` is False (then the combined QCMetrics)."""
    from desgw.se.quality import assess_quality, combine_qc_metrics, compute_qc_metrics

    per_ccd = []
    zps = report.zeropoints
    for ccd, s in sorted(report.ccds.items()):
        if not s.ok or s.qc is None:
            continue
        m = s.qc.metrics
        if ccd in zps and math.isfinite(zps[ccd]):
            m = compute_qc_metrics(band=m.band, exptime=m.exptime, airmass=m.airmass,
                                   fwhm_arcsec=m.fwhm_arcsec, sky_level_e=m.sky_level_e,
                                   zp=zps[ccd], astrometric_rms_arcsec=m.astrometric_rms_arcsec,
                                   n_stars=m.n_stars)
        per_ccd.append(m)
    if not per_ccd:
        raise ValueError("no CCD with quality metrics")
    combined = combine_qc_metrics(per_ccd)
    return assess_quality(combined) if assess else combined
