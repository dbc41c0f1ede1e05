"""SE of one CCD as a task: read the raw CCD, its crosstalk sources, calibrations and Gaia
stars, :func:`desgw.se.process.process_ccd`, write the four products atomically
(:func:`run_ccd_task`, a plain function of a picklable :class:`~desgw.workflow.se_types.CCDTask`
that a local loop, a process pool or a Dask worker can run alike).
"""

from __future__ import annotations

import json
import logging
import math
import time
import traceback
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from astropy.io import fits

from desgw import __version__
from desgw.errors import HeaderError, describe_error
from desgw.instrument.camera import CCD_SHAPE
from desgw.io.atomic import atomic_write_bytes, atomic_write_text
from desgw.io.checksums import file_record
from desgw.util.jsonsafe import json_safe

from .se_qc import QC_FORMAT, finished_ccd_summary, qc_to_dict
from .se_types import CCDSummary, CCDTask

if TYPE_CHECKING:  # pragma: no cover
    from desgw.io.raw import ExposureHeader
    from desgw.se.process import CCDInputs, CCDResult

__all__ = [
    "approximate_ccd_corners",
    "run_ccd_task",
]

log = logging.getLogger(__name__)

#: Raw files whose decoded crosstalk-source CCDs are kept under ``Settings.raw_cache_dir``
#: (the exposure being processed and one more, e.g. a template exposure in between).
RAW_CACHE_FILES = 2


