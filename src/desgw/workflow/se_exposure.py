"""Single-epoch processing of one exposure: the behaviour of the original ``SE_job_mod.sh``.

:func:`run_se_exposure` takes a raw DECam exposure through SE processing CCD by CCD and then
through the exposure-level steps:

1. **per CCD** (:func:`run_ccd_task`, a plain function of a picklable :class:`CCDTask` that a
   local loop, a process pool or a Dask worker can run alike): open the raw file, read the CCD
   and only the crosstalk source CCDs it needs, read its calibrations, query the Gaia store
   for the CCD's approximate footprint (from the header pointing and the DECam optical model,
   grown by ``SEConfig.refcat_margin_arcsec``) at the exposure epoch,
   :func:`desgw.se.process.process_ccd`, and write atomically, under ``exposure_dir(out_root, cache, schema, nite, expnum)``:

   - ``D{expnum:08d}_{band}_{ccd:02d}_r{R}p{P}_immask.fits.fz``: SCI, MSK, WGT with the fitted
     WCS and the SE configuration hash (``CFGHASH``) in the headers;
   - ``..._fullcat.fits``: the object catalog (SExtractor column names);
   - ``..._psfmodel.fits``: the PSF model;
   - ``..._qc.json``: CCD quality metrics, zeropoint, astrometry, corners and timings. It is
     written last and marks the CCD as complete: a CCD with all four files is skipped on a
     re-run (resume) unless ``overwrite``.

   A CCD that fails is reported with its error; the other CCDs finish.
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

Parallelism: without ``single_process`` the CCDs run in separate processes
(:class:`concurrent.futures.ProcessPoolExecutor`, forkserver start method where available,
else spawn; one worker per core by default). sep and most of the SE kernels hold the GIL, so
processes, not threads.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import multiprocessing
import os
import time
import traceback
import warnings
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from astropy.io import fits

from desgw import __version__
from desgw.io.atomic import atomic_write_path, atomic_write_text
from desgw.io.errors import DesgwInputError, MissingCCDError, MissingFileError
from desgw.io.naming import (
    corners_out_name,
    exposure_dir,
    fullcat_name,
    immask_name,
    parse_product_name,
    psf_model_name,
    qc_ccd_name,
    qc_exposure_name,
)

from .settings import CalibPaths, Settings

if TYPE_CHECKING:  # pragma: no cover
    from desgw.io.raw import ExposureHeader
    from desgw.se.photocal import ExposureZP
    from desgw.se.process import SEConfig
    from desgw.se.quality import QCMetrics, QCResult

__all__ = [
    "CACHES",
    "SCHEMAS",
    "SPECIAL_Y_WARNING",
    "CCDProductPaths",
    "CCDSummary",
    "CCDTask",
    "SERunReport",
    "approximate_ccd_corners",
    "calibrate_exposure",
    "ccd_product_paths",
    "find_exposure_dir",
    "load_ccd_summary",
    "run_ccd_task",
    "run_se_exposure",
]

log = logging.getLogger(__name__)

#: Destination caches (the original DESTCACHE).
CACHES: tuple[str, ...] = ("scratch", "persistent")
#: Database schemas / product trees (the original SCHEMA).
SCHEMAS: tuple[str, ...] = ("gw", "wsdiff")
#: The message given for the original ``-Y`` switch (see :func:`run_se_exposure`).
SPECIAL_Y_WARNING = (
    "-Y (the original's 'special Y4' switch) forced the DES Y4E1 calibration set (bias, bad-"
    "pixel mask, dome flat, sky templates, star flat of 2015-11) whatever the exposure date; "
    "desgw takes its calibrations from the calibration folder (--calib-dir), so -Y has no "
    "effect: point --calib-dir at the calibrations you want instead")

_QC_FORMAT = 1


# ----------------------------------------------------------------------------- data classes
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
        """True when every product exists."""
        return all(p.is_file() for p in self.all())


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


@dataclass(frozen=True)
class CCDTask:
    """Everything one CCD's SE processing needs; picklable (paths, numbers, a frozen config).

    Attributes
    ----------
    expnum, ccdnum : int
    band : str
        Band of the product names and of the flat.
    rnum, pnum : int
        Processing version (``r{R}p{P}``).
    raw_path : str
        Raw exposure file.
    bias_path, flat_path : str
        Calibration files.
    bpm_path : str or None
        Bad-pixel mask file (None: none).
    refcat_dir : str
        Gaia store.
    outdir : str
        Exposure product directory.
    config : SEConfig or None
        SE configuration (None: the defaults).
    overwrite : bool
        Redo a CCD whose products exist.
    linearity_path : str or None
        Linearity lookup-table file (None: no linearity correction).
    """

    expnum: int
    ccdnum: int
    band: str
    rnum: int
    pnum: int
    raw_path: str
    bias_path: str
    flat_path: str
    bpm_path: str | None
    refcat_dir: str
    outdir: str
    config: Any = None
    overwrite: bool = False
    linearity_path: str | None = None

    @property
    def paths(self) -> CCDProductPaths:
        """The CCD's product paths."""
        return ccd_product_paths(self.outdir, self.expnum, self.band, self.ccdnum, self.rnum,
                                 self.pnum)


