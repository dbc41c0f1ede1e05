"""Single-epoch processing of one exposure: the behaviour of the original ``SE_job_mod.sh``.

:func:`run_se_exposure` takes a raw DECam exposure through SE processing CCD by CCD and then
through the exposure-level steps:

1. **per CCD** (:func:`run_ccd_task`, a plain function of a picklable :class:`CCDTask` that a
   local loop, a process pool or a Dask worker can run alike): open the raw file, read the CCD
   and only the crosstalk source CCDs it needs, read its calibrations, query the Gaia store
   for the CCD's approximate footprint (from the header pointing and the DECam optical model,
   grown by ``SEConfig.refcat_margin_arcsec``) at the exposure epoch,
   :func:`desgw.se.process.process_ccd`, and write atomically, under
   ``exposure_dir(out_root, cache, schema, nite, expnum)``:

   - ``D{expnum:08d}_{band}_{ccd:02d}_r{R}p{P}_immask.fits.fz``: SCI, MSK, WGT with the fitted
     WCS and the SE configuration hash (``CFGHASH``) in the headers;
   - ``..._fullcat.fits``: the object catalog (SExtractor column names);
   - ``..._psfmodel.fits``: the PSF model;
   - ``..._qc.json``: CCD quality metrics, zeropoint, astrometry, corners and timings. It is
     written last, records the size and checksum of the three others and marks the CCD as
     complete: a CCD whose files match it is skipped on a re-run (resume) unless
     ``overwrite``.

   A CCD that fails is reported with its error; the other CCDs finish. The exposure-level
   steps below use every CCD of the exposure whose products are on disk (earlier runs on other
   CCDs included), never only this call's CCDs.
2. ``{expnum}.out``: the corners of every finished CCD (:mod:`desgw.workflow.templates`).
3. with ``run_calibration`` (``-C``) or ``jump_to_calib`` (``-j``, which skips step 1 and uses
   the fullcats on disk): the photometric calibration of all CCDs together
   (:func:`desgw.se.expcalib.run_expcalib`) writing the original ``Zero_*.csv``,
   ``allZP_*.csv`` and ``*_ZP.csv`` files.
4. exposure quality: CCD metrics (with the calibrated zeropoints when step 3 ran) combined
   (:func:`desgw.se.quality.combine_qc_metrics`) and, except in template mode (``-t``, which
   skips the verification), assessed (:func:`desgw.se.quality.assess_quality`); written to
   ``D{expnum:08d}_{band}_r{R}p{P}_qc.json``.
5. with a database URL in the settings: the exposure, the CCD products and the zeropoints are
   recorded (:mod:`desgw.db`).

Parallelism: the CCDs run on the engine (:mod:`desgw.workflow.se_pool`,
:func:`desgw.engine.run.run_graph`): without ``single_process`` on a local Dask cluster of
long-lived worker processes (one per core by default; sep and most of the SE kernels hold the
GIL, so processes, not threads), with it one after the other in this process. Failures,
retries of transient errors and of CCDs whose worker died, and the per-task logs
(``out_root/logs``) are the engine's, as for ``desgw sediff``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from desgw.errors import DesgwInputError, MissingFileError
from desgw.io.atomic import atomic_write_text, clean_stale_temp_files
from desgw.io.corners import write_corners_out
from desgw.io.naming import (
    corners_out_name,
    exposure_dir,
    qc_exposure_name,
)
from desgw.io.product_paths import ccd_product_paths, find_fullcats
from desgw.io.settings import CalibPaths, Settings
from desgw.util.jsonsafe import json_safe

from .se_calib import calibrate_exposure, exposure_quality
from .se_db import record_se_exposure
from .se_pool import run_ccd_tasks
from .se_qc import QC_FORMAT, finished_ccd_summary, load_ccd_summary, qc_to_dict
from .se_types import (
    CACHES,
    SCHEMAS,
    SPECIAL_Y_WARNING,
    CCDSummary,
    CCDTask,
    SERunReport,
)

if TYPE_CHECKING:  # pragma: no cover
    from desgw.io.raw import ExposureHeader
    from desgw.se.process import SEConfig

__all__ = ["run_se_exposure"]

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- the exposure
def _check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def run_se_exposure(expnum: int, *, settings: Settings, rnum: int, pnum: int,
                    nite: int | None = None, band: str | None = None, cache: str = "scratch",
                    schema: str = "gw", ccds: Iterable[int] | None = None,
                    run_calibration: bool = False, jump_to_calib: bool = False,
                    single_process: bool = False, overwrite: bool = False,
                    template_mode: bool = False, special_y: bool = False,
                    workers: int | None = None, config: SEConfig | None = None,
                    instcal: bool = False) -> SERunReport:
    """SE processing of one exposure (``SE_job_mod.sh``); see the module docstring.

    Parameters
    ----------
    expnum : int
        Exposure number (``-E``).
    settings : Settings
        Where the raw file, calibrations, Gaia store, products and database are.
    rnum, pnum : int
        Processing version (``-r``, ``-p``): products are named ``..._r{R}p{P}_...``.
    nite : int, optional
        Night (``-n``, YYYYMMDD) of the product directory; default the raw header's. A value
        different from the header's is used, with a warning.
    band : str, optional
        Band (``-b``); default the raw header's. Must agree with the header.
    cache, schema : str
        ``scratch``/``persistent`` (``-d``) and ``gw``/``wsdiff`` (``-m``): the product
        directory is ``out_root/cache/schema/exp/nite/expnum``.
    ccds : iterable of int, optional
        CCDNUMs (``-c``); default :data:`desgw.instrument.DEFAULT_CCDNUMS` that the raw file
        holds. An explicit CCD absent from the file fails.
    run_calibration : bool
        ``-C``: photometric calibration after the CCDs.
    jump_to_calib : bool
        ``-j``: no SE processing; calibrate the fullcats that exist (implies ``-C``). CCDs of
        the list without a fullcat fail.
    single_process : bool
        ``-s``: process the CCDs one after the other in this process (no Dask).
    overwrite : bool
        ``-O``: redo CCDs whose products exist.
    template_mode : bool
        ``-t``: the exposure is a template: the exposure quality is measured and written but
        not assessed (the verification step is skipped).
    special_y : bool
        ``-Y``: accepted for compatibility and without effect (:data:`SPECIAL_Y_WARNING`).
    workers : int, optional
        Worker processes of the local Dask cluster (default one per core and per 3.5 GB of
        memory, at most one per CCD).
    config : SEConfig, optional
        SE configuration (default ``SEConfig()``).
    instcal : bool
        ``--instcal``: the exposure is a Community Pipeline InstCal triplet under the raw
        folder (the ``*_ooi_*`` file whose EXPNUM matches, with its ``_ood_``/``_oow_``);
        its CCDs run :func:`desgw.workflow.se_instcal.run_instcal_ccd_task` (no
        calibrations); the products and the exposure-level steps are the same.

    Returns
    -------
    SERunReport

    Raises
    ------
    DesgwInputError
        Exposure-level bad input: no raw file, an unreadable primary header, a band that
        disagrees with the header, no calibration for the band (CCD-level problems are
        reported per CCD instead).
    ValueError
        A bad cache, schema or CCD number.
    """
    from desgw.instrument import DEFAULT_CCDNUMS, SCIENCE_CCDNUMS
    from desgw.io.raw import RawExposure, read_exposure_header

    t_total = time.perf_counter()
    t0 = t_total
    _check_choice("cache", cache, CACHES)
    _check_choice("schema", schema, SCHEMAS)
    expnum, rnum, pnum = int(expnum), int(rnum), int(pnum)
    warnings: list[str] = []
    if special_y:
        log.warning(SPECIAL_Y_WARNING)
        warnings.append(SPECIAL_Y_WARNING)
    if jump_to_calib:
        run_calibration = True

    raw_path: Path | None
    exposure: ExposureHeader | None
    try:
        if instcal:  # a CP InstCal exposure (desgw.workflow.se_instcal): no calibrations
            from desgw.io.instcal import find_instcal_image

            raw_path = find_instcal_image(settings.raw_dir, expnum)
        else:
            raw_path = settings.raw_path(expnum)
    except MissingFileError:
        if not jump_to_calib or band is None or nite is None:
            raise
        raw_path, exposure = None, None  # -j only needs the fullcats when band/nite are given
    if raw_path is not None:
        exposure = read_exposure_header(raw_path)
        if exposure.expnum != expnum:
            raise DesgwInputError(raw_path, 0, f"EXPNUM is {exposure.expnum}, expected {expnum}")
        if band is None:
            if not exposure.band:
                raise DesgwInputError(raw_path, 0, "no BAND/FILTER in the primary header: give "
                                      "the band")
            band = exposure.band
        elif exposure.band and exposure.band != band:
            raise DesgwInputError(raw_path, 0, f"the exposure's band is {exposure.band!r}, "
                                  f"not {band!r}")
        if nite is None:
            nite = exposure.nite
        elif int(nite) != exposure.nite:
            msg = (f"night {nite} given, the header's is {exposure.nite}: products go under "
                   f"{nite}")
            log.warning(msg)
            warnings.append(msg)
    assert band is not None and nite is not None
    nite = int(nite)
    outdir = exposure_dir(settings.out_root, cache, schema, nite, expnum)
    clean_stale_temp_files(outdir)  # left by writers that were killed

    if raw_path is not None and not jump_to_calib and not instcal:
        # opened once here: a truncated or corrupt raw file is one bad-input error of the
        # exposure, not one identical failure per CCD
        with RawExposure(raw_path) as raw:
            present_in_raw = set(raw.ccdnums)
    if ccds is None:
        if raw_path is not None and instcal:
            from desgw.io.instcal import instcal_ccdnums

            ccd_list = instcal_ccdnums(raw_path)
        elif raw_path is not None:
            if jump_to_calib:
                with RawExposure(raw_path) as raw:
                    present_in_raw = set(raw.ccdnums)
            present = present_in_raw
            ccd_list = [c for c in DEFAULT_CCDNUMS if c in present]
            absent = [c for c in DEFAULT_CCDNUMS if c not in present]
            if absent:
                log.info("exposure %d: %d default CCDs not in the raw file (%s)", expnum,
                         len(absent), ",".join(map(str, absent)))
        else:
            ccd_list = sorted(find_fullcats(outdir, expnum, rnum, pnum))
    else:
        ccd_list = sorted({int(c) for c in ccds})
        bad = [c for c in ccd_list if c not in SCIENCE_CCDNUMS]
        if bad:
            raise ValueError(f"not DECam science CCDNUMs: {bad}")
    report = SERunReport(expnum=expnum, band=band, nite=nite, rnum=rnum, pnum=pnum,
                         outdir=outdir, warnings=warnings)
    report.stage_seconds["setup"] = time.perf_counter() - t0

    # --- CCDs
    t0 = time.perf_counter()
    if jump_to_calib:
        for ccd in ccd_list:
            paths = ccd_product_paths(outdir, expnum, band, ccd, rnum, pnum)
            if not paths.fullcat.is_file():
                report.ccds[ccd] = CCDSummary(
                    ccdnum=ccd, ok=False, error=MissingFileError(
                        paths.fullcat, None, "no fullcat (-j needs processed CCDs)"))
            elif paths.qc.is_file():
                report.ccds[ccd] = load_ccd_summary(paths.qc, ccd)
            else:
                report.ccds[ccd] = CCDSummary(ccdnum=ccd, ok=True, skipped=True)
    elif instcal:
        from .se_instcal import InstCalTask, run_instcal_ccd_task

        cp_tasks = [InstCalTask(expnum=expnum, ccdnum=ccd, band=band, rnum=rnum, pnum=pnum,
                                image_path=str(raw_path), refcat_dir=str(settings.refcat_dir),
                                outdir=str(outdir), config=config, overwrite=overwrite)
                    for ccd in ccd_list]
        report.ccds.update(run_ccd_tasks(cp_tasks, settings=settings,
                                         single_process=single_process, workers=workers,
                                         runner=run_instcal_ccd_task))
    else:
        calib: CalibPaths = settings.calib_paths(band)
        if calib.linearity is None:
            log.warning("exposure %d: no linearity.fits(.fz) in %s: the linearity correction is "
                        "skipped", expnum, settings.calib_dir)
        tasks = []
        for ccd in ccd_list:
            task = CCDTask(expnum=expnum, ccdnum=ccd, band=band, rnum=rnum, pnum=pnum,
                           raw_path=str(raw_path), bias_path=str(calib.bias),
                           flat_path=str(calib.flat),
                           bpm_path=None if calib.bpm is None else str(calib.bpm),
                           refcat_dir=str(settings.refcat_dir), outdir=str(outdir),
                           config=config, overwrite=overwrite,
                           linearity_path=None if calib.linearity is None
                           else str(calib.linearity),
                           calib_cache_dir=str(settings.calib_cache_dir),
                           raw_cache_dir=str(settings.raw_cache_dir))
            done = finished_ccd_summary(task.paths, ccd, overwrite=overwrite)
            if done is not None:
                report.ccds[ccd] = done
                continue
            tasks.append(task)
        if report.ccds:
            log.info("exposure %d: CCDs %s already processed (use overwrite to redo)", expnum,
                     ",".join(map(str, sorted(report.ccds))))
        report.ccds.update(run_ccd_tasks(tasks, settings=settings,
                                         single_process=single_process, workers=workers))
        if config is not None:
            current = config.hash()
            stale = [c for c, s in report.ccds.items()
                     if s.skipped and s.config_hash not in (None, current)]
            if stale:
                msg = (f"CCDs {stale} kept products made with another SE configuration; "
                       "use overwrite to redo them")
                log.warning(msg)
                warnings.append(msg)
    # the exposure-level files ({expnum}.out, calibration, exposure QC, database) describe
    # every CCD whose products are on disk, not only this call's: add the others
    for ccd in sorted(set(find_fullcats(outdir, expnum, rnum, pnum)) - set(report.ccds)):
        paths = ccd_product_paths(outdir, expnum, band, ccd, rnum, pnum)
        if not paths.complete():
            continue
        try:
            report.ccds[ccd] = load_ccd_summary(paths.qc, ccd)
        except DesgwInputError as exc:
            log.warning("exposure %d CCD %d (from an earlier run) left out: %s", expnum, ccd,
                        exc)
    report.ccds = dict(sorted(report.ccds.items()))
    for ccd, s in report.ccds.items():
        if not s.ok:
            report.failed[ccd] = s.reason or "failed"
            if s.error_traceback:
                log.debug("CCD %d traceback:\n%s", ccd, s.error_traceback)
    report.stage_seconds["ccds"] = time.perf_counter() - t0

    # --- {expnum}.out
    t0 = time.perf_counter()
    corners = {c: s.corners for c, s in report.ccds.items() if s.ok and s.corners is not None}
    if corners:
        try:
            report.corners_path = write_corners_out(outdir / corners_out_name(expnum), expnum,
                                                    corners, band=band)
        except (OSError, ValueError) as exc:
            report.errors["corners"] = f"{type(exc).__name__}: {exc}"
    report.stage_seconds["corners"] = time.perf_counter() - t0

    # --- photometric calibration
    ok_ccds = [c for c, s in report.ccds.items() if s.ok]
    if run_calibration:
        t0 = time.perf_counter()
        if not ok_ccds:
            report.errors["expcalib"] = "no CCD with a catalog to calibrate"
        else:
            from desgw.refcat import mjd_to_jyear
            from desgw.se.process import SEConfig

            cfg = config if config is not None else SEConfig()
            try:
                report.expcalib = calibrate_exposure(
                    expnum, rnum, pnum, directory=outdir, refcat_dir=settings.refcat_dir,
                    ccds=ok_ccds, band=band, corners=corners or None,
                    epoch=None if exposure is None else mjd_to_jyear(exposure.mjd_obs),
                    mags_type=cfg.mags_type, sex_mag_zeropoint=cfg.sex_mag_zeropoint,
                    use_color_terms=cfg.use_color_terms, zp_method=cfg.zp_method,
                    zp_error_floor=cfg.zp_error_floor)
            except Exception as exc:  # noqa: BLE001 - recorded in the report, the run goes on
                report.errors["expcalib"] = f"{type(exc).__name__}: {exc}"
                log.error("photometric calibration of exposure %d failed: %s", expnum,
                          report.errors["expcalib"])
        report.stage_seconds["expcalib"] = time.perf_counter() - t0

    # --- exposure quality
    t0 = time.perf_counter()
    if any(s.ok and s.qc is not None for s in report.ccds.values()):
        try:
            q = exposure_quality(report, assess=not template_mode)
            report.exposure_qc = q
            doc = {"format": QC_FORMAT, "expnum": expnum, "band": band, "rnum": rnum,
                   "pnum": pnum, "nite": nite, "template_mode": bool(template_mode),
                   "ccds": ok_ccds, "failed_ccds": sorted(report.failed),
                   "calibrated_zeropoints": report.expcalib is not None,
                   "qc": qc_to_dict(q)}
            if report.expcalib is not None:
                doc["zeropoint"] = {"zp": report.expcalib.zp, "zp_err": report.expcalib.zp_err,
                                    "flagged": bool(report.expcalib.exposure_flagged)}
            report.qc_path = atomic_write_text(
                outdir / qc_exposure_name(expnum, band, rnum, pnum),
                json.dumps(json_safe(doc), indent=1, sort_keys=True) + "\n")
        except (ValueError, OSError) as exc:
            report.errors["qc"] = f"{type(exc).__name__}: {exc}"
            log.error("exposure quality of %d failed: %s", expnum, report.errors["qc"])
    report.stage_seconds["qc"] = time.perf_counter() - t0

    # --- database
    if settings.db_url is not None and exposure is not None:
        t0 = time.perf_counter()
        try:
            record_se_exposure(report, settings, exposure, raw_path)
        except Exception as exc:  # noqa: BLE001 - recorded in the report, the run goes on
            report.errors["db"] = f"{type(exc).__name__}: {exc}"
            log.error("database writes for exposure %d failed: %s", expnum, report.errors["db"])
        report.stage_seconds["db"] = time.perf_counter() - t0
    report.stage_seconds["total"] = time.perf_counter() - t_total
    return report