def approximate_ccd_corners(ccdnum: int, exposure: ExposureHeader,
                            ccd_header: fits.Header | None = None
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Approximate sky corners of a CCD before any astrometric fit.

    From the exposure's header pointing and the DECam optical model (distortion included);
    when the exposure has no pointing, from the CCD header's WCS.

    Returns
    -------
    (ra[4], dec[4]) : ndarray
        Degrees, outer pixel corners.

    Raises
    ------
    HeaderError
        Neither a pointing nor a usable CCD WCS.
    """
    from desgw.instrument import DECAM_DISTORTION, Pointing, ccd_corners_sky

    if exposure.ra_deg is not None and exposure.dec_deg is not None:
        pointing = Pointing(float(exposure.ra_deg), float(exposure.dec_deg), 0.0)
        ra, dec = ccd_corners_sky(int(ccdnum), pointing, DECAM_DISTORTION)
        return np.asarray(ra, dtype=np.float64) % 360.0, np.asarray(dec, dtype=np.float64)
    from astropy.wcs import WCS

    from desgw.errors import HeaderError

    if ccd_header is None or "CTYPE1" not in ccd_header:
        raise HeaderError(None, ccdnum, "no telescope pointing (TELRA/TELDEC) and no CCD WCS: "
                          "cannot place the CCD on the sky", keyword="TELRA")
    wcs = WCS(ccd_header, naxis=2)
    ny, nx = CCD_SHAPE
    x = np.array([0.5, nx + 0.5, nx + 0.5, 0.5])  # 1-based outer corners of the data section
    y = np.array([0.5, 0.5, ny + 0.5, ny + 0.5])
    ra, dec = wcs.all_pix2world(x, y, 1)
    return np.asarray(ra, dtype=np.float64) % 360.0, np.asarray(dec, dtype=np.float64)


def _read_inputs(task: CCDTask, timings: dict[str, float], margin_arcsec: float) -> CCDInputs:
    """Read everything process_ccd needs for the task's CCD."""
    from desgw.io.calib import CalibFile, read_linearity
    from desgw.io.raw import RawExposure
    from desgw.refcat import RefCatStore, mjd_to_jyear
    from desgw.io.calib_cache import CalibCache
    from desgw.se.crosstalk import feeds_other_ccds, needed_sources
    from desgw.se.process import (
        CCDInputs,  # the SE stack loads only where a CCD is processed
    )
    t0 = time.perf_counter()
    # decoded raw CCDs shared between the exposure's tasks: a CCD whose amplifiers leak into
    # other CCDs is decoded by the first task that needs it, not by each (desgw.io.calib_cache)
    raw_cache = None if task.raw_cache_dir is None else CalibCache(
        task.raw_cache_dir, max_sources=RAW_CACHE_FILES)
    with RawExposure(task.raw_path, cache=raw_cache) as raw:
        exposure = raw.header
        if not exposure.exptime > 0:  # a bias or a broken header: nothing to calibrate
            raise HeaderError(task.raw_path, 0, f"EXPTIME is {exposure.exptime}: single-epoch "
                              "processing needs a positive exposure time", keyword="EXPTIME")
        ccd = raw.read_ccd(task.ccdnum, keep=feeds_other_ccds(task.ccdnum))
        sources: dict[int, Any] = {}
        present = set(raw.ccdnums)
        missing: list[int] = []
        for src in sorted({c for c, _ in needed_sources(task.ccdnum)}):
            if src == task.ccdnum:
                sources[src] = ccd
            elif src in present:
                sources[src] = raw.read_ccd(src, keep=True)
            else:
                missing.append(src)
        if missing:
            # A partial file (a simulated subset of the camera): the absent CCDs were not read
            # out, so they add no crosstalk; a constant stand-in makes their terms exactly 0.
            log.warning("%s: crosstalk source CCD(s) %s of CCD %d are not in the file: their "
                        "crosstalk is not corrected", task.raw_path, missing, task.ccdnum)
            quiet = np.broadcast_to(np.float32(0.0), ccd.pixels.shape)
            for src in missing:
                sources[src] = quiet
    timings["read_raw"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    cache = task.calib_cache_dir  # decoded planes (desgw.io.calib_cache)
    with CalibFile(task.bias_path, "bias", cache=cache) as f:
        bias = f.read(task.ccdnum)
    with CalibFile(task.flat_path, "flat", cache=cache) as f:
        flat = f.read(task.ccdnum)
    bpm = None
    if task.bpm_path is not None:
        with CalibFile(task.bpm_path, "bpm", cache=cache) as f:
            bpm = f.read(task.ccdnum)
    linearity = None if task.linearity_path is None else read_linearity(task.linearity_path,
                                                                        task.ccdnum)
    timings["read_calib"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ra, dec = approximate_ccd_corners(task.ccdnum, exposure, ccd.header)
    refcat = RefCatStore(task.refcat_dir).query_footprint(
        ra, dec, margin_arcsec=margin_arcsec, epoch=mjd_to_jyear(exposure.mjd_obs))
    timings["refcat"] = time.perf_counter() - t0
    log.debug("CCD %d: %d Gaia stars in the footprint", task.ccdnum, len(refcat))
    calib_paths = {"bias": str(task.bias_path), "flat": str(task.flat_path)}
    if task.bpm_path is not None:
        calib_paths["bpm"] = str(task.bpm_path)
    return CCDInputs(raw=ccd, crosstalk_sources=sources, bias=bias, flat=flat, bpm=bpm,
                     refcat=refcat, exposure=exposure, linearity=linearity,
                     calib_paths=calib_paths)


def _product_header(task: CCDTask, config_hash: str, base: fits.Header | None = None
                    ) -> fits.Header:
    hdr = fits.Header() if base is None else base.copy()
    for key, value, comment in (
            ("EXPNUM", task.expnum, "exposure number"),
            ("CCDNUM", task.ccdnum, "CCD number"),
            ("BAND", task.band, "filter band")):
        if key not in hdr:
            hdr[key] = (value, comment)
    hdr["DESGWRP"] = (f"r{task.rnum}p{task.pnum}", "desgw processing version")
    hdr["CFGHASH"] = (config_hash, "hash of the desgw SE configuration")
    hdr["DESGWVER"] = (__version__, "desgw version")
    return hdr


def _write_products(task: CCDTask, result: CCDResult, config_hash: str,
                    timings: dict[str, float], t_start: float) -> CCDSummary:
    from desgw.io.products import write_fits_table, write_immask

    paths = task.paths
    t0 = time.perf_counter()
    header = _product_header(task, config_hash, result.header)
    write_immask(paths.immask, result.image, result.mask, result.weight, header=header,
                 wcs=result.wcs)
    cat_header = fits.Header()
    for key in ("EXPNUM", "CCDNUM", "BAND", "MJD-OBS", "EXPTIME", "DESGWRP", "CFGHASH",
                "DESGWVER"):
        if key in header:
            cat_header[key] = header[key]
    with warnings.catch_warnings():
        # unit strings FITS does not know (e.g. "electron") are kept as TUNITn text anyway
        warnings.filterwarnings("ignore", message=".*could not be saved in native FITS format")
        write_fits_table(paths.fullcat, result.catalog, header=cat_header)
    # the bytes to_fits_hdul().writeto() writes, from memory (its checksum record needs no
    # read back)
    psf_bytes = result.psf.to_fits_bytes([(key, header[key]) for key in
                                          ("EXPNUM", "CCDNUM", "BAND", "CFGHASH")])
    atomic_write_bytes(paths.psfmodel, psf_bytes, fsync=False)

    zp = result.zeropoint
    zp_value = float(zp.zp) if zp is not None else math.nan
    zp_err = float(zp.zp_err) if zp is not None else math.nan
    astro = result.astrometry
    astro_rms = float(astro.rms_arcsec)
    ra, dec = result.corners
    corners = (tuple(float(v) % 360.0 for v in ra), tuple(float(v) for v in dec))
    timings["write"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    doc = {
        "format": QC_FORMAT, "expnum": task.expnum, "ccdnum": task.ccdnum, "band": task.band,
        "rnum": task.rnum, "pnum": task.pnum, "config_hash": config_hash,
        "desgw_version": __version__, "n_objects": len(result.catalog),
        "qc": qc_to_dict(result.qc),
        "degraded": dict(result.flags),
        "zeropoint": {"zp": zp_value, "zp_err": zp_err,
                      "n_used": None if zp is None else int(zp.n_used),
                      "rms": None if zp is None else float(zp.rms)},
        "astrometry": {"rms_arcsec": astro_rms, "n_matched": int(astro.n_matched),
                       "n_used": int(astro.n_used),
                       # fitted minus input (header / CP) WCS at the CCD centre, RA*cos(Dec)
                       "offset_ra_arcsec": float(astro.offset_ra_arcsec),
                       "offset_dec_arcsec": float(astro.offset_dec_arcsec)},
        "corners": {"ra": list(corners[0]), "dec": list(corners[1])},
        "timings": dict(timings),
        # size and checksum of each product: a resume redoes a product changed since
        "products": {"immask": file_record(paths.immask), "fullcat": file_record(paths.fullcat),
                     "psfmodel": file_record(paths.psfmodel)},
    }
    atomic_write_text(paths.qc, json.dumps(json_safe(doc), indent=1, sort_keys=True)
                      + "\n")
    return CCDSummary(ccdnum=task.ccdnum, ok=True, skipped=False, qc=result.qc, zp=zp_value,
                      zp_err=zp_err, timings=dict(timings), corners=corners,
                      config_hash=config_hash, astrometric_rms_arcsec=astro_rms,
                      n_objects=len(result.catalog))


def read_and_process(task: CCDTask, config: Any, timings: dict[str, float]
                     ) -> tuple[Any, Any]:
    """Read one CCD's inputs once and run :func:`desgw.se.process.process_ccd` on them.

    ``timings`` (seconds) gains ``read_raw``, ``read_calib``, ``refcat``, ``process`` and the
    steps of ``process_ccd``. Returns the :class:`~desgw.se.process.CCDResult` and the raw
    exposure's header (:class:`~desgw.io.raw.ExposureHeader`).
    """
    from desgw.se.process import process_ccd

    inputs = _read_inputs(task, timings, float(config.refcat_margin_arcsec))
    t0 = time.perf_counter()
    result = process_ccd(inputs, config=config)
    timings["process"] = time.perf_counter() - t0
    for key, value in result.timings.items():
        timings.setdefault(str(key), float(value))
    return result, inputs.exposure


def run_ccd_task(task: CCDTask, *,
                 after_write: Callable[[CCDResult, fits.Header], None] | None = None
                 ) -> CCDSummary:
    """SE processing of one CCD, products written atomically; never raises for a CCD failure.

    A CCD whose four products exist is not redone unless ``task.overwrite`` (its summary is
    read from its ``_qc.json``).

    Parameters
    ----------
    task : CCDTask
    after_write : callable, optional
        Called as ``after_write(result, header)`` once the products are written, with the
        :class:`~desgw.se.process.CCDResult` still in memory and the immask's SCI header
        (:func:`desgw.io.products.immask_sci_header`): e.g. a template CCD's prepared form.
        Not called for a CCD that was not processed (failed, or complete from before). What
        it raises is logged, never the CCD's failure.

    Returns
    -------
    CCDSummary
        ``ok`` False with the exception when anything failed; no product
        is left half-written.
    """
    done = finished_ccd_summary(task.paths, task.ccdnum, overwrite=task.overwrite)
    if done is not None:
        return done
    from desgw.se.process import SEConfig

    config = task.config if task.config is not None else SEConfig()
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    try:
        result, _ = read_and_process(task, config, timings)
        summary = _write_products(task, result, config.hash(), timings, t_start)
    except Exception as exc:  # noqa: BLE001 - a failed CCD must not stop the others
        log.error("CCD %d of exposure %d failed: %s", task.ccdnum, task.expnum,
                  describe_error(exc))
        return CCDSummary(ccdnum=task.ccdnum, ok=False, error=exc,
                          error_traceback=traceback.format_exc(),
                          timings={**timings, "total": time.perf_counter() - t_start})
    if after_write is not None:
        from desgw.io.products import immask_sci_header

        try:
            header = _product_header(task, config.hash(), result.header)
            after_write(result, immask_sci_header(header, result.wcs))
        except Exception as exc:  # noqa: BLE001 - the products stand; only logged
            log.warning("CCD %d of exposure %d: after its products: %s", task.ccdnum,
                        task.expnum, describe_error(exc))
    return summary