@dataclass(frozen=True)
class CCDSummary:
    """Outcome of one CCD (small and picklable).

    Attributes
    ----------
    ccdnum : int
    ok : bool
        True when the products exist (made now or found by the resume check).
    skipped : bool
        True when the products were found and not remade.
    error : str or None
        ``"ExceptionType: message"`` of a failed CCD.
    error_traceback : str or None
        The failed CCD's traceback (for the log).
    qc : QCResult or None
        CCD quality (metrics, pass/fail and reasons).
    zp, zp_err : float
        The CCD's own zeropoint from :func:`process_ccd` (AB mag of 1 e- over the exposure;
        NaN when not measured).
    timings : dict of str to float
        Seconds per step: ``read_raw``, ``read_calib``, ``refcat``, the steps of
        :func:`process_ccd` as it names them, ``process`` (its total), ``write``, ``total``.
    corners : ((ra[4]), (dec[4])) or None
        Corners (deg) at the ``{expnum}.out`` pixels, from the fitted WCS.
    config_hash : str or None
        Hash of the SE configuration of the products.
    astrometric_rms_arcsec : float
        Astrometric rms of the fitted WCS (NaN when unknown).
    n_objects : int
        Catalog rows.
    """

    ccdnum: int
    ok: bool
    skipped: bool = False
    error: str | None = None
    error_traceback: str | None = field(default=None, repr=False)
    qc: Any = None
    zp: float = math.nan
    zp_err: float = math.nan
    timings: dict[str, float] = field(default_factory=dict)
    corners: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    config_hash: str | None = None
    astrometric_rms_arcsec: float = math.nan
    n_objects: int = 0


