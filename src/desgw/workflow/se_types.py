"""What the SE runner works on and reports: the per-CCD task, its summary and the exposure's
report (small picklable data classes), and the original ``-d``/``-m``/``-Y`` choices.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from desgw.errors import describe_error
from desgw.io.product_paths import CCDProductPaths, ccd_product_paths

__all__ = [
    "CACHES",
    "SCHEMAS",
    "SPECIAL_Y_WARNING",
    "CCDSummary",
    "CCDTask",
    "SERunReport",
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
    calib_cache_dir : str or None
        Root of the decoded calibration planes (:mod:`desgw.io.calib_cache`,
        ``Settings.calib_cache_dir``); None: the calibrations are decoded every time.
    raw_cache_dir : str or None
        Decoded raw CCDs shared with the other CCD tasks of the exposure (crosstalk sources,
        ``Settings.raw_cache_dir``); None: every raw CCD needed is decoded from the file.
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
    calib_cache_dir: str | None = None
    raw_cache_dir: str | None = None

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
    error : BaseException or None
        The exception of a failed CCD (picklable; :attr:`reason` gives its text).
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
    error: BaseException | None = None
    error_traceback: str | None = field(default=None, repr=False)
    qc: Any = None
    zp: float = math.nan
    zp_err: float = math.nan
    timings: dict[str, float] = field(default_factory=dict)
    corners: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    config_hash: str | None = None
    astrometric_rms_arcsec: float = math.nan
    n_objects: int = 0

    @property
    def reason(self) -> str | None:
        """``"ExceptionType: message"`` of a failed CCD (None when it did not fail)."""
        return None if self.error is None else describe_error(self.error)


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
