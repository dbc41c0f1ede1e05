"""The fused search CCD: SE, then difference imaging, of one search CCD in one task and in
memory (:func:`run_sediff_ccd`).

The search CCD is read raw and processed (:func:`desgw.se.process.process_ccd`); its result
becomes the difference imaging's :class:`~desgw.diff.pipeline_types.CCDProducts` directly
(:func:`search_products_from_se`: image, mask, weight, WCS, PSF, catalog, zeropoint and the
quality numbers, as :func:`desgw.diff.pipeline_products.load_ccd_products` would read them
back from the files, but without the immask's lossy quantisation and without reading
anything again). The search exposure is registered in the database (when there is one),
then the candidates and the database rows come first, then the archival SE
products (immask, fullcat, PSF model and the CCD's ``_qc.json`` marker) and last the
difference imaging's completion marker, so a CCD with a diff marker has every SE product.

A search CCD whose four SE products exist (and no ``overwrite``) is not processed again, as
the engine skips such an SE task: the difference imaging reads them as
:func:`~desgw.workflow.diff_ccd.run_diff_ccd` does (its own resume check included). When
the difference imaging fails after SE succeeded, the SE products are still written (the
exposure's calibration uses them). The photometric calibration of the search exposure
(``expcalib``) runs after the fused tasks: the difference imaging uses only the CCD's own
zeropoint (``MAGZERO``, :attr:`CCDProducts.zp`), which SE measures.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from typing import TYPE_CHECKING

from desgw.errors import DesgwError, describe_error

from .se_ccd import _product_header, _write_products, read_and_process
from .se_qc import qc_to_dict
from .se_types import CCDSummary, CCDTask

if TYPE_CHECKING:  # pragma: no cover
    from astropy.io import fits

    from desgw.diff.pipeline_types import CCDProducts
    from desgw.se.process import CCDResult

    from .diff_ccd import DiffSummary, DiffTask

__all__ = [
    "SearchSEError",
    "run_sediff_ccd",
    "search_products_from_se",
]

log = logging.getLogger(__name__)


class SearchSEError(DesgwError):
    """The SE of a fused search CCD failed, so its difference imaging did not run (the SE
    failure is the summary's ``error``; this one, with its text, the diff summary's)."""


def _header_float(header: fits.Header, key: str, default: float) -> float:
    try:
        v = float(header[key])
    except (KeyError, TypeError, ValueError):
        return default
    return v if math.isfinite(v) else default


def search_products_from_se(result: CCDResult, header: fits.Header, *, band: str,
                            expnum: int, ccdnum: int) -> CCDProducts:
    """The difference imaging's view of a CCD just processed by SE, in memory.

    Parameters
    ----------
    result : CCDResult
        :func:`desgw.se.process.process_ccd`'s result (image in e-, sky not subtracted).
    header : astropy.io.fits.Header
        The product header the immask gets (:func:`desgw.workflow.se_ccd._product_header`):
        ``MAGZERO`` (AB zeropoint of the total flux in e-), ``EXPTIME`` (s), ``QCPASS``,
        ``FWHMASEC`` (arcsec), ``PSFAPCOR``, ``AIRMASS``, ``WGTSCALE`` are taken from it, as
        :func:`~desgw.diff.pipeline_products.load_ccd_products` takes them from the file.
    band : str
    expnum, ccdnum : int

    Returns
    -------
    CCDProducts
        Sharing the result's arrays (not copied: the difference imaging does not modify its
        inputs). ``t_eff`` is the quality metrics' (NaN when not measured); ``background``
        is SE's sky estimate, which the difference imaging reuses
        (:func:`desgw.diff.pipeline_steps.search_sky`).
    """
    from desgw.diff.pipeline_types import CCDProducts

    teff = math.nan
    try:
        qc = qc_to_dict(result.qc)
        v = None if qc is None else qc["metrics"]["teff"]["teff"]
        teff = float(v) if v is not None else math.nan
    except (KeyError, TypeError, ValueError):
        log.warning("CCD %d: no t_eff in the quality metrics", ccdnum)
    qcpass = header.get("QCPASS")
    return CCDProducts(
        image=result.image, mask=result.mask, weight=result.weight, wcs=result.wcs,
        psf=result.psf, zp=_header_float(header, "MAGZERO", math.nan),
        exptime=_header_float(header, "EXPTIME", math.nan), band=str(band).strip(),
        expnum=int(expnum), ccdnum=int(ccdnum), catalog=result.catalog,
        qc_passed=bool(qcpass) if qcpass is not None else True,
        fwhm=_header_float(header, "FWHMASEC", math.nan), t_eff=teff,
        psf_apcor=_header_float(header, "PSFAPCOR", 1.0),
        airmass=_header_float(header, "AIRMASS", math.nan), background=result.background,
        weight_scale=_header_float(header, "WGTSCALE", 1.0))


def _register_search(diff_task: DiffTask, exposure: object, raw_path: str) -> None:
    """Register the search exposure in the database of ``diff_task.settings`` (an upsert;
    nothing without a database), tried again while the database is locked or down."""
    settings = diff_task.settings
    if getattr(settings, "db_url", None) is None:
        return
    from desgw.db import connect_shared, register_exposure, retry_database

    timeout = float(getattr(settings, "db_timeout_s", 60.0))

    def write() -> None:  # the worker's open database: statements compiled once
        with connect_shared(settings.db_url, busy_timeout_s=timeout,
                            connect_timeout_s=min(10.0, max(1.0, timeout))) as db:
            register_exposure(db, exposure, raw_path)

    retry_database(write, timeout_s=timeout,
                   what=f"registration of exposure {diff_task.search_expnum}")


def run_sediff_ccd(se_task: CCDTask, diff_task: DiffTask) -> tuple[CCDSummary, DiffSummary]:
    """SE and difference imaging of one search CCD (module docstring); never raises for a
    CCD failure.

    Parameters
    ----------
    se_task : CCDTask
        The search CCD's SE (raw file, calibrations, product folder, ``overwrite``).
    diff_task : DiffTask
        Its difference imaging (same exposure, CCD, band and ``r{R}p{P}``); when SE runs,
        the difference imaging is redone whatever its ``overwrite`` (the inputs are new).

    Returns
    -------
    (CCDSummary, DiffSummary)
        The SE summary (``skipped`` when its products existed) and the difference imaging's;
        when SE failed, the diff summary's error is a :class:`SearchSEError`.

    Raises
    ------
    ValueError
        The two tasks are not of the same CCD.
    """
    from desgw.se.process import SEConfig

    from .diff_ccd import DiffSummary, run_diff_ccd

    if (int(se_task.expnum), int(se_task.ccdnum), se_task.band, se_task.rnum, se_task.pnum) != \
            (int(diff_task.search_expnum), int(diff_task.ccdnum), diff_task.band,
             diff_task.rnum, diff_task.pnum):
        raise ValueError(f"SE task {se_task.expnum}/{se_task.ccdnum} and diff task "
                         f"{diff_task.search_expnum}/{diff_task.ccdnum} are not one CCD")
    paths = se_task.paths
    if not se_task.overwrite and paths.complete():
        # as the engine skips an SE task whose four products exist
        from .se_qc import load_ccd_summary

        try:
            se_summary = load_ccd_summary(paths.qc, se_task.ccdnum)
        except DesgwError as exc:
            log.warning("CCD %d: %s", se_task.ccdnum, exc)
            se_summary = CCDSummary(ccdnum=se_task.ccdnum, ok=True, skipped=True)
        try:
            if getattr(diff_task.settings, "db_url", None) is not None:
                from desgw.io.raw import read_exposure_header

                _register_search(diff_task, read_exposure_header(se_task.raw_path),
                                 se_task.raw_path)
        except Exception as exc:  # noqa: BLE001 - the CCD's failure
            return se_summary, DiffSummary(ccdnum=int(diff_task.ccdnum), ok=False, error=exc,
                                           error_kind="failed")
        return se_summary, run_diff_ccd(diff_task)

    config = se_task.config if se_task.config is not None else SEConfig()
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    try:
        result, exposure = read_and_process(se_task, config, timings)
        cfg_hash = config.hash()
        header = _product_header(se_task, cfg_hash, result.header)
        search = search_products_from_se(result, header, band=se_task.band,
                                         expnum=se_task.expnum, ccdnum=se_task.ccdnum)
    except Exception as exc:  # noqa: BLE001 - a failed CCD must not stop the others
        log.error("CCD %d of exposure %d failed: %s", se_task.ccdnum, se_task.expnum,
                  describe_error(exc))
        se_failed = CCDSummary(ccdnum=se_task.ccdnum, ok=False, error=exc,
                               error_traceback=traceback.format_exc(),
                               timings={**timings, "total": time.perf_counter() - t_start})
        return se_failed, DiffSummary(ccdnum=int(diff_task.ccdnum), ok=False,
                                      error=SearchSEError(f"search SE failed: "
                                                          f"{describe_error(exc)}"),
                                      error_kind="failed")

    written: list[CCDSummary] = []
    t_se_done = time.perf_counter()

    def archive() -> None:
        """The SE products and their marker (before the diff's marker); the SE ``total``
        is its processing and writing, not the difference imaging between them."""
        if not written:
            diff_seconds = time.perf_counter() - t_se_done
            written.append(_write_products(se_task, result, cfg_hash, timings,
                                           t_start + diff_seconds))

    try:
        # the candidates' rows need their exposure, which the search calibration (after the
        # fused tasks) would register only later
        _register_search(diff_task, exposure, se_task.raw_path)
    except Exception as exc:  # noqa: BLE001 - the CCD's failure; its SE products are kept
        log.error("exposure %d CCD %d: %s", se_task.expnum, se_task.ccdnum,
                  describe_error(exc))
        diff_summary = DiffSummary(ccdnum=int(diff_task.ccdnum), ok=False, error=exc,
                                   error_kind="failed")
    else:
        # with the search in memory run_diff_ccd redoes the CCD (the inputs are new)
        diff_summary = run_diff_ccd(diff_task, search=search, before_marker=archive)
    if not written:  # the difference imaging failed before its products: keep SE's
        try:
            archive()
        except Exception as exc:  # noqa: BLE001 - reported as the SE failure
            log.error("CCD %d of exposure %d: SE products not written: %s", se_task.ccdnum,
                      se_task.expnum, describe_error(exc))
            return (CCDSummary(ccdnum=se_task.ccdnum, ok=False, error=exc,
                               error_traceback=traceback.format_exc(), timings=timings),
                    diff_summary)
    return written[0], diff_summary