@dataclass
class SERunReport:
    """What :func:`run_se_exposure` did.

    Attributes
    ----------
    expnum : int
    band : str
    nite : int
    rnum, pnum : int
    outdir : Path
        Exposure product directory.
    ccds : dict of int to CCDSummary
        Every CCD asked for, by CCDNUM.
    failed : dict of int to str
        Failed CCDs and why.
    stage_seconds : dict of str to float
        Wall time of each stage: ``setup``, ``ccds``, ``corners``, ``expcalib``, ``qc``,
        ``db``, ``total`` (the stages that ran).
    expcalib : ExposureZP or None
        Photometric calibration (``-C``/``-j``), None when not run or failed.
    exposure_qc : QCResult or QCMetrics or None
        Exposure quality: a QCResult (assessed) or, in template mode, the combined QCMetrics.
    errors : dict of str to str
        Exposure-level stage failures (``"expcalib"``, ``"qc"``, ``"db"``, ``"corners"``).
    warnings : list of str
        Things the user should know (e.g. ``-Y``).
    corners_path, qc_path : Path or None
        The ``{expnum}.out`` and exposure QC files written.
    """

    expnum: int
    band: str
    nite: int
    rnum: int
    pnum: int
    outdir: Path
    ccds: dict[int, CCDSummary] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    expcalib: Any = None
    exposure_qc: Any = None
    errors: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    corners_path: Path | None = None
    qc_path: Path | None = None

    @property
    def ok(self) -> bool:
        """True when every CCD finished and no exposure-level stage failed."""
        return not self.failed and not self.errors

    @property
    def processed(self) -> tuple[int, ...]:
        """CCDs processed in this run."""
        return tuple(c for c, s in sorted(self.ccds.items()) if s.ok and not s.skipped)

    @property
    def skipped(self) -> tuple[int, ...]:
        """CCDs whose existing products were kept (resume)."""
        return tuple(c for c, s in sorted(self.ccds.items()) if s.skipped)

    @property
    def zeropoints(self) -> dict[int, float]:
        """Final calibrated zeropoint per CCD (AB mag of 1 e- over the exposure); {} without
        calibration."""
        if self.expcalib is None:
            return {}
        return {int(c): float(z.zp) for c, z in self.expcalib.ccds.items()}

    def lines(self) -> list[str]:
        """A human summary, one line per item."""
        n = len(self.ccds)
        out = [(f"SE exposure {self.expnum} band {self.band} nite {self.nite} "
                f"r{self.rnum}p{self.pnum}: {len(self.processed)} processed, "
                f"{len(self.skipped)} skipped (products exist), {len(self.failed)} failed "
                f"of {n} CCDs"),
               f"  products: {self.outdir}"]
        for ccd, why in sorted(self.failed.items()):
            out.append(f"  FAILED CCD {ccd:02d}: {why}")
        e = self.expcalib
        # one zeropoint per CCD, named by the file that holds it (AB mag of 1 e- in the
        # exposure): the calibration's MAG_ZERO when it ran, else the SE header's MAGZERO
        if e is not None:
            out.append(f"  zeropoints: MAG_ZERO of Zero_*.csv (clipped {e.exposure.method} of "
                       "each CCD's stars; AB mag of 1 e- in the exposure)")
        elif self.processed:
            out.append("  zeropoints: MAGZERO of each immask header and _qc.json (SE, "
                       "inverse-variance weighted mean of the CCD's Gaia stars; AB mag of 1 e- "
                       "in the exposure; -C writes the calibrated MAG_ZERO)")
        for ccd in self.processed:
            s = self.ccds[ccd]
            fwhm = _qc_metric(s.qc, "fwhm_arcsec")
            if e is not None and ccd in e.ccds:
                c = e.ccds[ccd]
                zp_text = f"MAG_ZERO {c.zp:.4f}" + (" (exposure's)" if c.replaced else "")
            else:
                zp_text = f"MAGZERO {s.zp:.4f}"
            out.append(f"  CCD {ccd:02d}: {s.n_objects} objects, FWHM {fwhm:.2f}\", astrometric "
                       f"rms {s.astrometric_rms_arcsec:.3f}\", {zp_text}, "
                       f"{s.timings.get('total', math.nan):.1f} s")
        if e is not None:
            flagged = " (FLAGGED)" if e.exposure_flagged else ""
            out.append(f"  exposure MAG_ZERO (allZP_*.csv): {e.zp:.4f} +- {e.zp_err:.4f} mag "
                       f"from {e.exposure.n_used} stars of all CCDs; {len(e.ccds)} "
                       f"CCDs{flagged}")
        q = self.exposure_qc
        if q is not None:
            metrics = getattr(q, "metrics", q)
            verdict = ("passed" if q.passed else "FAILED: " + "; ".join(q.reasons)) \
                if hasattr(q, "passed") else "not assessed (template mode)"
            out.append(f"  quality: FWHM {metrics.fwhm_arcsec:.2f}\", sky "
                       f"{metrics.sky_mag_arcsec2:.2f} mag/arcsec2, t_eff "
                       f"{metrics.teff.teff:.2f}; {verdict}")
        for stage, why in sorted(self.errors.items()):
            out.append(f"  ERROR in {stage}: {why}")
        for w in self.warnings:
            out.append(f"  warning: {w}")
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in self.stage_seconds.items())
        out.append(f"  wall time: {stages}")
        return out


def _qc_metric(qc: Any, name: str) -> float:
    metrics = getattr(qc, "metrics", None)
    value = getattr(metrics, name, math.nan) if metrics is not None else math.nan
    return float(value) if value is not None else math.nan


# ----------------------------------------------------------------------------- geometry
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

    from desgw.io.errors import HeaderError

    if ccd_header is None or "CTYPE1" not in ccd_header:
        raise HeaderError(None, ccdnum, "no telescope pointing (TELRA/TELDEC) and no CCD WCS: "
                          "cannot place the CCD on the sky", keyword="TELRA")
    wcs = WCS(ccd_header, naxis=2)
    nx, ny = 2048, 4096
    x = np.array([0.5, nx + 0.5, nx + 0.5, 0.5])  # 1-based outer corners of the data section
    y = np.array([0.5, 0.5, ny + 0.5, ny + 0.5])
    ra, dec = wcs.all_pix2world(x, y, 1)
    return np.asarray(ra, dtype=np.float64) % 360.0, np.asarray(dec, dtype=np.float64)


# ----------------------------------------------------------------------------- QC json
def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Mapping):
        return {str(k): _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_finite_or_none(v) for v in value]
    return value


def _nan_if_none(value: Any) -> float:
    return math.nan if value is None else float(value)


def _qc_to_dict(qc: Any) -> dict[str, Any] | None:
    if qc is None:
        return None
    if hasattr(qc, "metrics"):
        return {"passed": bool(qc.passed), "reasons": list(qc.reasons),
                "metrics": dataclasses.asdict(qc.metrics)}
    return {"passed": None, "reasons": [], "metrics": dataclasses.asdict(qc)}


def _metrics_from_dict(d: Mapping[str, Any]) -> QCMetrics:
    from desgw.se.quality import QCMetrics, TeffResult

    teff = TeffResult(**{k: _nan_if_none(v) for k, v in d["teff"].items()})
    values: dict[str, Any] = {}
    for f in dataclasses.fields(QCMetrics):
        if f.name == "teff":
            continue
        v = d[f.name]
        if f.name == "band":
            values[f.name] = str(v)
        elif f.name == "n_stars":
            values[f.name] = int(v)
        else:
            values[f.name] = _nan_if_none(v)
    return QCMetrics(teff=teff, **values)


def _qc_from_dict(d: Mapping[str, Any] | None) -> QCResult | None:
    if d is None:
        return None
    from desgw.se.quality import QCResult

    return QCResult(passed=bool(d["passed"]), reasons=tuple(d["reasons"]),
                    metrics=_metrics_from_dict(d["metrics"]))


def load_ccd_summary(qc_path: str | os.PathLike[str], ccdnum: int) -> CCDSummary:
    """Summary of a finished CCD from its ``_qc.json`` (used by the resume check).

    Raises
    ------
    DesgwInputError
        The file is not a desgw CCD QC file.
    """
    p = Path(qc_path)
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
        corners = d.get("corners")
        return CCDSummary(
            ccdnum=int(ccdnum), ok=True, skipped=True, qc=_qc_from_dict(d.get("qc")),
            zp=_nan_if_none(d.get("zeropoint", {}).get("zp")),
            zp_err=_nan_if_none(d.get("zeropoint", {}).get("zp_err")),
            timings={k: float(v) for k, v in d.get("timings", {}).items() if v is not None},
            corners=None if corners is None else (tuple(float(v) for v in corners["ra"]),
                                                  tuple(float(v) for v in corners["dec"])),
            config_hash=d.get("config_hash"),
            astrometric_rms_arcsec=_nan_if_none(d.get("astrometry", {}).get("rms_arcsec")),
            n_objects=int(d.get("n_objects", 0)),
        )
    except FileNotFoundError:
        raise MissingFileError(p, None, "CCD QC file not found") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DesgwInputError(p, None, f"not a desgw CCD QC file ({type(exc).__name__}: "
                              f"{exc})") from None


# ----------------------------------------------------------------------------- one CCD
def _read_inputs(task: CCDTask, timings: dict[str, float], margin_arcsec: float) -> Any:
    """Read everything process_ccd needs for the task's CCD (returns CCDInputs)."""
    from desgw.io.calib import CalibFile, read_linearity
    from desgw.io.raw import RawExposure
    from desgw.refcat import RefCatStore, mjd_to_jyear
    from desgw.se.crosstalk import needed_sources
    from desgw.se.process import CCDInputs

    t0 = time.perf_counter()
    with RawExposure(task.raw_path) as raw:
        exposure = raw.header
        ccd = raw.read_ccd(task.ccdnum)
        sources: dict[int, Any] = {}
        present = set(raw.ccdnums)
        missing: list[int] = []
        for src in sorted({c for c, _ in needed_sources(task.ccdnum)}):
            if src == task.ccdnum:
                sources[src] = ccd
            elif src in present:
                sources[src] = raw.read_ccd(src)
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
    with CalibFile(task.bias_path, "bias") as f:
        bias = f.read(task.ccdnum)
    with CalibFile(task.flat_path, "flat") as f:
        flat = f.read(task.ccdnum)
    bpm = None
    if task.bpm_path is not None:
        with CalibFile(task.bpm_path, "bpm") as f:
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
    return CCDInputs(raw=ccd, crosstalk_sources=sources, bias=bias, flat=flat, bpm=bpm,
                     refcat=refcat, exposure=exposure, linearity=linearity)


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


def _write_products(task: CCDTask, result: Any, config_hash: str, timings: dict[str, float],
                    t_start: float) -> CCDSummary:
    from desgw.io.products import write_fits_table, write_immask

    paths = task.paths
    t0 = time.perf_counter()
    header = _product_header(task, config_hash, getattr(result, "header", None))
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
    hdul = result.psf.to_fits_hdul()
    for key in ("EXPNUM", "CCDNUM", "BAND", "CFGHASH"):
        hdul[0].header[key] = header[key]
    with atomic_write_path(paths.psfmodel) as tmp:
        hdul.writeto(tmp)

    zp = getattr(result, "zeropoint", None)
    zp_value = float(zp.zp) if zp is not None else math.nan
    zp_err = float(zp.zp_err) if zp is not None else math.nan
    astro = getattr(result, "astrometry", None)
    astro_rms = float(getattr(astro, "rms_arcsec", math.nan)) if astro is not None else math.nan
    ra, dec = result.corners
    corners = (tuple(float(v) % 360.0 for v in ra), tuple(float(v) for v in dec))
    timings["write"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    doc = {
        "format": _QC_FORMAT, "expnum": task.expnum, "ccdnum": task.ccdnum, "band": task.band,
        "rnum": task.rnum, "pnum": task.pnum, "config_hash": config_hash,
        "desgw_version": __version__, "n_objects": len(result.catalog),
        "qc": _qc_to_dict(result.qc),
        "degraded": dict(getattr(result, "flags", {}) or {}),
        "zeropoint": {"zp": zp_value, "zp_err": zp_err,
                      "n_used": None if zp is None else int(getattr(zp, "n_used", 0)),
                      "rms": None if zp is None else float(getattr(zp, "rms", math.nan))},
        "astrometry": {"rms_arcsec": astro_rms,
                       "n_matched": None if astro is None else int(astro.n_matched),
                       "n_used": None if astro is None else int(astro.n_used),
                       # fitted minus input (header / CP) WCS at the CCD centre, RA*cos(Dec)
                       "offset_ra_arcsec": None if astro is None
                       else float(astro.offset_ra_arcsec),
                       "offset_dec_arcsec": None if astro is None
                       else float(astro.offset_dec_arcsec)},
        "corners": {"ra": list(corners[0]), "dec": list(corners[1])},
        "timings": dict(timings),
        "products": {"immask": paths.immask.name, "fullcat": paths.fullcat.name,
                     "psfmodel": paths.psfmodel.name},
    }
    atomic_write_text(paths.qc, json.dumps(_finite_or_none(doc), indent=1, sort_keys=True)
                      + "\n")
    return CCDSummary(ccdnum=task.ccdnum, ok=True, skipped=False, qc=result.qc, zp=zp_value,
                      zp_err=zp_err, timings=dict(timings), corners=corners,
                      config_hash=config_hash, astrometric_rms_arcsec=astro_rms,
                      n_objects=len(result.catalog))


def run_ccd_task(task: CCDTask) -> CCDSummary:
    """SE processing of one CCD, products written atomically; never raises for a CCD failure.

    A CCD whose four products exist is not redone unless ``task.overwrite`` (its summary is
    read from its ``_qc.json``).

    Parameters
    ----------
    task : CCDTask

    Returns
    -------
    CCDSummary
        ``ok`` False with the error (``"Type: message"``) when anything failed; no product
        is left half-written.
    """
    paths = task.paths
    if not task.overwrite and paths.complete():
        try:
            return load_ccd_summary(paths.qc, task.ccdnum)
        except DesgwInputError as exc:
            log.warning("CCD %d: %s; processing it again", task.ccdnum, exc)
    from desgw.se.process import SEConfig, process_ccd

    config = task.config if task.config is not None else SEConfig()
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    try:
        inputs = _read_inputs(task, timings, float(config.refcat_margin_arcsec))
        t0 = time.perf_counter()
        result = process_ccd(inputs, config=config)
        timings["process"] = time.perf_counter() - t0
        for key, value in dict(getattr(result, "timings", {}) or {}).items():
            timings.setdefault(str(key), float(value))
        del inputs
        return _write_products(task, result, config.hash(), timings, t_start)
    except Exception as exc:  # noqa: BLE001 - a failed CCD must not stop the others
        text = f"{type(exc).__name__}: {exc}"
        log.error("CCD %d of exposure %d failed: %s", task.ccdnum, task.expnum, text)
        return CCDSummary(ccdnum=task.ccdnum, ok=False, error=text,
                          error_traceback=traceback.format_exc(),
                          timings={**timings, "total": time.perf_counter() - t_start})


# ----------------------------------------------------------------------------- the pool
def _mp_context() -> multiprocessing.context.BaseContext:
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        # workers forked from a server that has imported the SE code start without the ~1.5 s
        # of imports each (numba still loads its cached kernels at each worker's first CCD)
        ctx.set_forkserver_preload(["desgw.workflow.se_exposure", "desgw.se.process"])
        return ctx
    return multiprocessing.get_context("spawn")


def _run_tasks(tasks: Sequence[Any], *, single_process: bool, workers: int | None,
               runner: Any = None) -> dict[int, CCDSummary]:
    run = run_ccd_task if runner is None else runner
    if not tasks:
        return {}
    if single_process or len(tasks) == 1 and workers in (None, 1):
        return {t.ccdnum: run(t) for t in tasks}
    if workers is None:  # the cores this process may use (a batch slot may grant fewer)
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else (os.cpu_count() or 1)
    n = workers
    n = max(1, min(int(n), len(tasks)))
    out: dict[int, CCDSummary] = {}
    with ProcessPoolExecutor(max_workers=n, mp_context=_mp_context()) as pool:
        futures: dict[Future[CCDSummary], Any] = {pool.submit(run, t): t for t in tasks}
        for fut, task in futures.items():
            try:
                out[task.ccdnum] = fut.result()
            except BrokenProcessPool as exc:
                text = (f"BrokenProcessPool: a worker process died (out of memory or killed) "
                        f"while CCDs were running: {exc}")
                out[task.ccdnum] = CCDSummary(ccdnum=task.ccdnum, ok=False, error=text)
            except Exception as exc:  # noqa: BLE001 - e.g. a result that cannot be unpickled
                out[task.ccdnum] = CCDSummary(ccdnum=task.ccdnum, ok=False,
                                              error=f"{type(exc).__name__}: {exc}",
                                              error_traceback=traceback.format_exc())
    return out


# ----------------------------------------------------------------------------- calibration
def _find_fullcats(directory: Path, expnum: int, rnum: int, pnum: int) -> dict[int, Path]:
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
                  if d.is_dir() and _find_fullcats(d, expnum, rnum, pnum))
    if not hits:
        raise MissingFileError(root, None, f"no product directory of exposure {expnum} with "
                               f"r{rnum}p{pnum} fullcats (looked in */*/exp/*/{expnum})")
    if len(hits) > 1:
        raise DesgwInputError(root, None, f"exposure {expnum} r{rnum}p{pnum} has products in "
                              f"several directories, name one: {[str(h) for h in hits]}")
    return hits[0]


def calibrate_exposure(expnum: int, rnum: int, pnum: int, *, directory: str | os.PathLike[str],
                       refcat_dir: str | os.PathLike[str], ccds: Iterable[int] | None = None,
                       band: str | None = None, corners: Mapping[int, Any] | None = None,
                       epoch: float | None = None, mags_type: str = "mag_psf",
                       sex_mag_zeropoint: float = 25.0, use_color_terms: bool = True,
                       verbose: int = 0, debug: bool = False) -> ExposureZP:
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
    from desgw.io.products import read_fits_table
    from desgw.refcat import RefCatStore, mjd_to_jyear
    from desgw.se.expcalib import run_expcalib

    from .templates import read_corners_out

    d = Path(directory)
    found = _find_fullcats(d, expnum, rnum, pnum)
    if not found:
        raise MissingFileError(d, None, f"no D{int(expnum):08d}_*_r{rnum}p{pnum}_fullcat.fits")
    wanted = sorted(found) if ccds is None else sorted(int(c) for c in ccds)
    missing = [c for c in wanted if c not in found]
    if missing:
        raise MissingCCDError(d, None, f"no fullcat for CCD(s) {missing} of exposure {expnum} "
                              f"r{rnum}p{pnum}", present=tuple(sorted(found)))
    if band is None:
        band = parse_product_name(found[wanted[0]]).band
    catalogs = {c: read_fits_table(found[c]) for c in wanted}
    if epoch is None:
        mjds = [float(t.meta["MJD-OBS"]) for t in catalogs.values() if "MJD-OBS" in t.meta]
        epoch = mjd_to_jyear(mjds[0]) if mjds else None
    if corners is None and (d / corners_out_name(expnum)).is_file():
        corners = read_corners_out(d / corners_out_name(expnum)).corners
    ccd_corners = None if corners is None else {c: corners[c] for c in wanted if c in corners}
    return run_expcalib(expnum, rnum, pnum, wanted, catalogs=catalogs,
                        refcat=RefCatStore(refcat_dir), band=str(band), mags_type=mags_type,
                        sex_mag_zeropoint=sex_mag_zeropoint, outdir=d, verbose=verbose,
                        debug=debug, use_color_terms=use_color_terms, corners=ccd_corners,
                        epoch=epoch)


# ----------------------------------------------------------------------------- exposure QC
def _exposure_quality(report: SERunReport, *, assess: bool) -> Any:
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


# ----------------------------------------------------------------------------- database
def _record_in_db(report: SERunReport, settings: Settings, exposure: ExposureHeader,
                  raw_path: Path | None) -> None:
    from desgw.db import (
        CCDProduct,
        Zeropoint,
        connect,
        record_ccd_product,
        record_zeropoints,
        register_exposure,
    )

    paths_of = {c: ccd_product_paths(report.outdir, report.expnum, report.band, c, report.rnum,
                                     report.pnum) for c in report.ccds}
    with connect(settings.db_url) as db:
        register_exposure(db, exposure, raw_path)
        for ccd, s in sorted(report.ccds.items()):
            m = getattr(s.qc, "metrics", None)

            def opt(name: str, m: Any = m) -> float | None:
                v = getattr(m, name, None) if m is not None else None
                return float(v) if v is not None and math.isfinite(float(v)) else None

            zp_s = opt("zp_per_second")
            if ccd in report.zeropoints and m is not None and m.exptime > 0:
                zp_s = report.zeropoints[ccd] - 2.5 * math.log10(m.exptime)
            record_ccd_product(db, CCDProduct(
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
                (s.error or "failed",)))
        if report.expcalib is not None:
            e = report.expcalib
            rows = []
            if math.isfinite(e.zp) and math.isfinite(e.zp_err):
                rows.append(Zeropoint(expnum=report.expnum, ccdnum=0, rnum=report.rnum,
                                      pnum=report.pnum, zp=e.zp, zp_err=e.zp_err,
                                      n_stars=int(e.exposure.n_used),
                                      flag=int(bool(e.exposure_flagged))))
            for ccd, z in sorted(e.ccds.items()):
                if not (math.isfinite(z.zp) and math.isfinite(z.zp_err)):
                    continue
                flag = (1 if z.replaced else 0) | (2 if z.outlier else 0) | \
                    (4 if z.exposure_flagged else 0)
                rows.append(Zeropoint(expnum=report.expnum, ccdnum=int(ccd), rnum=report.rnum,
                                      pnum=report.pnum, zp=float(z.zp), zp_err=float(z.zp_err),
                                      n_stars=int(z.measured.n_used), flag=flag))
            record_zeropoints(db, rows)


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
        ``-s``: process the CCDs one after the other in this process.
    overwrite : bool
        ``-O``: redo CCDs whose products exist.
    template_mode : bool
        ``-t``: the exposure is a template: the exposure quality is measured and written but
        not assessed (the verification step is skipped).
    special_y : bool
        ``-Y``: accepted for compatibility and without effect (:data:`SPECIAL_Y_WARNING`).
    workers : int, optional
        Worker processes (default one per core, at most one per CCD).
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

    if ccds is None:
        if raw_path is not None and instcal:
            from desgw.io.instcal import instcal_ccdnums

            ccd_list = instcal_ccdnums(raw_path)
        elif raw_path is not None:
            with RawExposure(raw_path) as raw:
                present = set(raw.ccdnums)
            ccd_list = [c for c in DEFAULT_CCDNUMS if c in present]
            absent = [c for c in DEFAULT_CCDNUMS if c not in present]
            if absent:
                log.info("exposure %d: %d default CCDs not in the raw file (%s)", expnum,
                         len(absent), ",".join(map(str, absent)))
        else:
            ccd_list = sorted(_find_fullcats(outdir, expnum, rnum, pnum))
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
                report.ccds[ccd] = CCDSummary(ccdnum=ccd, ok=False,
                                              error=f"MissingFileError: {paths.fullcat}: no "
                                              "fullcat (-j needs processed CCDs)")
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
        report.ccds.update(_run_tasks(cp_tasks, single_process=single_process, workers=workers,
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
                           else str(calib.linearity))
            if not overwrite and task.paths.complete():
                try:
                    report.ccds[ccd] = load_ccd_summary(task.paths.qc, ccd)
                    continue
                except DesgwInputError as exc:
                    log.warning("CCD %d: %s; processing it again", ccd, exc)
            tasks.append(task)
        if report.ccds:
            log.info("exposure %d: CCDs %s already processed (use overwrite to redo)", expnum,
                     ",".join(map(str, sorted(report.ccds))))
        report.ccds.update(_run_tasks(tasks, single_process=single_process, workers=workers))
        if config is not None:
            current = config.hash()
            stale = [c for c, s in report.ccds.items()
                     if s.skipped and s.config_hash not in (None, current)]
            if stale:
                msg = (f"CCDs {stale} kept products made with another SE configuration; "
                       "use overwrite to redo them")
                log.warning(msg)
                warnings.append(msg)
    report.ccds = dict(sorted(report.ccds.items()))
    for ccd, s in report.ccds.items():
        if not s.ok:
            report.failed[ccd] = s.error or "failed"
            if s.error_traceback:
                log.debug("CCD %d traceback:\n%s", ccd, s.error_traceback)
    report.stage_seconds["ccds"] = time.perf_counter() - t0

    # --- {expnum}.out
    t0 = time.perf_counter()
    corners = {c: s.corners for c, s in report.ccds.items() if s.ok and s.corners is not None}
    if corners:
        from .templates import write_corners_out

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
                    use_color_terms=cfg.use_color_terms)
            except Exception as exc:  # noqa: BLE001 - recorded in the report, the run goes on
                report.errors["expcalib"] = f"{type(exc).__name__}: {exc}"
                log.error("photometric calibration of exposure %d failed: %s", expnum,
                          report.errors["expcalib"])
        report.stage_seconds["expcalib"] = time.perf_counter() - t0

    # --- exposure quality
    t0 = time.perf_counter()
    if any(s.ok and s.qc is not None for s in report.ccds.values()):
        try:
            q = _exposure_quality(report, assess=not template_mode)
            report.exposure_qc = q
            doc = {"format": _QC_FORMAT, "expnum": expnum, "band": band, "rnum": rnum,
                   "pnum": pnum, "nite": nite, "template_mode": bool(template_mode),
                   "ccds": ok_ccds, "failed_ccds": sorted(report.failed),
                   "calibrated_zeropoints": report.expcalib is not None,
                   "qc": _qc_to_dict(q)}
            if report.expcalib is not None:
                doc["zeropoint"] = {"zp": report.expcalib.zp, "zp_err": report.expcalib.zp_err,
                                    "flagged": bool(report.expcalib.exposure_flagged)}
            report.qc_path = atomic_write_text(
                outdir / qc_exposure_name(expnum, band, rnum, pnum),
                json.dumps(_finite_or_none(doc), indent=1, sort_keys=True) + "\n")
        except (ValueError, OSError) as exc:
            report.errors["qc"] = f"{type(exc).__name__}: {exc}"
            log.error("exposure quality of %d failed: %s", expnum, report.errors["qc"])
    report.stage_seconds["qc"] = time.perf_counter() - t0

    # --- database
    if settings.db_url is not None and exposure is not None:
        t0 = time.perf_counter()
        try:
            _record_in_db(report, settings, exposure, raw_path)
        except Exception as exc:  # noqa: BLE001 - recorded in the report, the run goes on
            report.errors["db"] = f"{type(exc).__name__}: {exc}"
            log.error("database writes for exposure %d failed: %s", expnum, report.errors["db"])
        report.stage_seconds["db"] = time.perf_counter() - t0
    report.stage_seconds["total"] = time.perf_counter() - t_total
    return report
