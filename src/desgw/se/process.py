"""Single-epoch processing of one DECam CCD: raw pixels -> calibrated image, catalog, PSF, WCS, ZP, QC.

:func:`process_ccd` composes the steps of :mod:`desgw.se`, in this order, without any I/O
(the exposure-level runner reads the inputs and writes the products):

1. **Band check**: the exposure's ``FILTER`` (first token) must be one of g r i z Y and agree
   with ``BAND`` when present, else :class:`desgw.errors.HeaderError` naming the file, HDU 0
   and the keyword. Missing calibrations required by ``SEConfig.required_calibrations`` raise
   :class:`desgw.errors.MissingFileError`; non-finite raw pixels raise
   :class:`desgw.se.detrend.DetrendError`.
2. **Crosstalk** (:func:`desgw.se.crosstalk.correct_crosstalk`) from the source CCDs given.
3. **Detrend** (overscan, linearity when ``CCDInputs.linearity`` is given, gain, bias, flat, BPM,
   edge, weight; :func:`desgw.se.detrend.detrend_ccd`). Header ``LINCOR`` records whether the
   linearity correction was applied.
4. **Bleed trails** and bright-star halos around saturated pixels
   (:func:`desgw.se.saturation.mask_bleed_trails`); TRAIL/EDGEBLEED pixels get weight 0.
5. **First background + detection pass** (background with unusable pixels masked, detection
   at the base settings) and a first **seeing** estimate from its bright point sources
   (:func:`desgw.se.process_steps.estimate_seeing`).
6. **Cosmic rays** (L.A.Cosmic with ``objlim`` from that seeing,
   :func:`desgw.se.process_steps.cosmics_objlim`), the mask grown by ``cosmic_grow`` pixels;
   CRAY pixels get weight 0. Then **trails** of satellites and aircraft
   (:func:`desgw.se.trails.find_trails`): STREAK, weight 0.
7. **Second background** with the first pass's detections (and the cosmic rays) masked, each
   out to where its wing falls below 0.1 sigma (:class:`desgw.se.background.ObjectWings`).
8. **Detection** with the filter matched to the seeing and a threshold on the filtered image's
   signal-to-noise (:func:`desgw.se.process_steps.detect_config_for_seeing`).
9. **PSF**: candidates (bright, isolated, point-like, below 80 % of saturation) and the fit
   with a stamp of at least 6 FWHM, other detections' segments excluded from the star stamps
   and their light subtracted (:func:`desgw.se.psf.fit_psf`).
10. **Measurement** (SExtractor columns; detections that are leftovers of partly flagged
    cosmic rays are dropped and masked; magnitudes ``MAG = sex_mag_zeropoint - 2.5 log10(FLUX)``
    with FLUX in electrons over the exposure).
11. **Astrometry** against the Gaia table given (:func:`desgw.se.astrometry.solve_wcs`), from
    the initial TAN-SIP of :func:`desgw.se.process_wcs.initial_wcs_for` (instrument optics at
    the header pointing); sources with saturated, truncated or unusable pixels are left out
    of the fit. ``ALPHAWIN_J2000``/``DELTAWIN_J2000`` and ``FWHM_WORLD`` are then recomputed
    with the fitted WCS.
12. **Zeropoint** of this CCD against Gaia, with colour terms by default
    (:func:`desgw.se.expcalib.measure_ccd_zeropoint`); ``None`` with the reason in the QC
    reasons when it cannot be measured (too few stars, no Gaia transform for the band).
13. **QC** metrics and pass/fail (:mod:`desgw.se.quality`); a failed QC is not an exception.

Errors of the steps (picklable :class:`desgw.errors.DesgwError` subclasses:
``DetrendError``, ``MissingCCDError``, ``PSFFitError``, ``AstrometryError`` ...) propagate, so
the runner can record them per CCD.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
from astropy import units as u
from astropy.table import Table
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from desgw.errors import HeaderError, MissingFileError
from desgw.refcat.quality import GaiaQualityCuts, gaia_quality_mask
from desgw.refcat.transforms import TransformUnavailableError
from desgw.se import maskbits
from desgw.se.astrometry import (
    AstrometryConfig,
    AstrometryError,
    AstrometryResult,
    solve_wcs,
)
from desgw.se.background import Background, BackgroundConfig, ObjectWings, estimate_background
from desgw.se.cosmics import CosmicsConfig, find_cosmic_rays
from desgw.se.crosstalk import correct_crosstalk
from desgw.se.detect import DetectConfig, detect_sources
from desgw.se.detrend import DetrendConfig, DetrendError, detrend_ccd
from desgw.se.expcalib import measure_ccd_zeropoint
from desgw.se.mask_grow import flag_pixels, grow_mask
from desgw.se.measure import MeasureConfig, flux_to_mag, measure_sources
from desgw.se.measure_kernels import bad_from_mask
from desgw.se.photocal import Method as ZPMethod
from desgw.se.photocal import ZeropointResult
from desgw.se.process_header import ccd_product_header
from desgw.se.process_steps import (
    cosmic_ray_residuals,
    cosmics_objlim,
    detect_config_for_seeing,
    estimate_seeing,
    mean_sky_background,
    psf_aperture_correction,
    psf_config_for_seeing,
    segment_pixels,
    weight_rescale_factor,
)
from desgw.se.process_wcs import ccd_corners, initial_wcs_for
from desgw.se.psf import PSFConfig, PSFModel, fit_psf, select_psf_candidates
from desgw.se.psf_columns import psf_fwhm_at
from desgw.se.quality import (
    QC_BANDS,
    QCResult,
    QCThresholds,
    assess_quality,
    compute_qc_metrics,
)
from desgw.se.saturation import BleedConfig, mask_bleed_trails
from desgw.se.sparse import fit_psf_sparse, refine_wcs_shift, sparse_zeropoint
from desgw.se.trails import TrailConfig, find_trails

if TYPE_CHECKING:  # pragma: no cover
    from astropy.io import fits

    from desgw.io.calib import LinearityTable
    from desgw.io.raw import ExposureHeader, RawCCD

__all__ = ["CCDInputs", "CCDResult", "CalibratedCCD", "SEConfig", "check_band", "initial_wcs_for",
           "process_ccd", "process_detrended"]

log = logging.getLogger(__name__)

#: Least isophotal S/N of the first pass's stars (:func:`desgw.se.psf.select_psf_candidates`'s
#: ``min_snr``, which :func:`desgw.se.process_steps.estimate_seeing` uses): the first pass
#: measures windowed centroids only from there.
_SEEING_MIN_SNR = float(inspect.signature(select_psf_candidates).parameters["min_snr"].default)

#: Calibration images :func:`process_ccd` can require.
CALIBRATION_KINDS: tuple[str, ...] = ("bias", "flat", "bpm")


@dataclass(frozen=True)
class SEConfig:
    """All settings of :func:`process_ccd` (one field per step, plus the composition's own).

    Attributes
    ----------
    detrend, bleed, cosmics, background, detect, psf, measure, astrometry
        The step settings. ``cosmics.objlim = None`` takes it from the seeing
        (:func:`desgw.se.process_steps.cosmics_objlim`). ``detect`` is the first detection
        pass and the base of the second (whose filter and threshold are set from the seeing);
        ``psf.stamp`` is a minimum (the stamp is widened to ``psf_stamp_fwhm`` FWHM);
        ``measure.zeropoint`` is replaced by ``sex_mag_zeropoint``.
    sex_mag_zeropoint : float
        Zeropoint of the catalog's MAG_* columns (SExtractor's MAG_ZEROPOINT; the original 25).
    mags_type : {"mag_psf", "mag_auto", "mag_aper_8"}
        Flux calibrated by the zeropoint.
    use_color_terms : bool
        Gaia -> DES colour terms (True) or Gaia G for every band, as the original (False).
    refcat_margin_arcsec : float
        Margin around the CCD footprint for the runner's reference-catalog query (not used by
        :func:`process_ccd`, which takes the table it is given; part of the hash).
    zp_method, zp_error_floor
        Estimator of the CCD zeropoint (:func:`desgw.se.photocal.zeropoint`): the inverse-variance
        weighted mean with ``zp_error_floor`` (mag) added in quadrature to each star's error
        (default), or the original's plain ``"mean"``. On the simulator (30-50 stars per CCD)
        the weighted mean is within 2 mmag of the truth where the mean was off by up to 7 mmag
        on a 1.6" CCD. Each star's error holds its flux error and its reference magnitude's
        (Gaia's G, BP and RP errors through the colour terms), so the floor stands for what
        neither states, mainly the intrinsic scatter of stars about the Gaia -> DES
        transformation (~1 %): the best floor is near that scatter (synthetic fields with
        0.5, 1 and 2 % scatter: best floors 0.3-0.5, 0.5-1, 1.5-2 %), and a factor of two
        either way costs under 10 % in zeropoint scatter. On the 18 CCDs of the issue-13
        audit nights (sparse and dense, Moffat and Kolmogorov) the zeropoint error went
        rms 4.3 -> 3.3 mmag with the reference errors and Gaia's variables left out.
    required_calibrations : tuple of str
        Calibrations (``"bias"``, ``"flat"``, ``"bpm"``) whose absence is an error.
    detect_snr : float
        Detection threshold of the second pass: signal-to-noise of the image filtered with a
        Gaussian of the seeing FWHM, the same rule at every seeing
        (:func:`desgw.se.process_steps.detect_config_for_seeing`).
    detect_minarea : int
        Connected pixels above that threshold.
    psf_stamp_fwhm : float
        Least PSF stamp width in units of the FWHM.
    psf_max_peak_fraction : float
        PSF stars must peak below this fraction of the lowest amplifier saturation level.
    psf_aperture_correction : bool
        Scale ``FLUX_PSF``/``FLUXERR_PSF`` (and ``MAG_PSF``) from the flux inside the PSF stamp
        to the total flux (:func:`desgw.se.process_steps.psf_aperture_correction`, header
        ``PSFAPCOR``), so that zeropoints from PSF fluxes are total-flux zeropoints (they
        scale images correctly whatever the seeing). ``FLUX_PSF / PSFAPCOR`` is the stamp flux
        SExtractor + PSFEx would give.
    mask_trails : bool
        Find satellite and aircraft trails after the cosmic rays and mask them (``STREAK``,
        weight 0; :func:`desgw.se.trails.find_trails` with ``trails``; header ``NTRAIL``).
    trails : TrailConfig
    cosmic_grow : int
        Pixels by which the cosmic-ray mask is grown (8-connected): the faint ends of tracks
        that L.A.Cosmic leaves unflagged otherwise become detections next to the mask.
    drop_cosmic_residuals : bool
        Remove detections that touch cosmic-ray pixels and are sharper than the PSF
        (:func:`desgw.se.process_steps.cosmic_ray_residuals`); their pixels get CRAY.
    rescale_weight : bool
        Scale the weight map to the background noise measured on the image, as SExtractor does
        with ``MAP_WEIGHT`` (:func:`desgw.se.process_steps.weight_rescale_factor`, header
        ``WGTSCALE``).
    mean_sky : bool
        After the PSF fit, replace the sky by the mean of the image less the PSF models of all
        detections (:func:`desgw.se.process_steps.mean_sky_background`) and refit the PSF on
        it: the clipped mode of the sky between masked objects holds the wings of bright stars
        (+0.7 / +2.6 e-/px with 300 / 1,200 bright Moffat stars per 1024 x 1024 px,
        tests/se/test_background_residual.py) and lies below the mean of unresolved light.
        Off by default (a second PSF fit and +0.3 ms of CPU per object; not yet run through
        the simulated-night tests): on crowded galsim fields of ~8,400-9,400 objects per CCD
        (tests/se/crowded_synth.py) it took the zeropoint error from +15.9 to +10.1 mmag
        (Moffat beta 2.5; the rest is the PSF model's wings, aperture correction +0.65 %) and
        from +5.2 to -1.4 mmag (Kolmogorov); on a sparse field (~1,000 per CCD) +6.9 -> +7.2.
    psf_pedestal : bool
        Fit the PSF with a level common to the PSF stars' stamps
        (:attr:`desgw.se.psf.PSFConfig.fit_pedestal`, header ``PSFPED``), so that the sky
        under the PSF stars, after their neighbours' models are subtracted, does not enter the
        model's normalisation. The photometry's sky is not changed (subtracting the pedestal
        from it too overshot: 768792/28 FLUX_PSF / true 1.0038). On the simulated crowded CCD
        768792/28 (Moffat beta 2.5, 1.57", 11,600 objects) the pedestal is -2.05 +- 0.13
        e-/px and bright isolated FLUX_PSF / true goes 0.9941 -> 1.0017, the zeropoint error
        -4.85 -> +3.41 mmag (bench/bench_psf_pedestal.json); on sparse CCDs it is not
        significant and nothing changes.
    qc : QCThresholds
        Pass/fail limits of the CCD's quality check.
    gaia_quality : GaiaQualityCuts
        Cuts on the Gaia rows used for astrometry and the zeropoint
        (:func:`desgw.refcat.quality.gaia_quality_mask`; a cut whose column the store lacks is
        not applied).
    first_pass_deblend : bool
        Deblend and clean the first detection pass as ``detect`` says. False (default): the
        first pass, which only yields the seeing (bright isolated stars) and the background's
        object mask, runs without deblending or cleaning. Its footprints are the same pixels
        (a superset by the 0.1-0.2 % that cleaning drops), blends of stars fall off the
        stellar locus or the isolation cut either way, and on a 4000-object CCD the pass costs
        ~0.3 s instead of ~1.0 s (sep's 32-level deblending of every crowded footprint).
    sparse_fallbacks : bool
        With too few stars for a full model, degrade instead of failing
        (:mod:`desgw.se.sparse`): a constant or analytic PSF, a shift-only WCS refinement, a
        zeropoint from 1-2 stars; each sets a flag with its reason (``CCDResult.flags``,
        header ``DEGRADED``) and fails the QC. False: raise as before.
    """

    detrend: DetrendConfig = DetrendConfig()
    bleed: BleedConfig = BleedConfig()
    cosmics: CosmicsConfig = CosmicsConfig()
    background: BackgroundConfig = BackgroundConfig()
    detect: DetectConfig = DetectConfig()
    psf: PSFConfig = PSFConfig()
    measure: MeasureConfig = MeasureConfig()
    astrometry: AstrometryConfig = AstrometryConfig()
    sex_mag_zeropoint: float = 25.0
    mags_type: str = "mag_psf"
    use_color_terms: bool = True
    refcat_margin_arcsec: float = 30.0
    zp_method: ZPMethod = "weighted"
    zp_error_floor: float = 0.01
    required_calibrations: tuple[str, ...] = ("bias", "flat")
    detect_snr: float = 5.0
    detect_minarea: int = 3
    psf_stamp_fwhm: float = 6.0
    psf_max_peak_fraction: float = 0.8
    psf_aperture_correction: bool = True
    cosmic_grow: int = 1
    mask_trails: bool = True
    trails: TrailConfig = TrailConfig()
    drop_cosmic_residuals: bool = True
    rescale_weight: bool = True
    mean_sky: bool = False
    psf_pedestal: bool = True
    qc: QCThresholds = QCThresholds()
    gaia_quality: GaiaQualityCuts = GaiaQualityCuts()
    first_pass_deblend: bool = False
    sparse_fallbacks: bool = True

    def __post_init__(self) -> None:
        bad = set(self.required_calibrations) - set(CALIBRATION_KINDS)
        if bad:
            raise ValueError(f"SEConfig.required_calibrations: unknown {sorted(bad)}; use "
                             f"{CALIBRATION_KINDS}")
        if self.mags_type not in ("mag_psf", "mag_auto", "mag_aper_8"):
            raise ValueError(f"SEConfig.mags_type must be mag_psf, mag_auto or mag_aper_8, got "
                             f"{self.mags_type!r}")

    def hash(self) -> str:
        """Short stable hash (12 hex digits) of every setting, for product headers."""
        text = json.dumps(asdict(self), sort_keys=True, default=repr)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class CCDInputs:
    """Everything :func:`process_ccd` needs for one CCD, already read.

    Attributes
    ----------
    raw : desgw.io.raw.RawCCD
        The raw CCD.
    crosstalk_sources : mapping of int to RawCCD
        Raw source CCDs of :func:`desgw.se.crosstalk.needed_sources` (may include ``raw``).
    bias, flat : ndarray, float, shape (4096, 2048) or None
        Bias (e-) and normalised dome flat of this CCD.
    bpm : ndarray, int, shape (4096, 2048) or None
        Bad-pixel mask (0 = good).
    refcat : astropy.table.Table
        Gaia stars around the CCD at the exposure epoch (``ra``, ``dec``, ``phot_*_mean_mag``).
    exposure : desgw.io.raw.ExposureHeader
        The exposure header.
    linearity : desgw.io.calib.LinearityTable or None
        The CCD's linearity lookup table (:func:`desgw.io.calib.read_linearity`); None skips
        the linearity correction.
    calib_paths : mapping of str to str
        The files ``bias``, ``flat`` and ``bpm`` were read from, named in the errors about
        them (empty: the errors name the raw file).
    """

    raw: RawCCD
    crosstalk_sources: Mapping[int, RawCCD]
    bias: np.ndarray | None
    flat: np.ndarray | None
    bpm: np.ndarray | None
    refcat: Table
    exposure: ExposureHeader
    linearity: LinearityTable | None = None
    calib_paths: Mapping[str, str] = field(default_factory=dict)


@dataclass
class CCDResult:
    """The products of one processed CCD.

    Attributes
    ----------
    ccdnum : int
    image : ndarray, float32, (4096, 2048)
        Detrended image in electrons, sky *not* subtracted (as DES ``immask`` SCI).
    mask : ndarray, int32
        :mod:`desgw.se.maskbits` bits.
    weight : ndarray, float32
        Inverse variance (e^-2), 0 where unusable.
    wcs : astropy.wcs.WCS
        Fitted TAN-SIP (0-based trimmed pixels).
    header : astropy.io.fits.Header
        Product header (keywords of :func:`process_ccd` plus the WCS).
    catalog : astropy.table.Table
        The fullcat: SExtractor columns; ALPHAWIN/DELTAWIN_J2000 from the fitted WCS.
    psf : PSFModel
    background : Background
    astrometry : AstrometryResult
    zeropoint : ZeropointResult or None
        ``m_AB = -2.5 log10(FLUX [e-]) + zp`` for the ``mags_type`` flux; None when it could
        not be measured (the reason is in ``qc.reasons``).
    qc : QCResult
    timings : dict of str to float
        Seconds per step.
    corners : (ndarray, ndarray)
        RA, Dec (deg) of the 1-based pixels (16,16), (2033,16), (2033,4081), (16,4081).
    flags : dict of str to str
        Degraded steps (``"psf"``, ``"wcs"``, ``"zeropoint"``) and why, in words with the
        numbers (:mod:`desgw.se.sparse`); empty when every model is the full one.
    """

    ccdnum: int
    image: np.ndarray
    mask: np.ndarray
    weight: np.ndarray
    wcs: WCS
    header: fits.Header
    catalog: Table
    psf: PSFModel
    background: Background
    astrometry: AstrometryResult
    zeropoint: ZeropointResult | None
    qc: QCResult
    timings: dict[str, float] = field(default_factory=dict)
    corners: tuple[np.ndarray, np.ndarray] = field(default_factory=lambda: (np.zeros(4), np.zeros(4)))
    flags: dict[str, str] = field(default_factory=dict)


def check_band(exposure: ExposureHeader, raw: RawCCD | None = None) -> str:
    """The DES band of an exposure, checked.

    The first token of ``FILTER`` (else ``BAND``) must be one of g r i z Y, and ``BAND``, when
    present, must agree with it.

    Raises
    ------
    desgw.errors.HeaderError
        Naming the file, HDU 0 and the ``FILTER`` (or ``BAND``) keyword.
    """
    path = getattr(raw, "path", None)
    hdr = getattr(exposure, "header", None)
    filt = getattr(exposure, "filter", None)
    band_kw = hdr.get("BAND") if hdr is not None else None
    if band_kw is not None:
        band_kw = str(band_kw).strip() or None
    token = str(filt).split()[0] if filt and str(filt).split() else None
    band = token if token is not None else (band_kw or getattr(exposure, "band", None))
    if band not in QC_BANDS:
        keyword = "FILTER" if token is not None else "BAND"
        raise HeaderError(path, 0, f"{keyword} keyword {filt if token else band!r} does not name "
                          f"a DES band ({', '.join(QC_BANDS)}): cannot calibrate",
                          keyword=keyword)
    if band_kw is not None and token is not None and band_kw != token:
        raise HeaderError(path, 0, f"FILTER keyword {filt!r} (band {token!r}) disagrees with "
                          f"BAND {band_kw!r}", keyword="FILTER")
    return str(band)


def _check_inputs(inputs: CCDInputs, config: SEConfig) -> None:
    raw = inputs.raw
    for kind in config.required_calibrations:
        if getattr(inputs, kind) is None:
            raise MissingFileError(raw.path, raw.hdu, f"CCD {raw.ccdnum}: no {kind} calibration "
                                   f"given, and SEConfig.required_calibrations includes {kind!r}",
                                   calibration=kind, ccdnum=int(raw.ccdnum))
    pix = np.asarray(raw.pixels)
    finite = np.isfinite(pix)
    if not finite.all():
        raise DetrendError(raw.path, raw.hdu, f"{int(pix.size - finite.sum())} non-finite raw "
                           "pixels (NaN or Inf)", ccdnum=int(raw.ccdnum))


def _astrometry_rows(cat: Table) -> np.ndarray:
    """Catalog rows usable in the astrometric fit: clean, finite windowed centroids."""
    flags = np.asarray(cat["FLAGS"])
    ima = np.asarray(cat["IMAFLAGS_ISO"])
    ok = ((flags & (4 | 8 | 16 | 64)) == 0) & ((ima & maskbits.UNUSABLE) == 0)
    ok &= np.isfinite(np.asarray(cat["XWIN_IMAGE"])) & np.isfinite(np.asarray(cat["YWIN_IMAGE"]))
    ok &= np.asarray(cat["FLUX_AUTO"]) > 0
    return np.flatnonzero(ok)


def _ref_mag(refcat: Table) -> np.ndarray | None:
    for name in ("phot_g_mean_mag", "PHOT_G_MEAN_MAG"):
        if name in refcat.colnames:
            return np.asarray(refcat[name], dtype=np.float64)
    return None


def _pixel_scale_arcsec(wcs: WCS, x: float, y: float) -> float:
    """Geometric-mean pixel scale (arcsec) of a WCS at 0-based (x, y), by finite differences."""
    ra, dec = wcs.all_pix2world([x, x + 1.0, x], [y, y, y + 1.0], 0)
    cosd = math.cos(math.radians(float(dec[0])))
    dx = np.array([(ra[1] - ra[0]) * cosd, dec[1] - dec[0]]) * 3600.0
    dy = np.array([(ra[2] - ra[0]) * cosd, dec[2] - dec[0]]) * 3600.0
    return math.sqrt(abs(dx[0] * dy[1] - dx[1] * dy[0]))


def _zeropoint(catalog: Table, refcat: Table, band: str, config: SEConfig,
               flags: dict[str, str] | None = None
               ) -> tuple[ZeropointResult | None, str | None]:
    try:
        meas = measure_ccd_zeropoint(catalog, refcat, band, mags_type=config.mags_type,
                                     sex_mag_zeropoint=config.sex_mag_zeropoint,
                                     use_color_terms=config.use_color_terms,
                                     method=config.zp_method, error_floor=config.zp_error_floor)
    except TransformUnavailableError as exc:
        return None, f"zeropoint not measured: {exc}"
    res = meas.result
    if not res.valid and config.sparse_fallbacks and flags is not None \
            and 1 <= res.n_used <= 2:
        sparse = sparse_zeropoint(res.delta[res.used], res.delta_err[res.used],
                                  error_floor=max(config.zp_error_floor, 0.02),
                                  n_matched=res.n_matched)
        flags["zeropoint"] = (f"zeropoint from {sparse.n_used} star(s) of {res.n_matched} matched "
                              f"to Gaia ({sparse.zp_err:.3f} mag error; a clipped zeropoint "
                              f"needs 3)")
        return sparse, None
    if not res.valid:
        return None, (f"zeropoint not measured: {res.n_used} calibration stars left of "
                      f"{res.n_matched} matched to Gaia")
    return res, None


def fit_ccd_psf(sub: np.ndarray, weight: np.ndarray, mask: np.ndarray, x: np.ndarray,
                y: np.ndarray, psf_cfg: PSFConfig, config: SEConfig, seeing_fwhm_px: float,
                flags: dict[str, str], *, fwhm_source: str = "the first-pass seeing",
                segmap: np.ndarray | None = None,
                neighbour_xy: np.ndarray | None = None) -> PSFModel:
    """The PSF step of :func:`process_ccd`: the full fit, or its sparse-field fallback
    (recorded in ``flags["psf"]``) when ``config.sparse_fallbacks``."""
    if not config.sparse_fallbacks:
        return fit_psf(sub, weight, mask, x, y, segmap=segmap, neighbour_xy=neighbour_xy,
                       config=psf_cfg)
    psf, why = fit_psf_sparse(sub, weight, mask, x, y, config=psf_cfg,
                              fallback_fwhm_px=seeing_fwhm_px, fallback_source=fwhm_source,
                              segmap=segmap, neighbour_xy=neighbour_xy)
    if why is not None:
        flags["psf"] = why
    return psf


def solve_ccd_wcs(x: np.ndarray, y: np.ndarray, ref: Table, init_wcs: WCS, *,
                  flux: np.ndarray, xy_err: np.ndarray, image_shape: tuple[int, int],
                  config: SEConfig, flags: dict[str, str],
                  max_shift_arcsec: float | None = None) -> AstrometryResult:
    """The astrometry step of :func:`process_ccd`: :func:`desgw.se.astrometry.solve_wcs`, and
    when it fails for lack of stars and ``config.sparse_fallbacks``, a shift-only refinement of
    ``init_wcs`` (:func:`desgw.se.sparse.refine_wcs_shift`, recorded in ``flags["wcs"]``)
    searched within ``max_shift_arcsec`` (default ``config.astrometry.max_offset_arcsec``; a
    CP WCS is good to ~0.1 arcsec, so its caller gives a few arcsec).

    Raises
    ------
    AstrometryError
        The full fit failed and no reference star lies near a detection either.
    """
    ra_ref = np.asarray(ref["ra"], dtype=np.float64)
    dec_ref = np.asarray(ref["dec"], dtype=np.float64)
    try:
        return solve_wcs(x, y, ra_ref, dec_ref, init_wcs, flux=flux, ref_mag=_ref_mag(ref),
                         xy_err=xy_err, image_shape=image_shape, config=config.astrometry)
    except AstrometryError as exc:
        if not config.sparse_fallbacks:
            raise
        try:
            shift = refine_wcs_shift(x, y, ra_ref, dec_ref, init_wcs, image_shape=image_shape,
                                     max_offset_arcsec=config.astrometry.max_offset_arcsec
                                     if max_shift_arcsec is None else max_shift_arcsec)
        except AstrometryError:
            raise exc from None
        flags["wcs"] = (f"WCS shift-only refinement from {shift.result.n_used} star(s): "
                        f"({shift.shift_ra_arcsec:+.3f}, {shift.shift_dec_arcsec:+.3f}) +- "
                        f"{shift.shift_err_arcsec:.3f} arcsec; the full fit failed: "
                        f"{exc.reason}")
        return shift.result



def _exposure_airmass(exposure: ExposureHeader) -> float:
    """The header's ``AIRMASS``; when absent or below 1, recomputed from the pointing at the
    middle of the exposure (:func:`desgw.instrument.site.airmass_at`, with a warning); 1.0 with
    a warning when the pointing is unknown too."""
    if exposure.airmass is not None and math.isfinite(exposure.airmass) and exposure.airmass >= 1:
        return float(exposure.airmass)
    from desgw.instrument.site import airmass_at

    if exposure.ra_deg is not None and exposure.dec_deg is not None:
        mid = float(exposure.mjd_obs) + 0.5 * float(exposure.exptime) / 86400.0
        x = airmass_at(float(exposure.ra_deg), float(exposure.dec_deg), mid)
        if math.isfinite(x):
            log.warning("exposure %s: AIRMASS %s in the raw header; %.3f from the pointing "
                        "at CTIO", exposure.expnum, exposure.airmass, x)
            return x
    log.warning("exposure %s: AIRMASS %s in the raw header and no usable pointing; airmass "
                "1.0 assumed (extinction-dependent QC and nominal zeropoints assume the zenith)",
                exposure.expnum, exposure.airmass)
    return 1.0


def process_ccd(inputs: CCDInputs, *, config: SEConfig = SEConfig()) -> CCDResult:
    """Process one raw CCD into calibrated image, catalog, PSF, WCS, zeropoint and QC.

    Parameters
    ----------
    inputs : CCDInputs
        Raw CCD, crosstalk sources, calibrations, Gaia table, exposure header.
    config : SEConfig

    Returns
    -------
    CCDResult

    Raises
    ------
    desgw.errors.HeaderError
        FILTER/BAND not a DES band (:func:`check_band`); no pointing for the initial WCS.
    desgw.errors.MissingFileError
        A required calibration is None.
    desgw.se.detrend.DetrendError
        Non-finite, constant (e.g. all zero) or entirely saturated raw data; bad calibrations.
    desgw.errors.MissingCCDError
        A crosstalk source CCD was not given.
    desgw.se.psf.PSFFitError, desgw.se.astrometry.AstrometryError
        Too few stars for the PSF or the astrometric solution.
    """
    timings: dict[str, float] = {}
    t_start = t0 = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t0
        t1 = time.perf_counter()
        timings[name] = timings.get(name, 0.0) + (t1 - t0)
        t0 = t1

    raw, exposure = inputs.raw, inputs.exposure
    ccdnum = int(raw.ccdnum)
    band = check_band(exposure, raw)
    _check_inputs(inputs, config)
    lap("checks")

    # --- instrumental signature
    xt = correct_crosstalk(raw, inputs.crosstalk_sources, ccdnum)
    lap("crosstalk")
    corrected = replace(raw, pixels=xt.pixels)  # keeps path/HDU for error messages
    d = detrend_ccd(corrected, bias=inputs.bias, flat=inputs.flat, bpm=inputs.bpm, mask=xt.mask,
                    amps=xt.amps, ccdnum=ccdnum, config=config.detrend,
                    linearity=inputs.linearity, calib_paths=inputs.calib_paths)
    image, mask, weight = d.image, d.mask, d.weight
    lap("detrend")
    airmass = _exposure_airmass(exposure)
    detrended = CalibratedCCD(
        image=image, mask=mask, weight=weight, ccdnum=ccdnum, expnum=int(exposure.expnum),
        band=band, filter_name=str(exposure.filter or band), exptime=float(exposure.exptime),
        mjd_obs=float(exposure.mjd_obs), airmass=float(airmass),
        saturation_e=float(min(a.saturation_e for a in d.amps)),
        read_noise_e=float(np.mean([a.read_noise_e for a in d.amps])),
        init_wcs=initial_wcs_for(raw, exposure), refcat=inputs.refcat,
        identity=_identity_header(raw),
        header_extra={"LINCOR": (inputs.linearity is not None,
                                 "linearity lookup-table correction applied")},
        smooth_sky=d.sky)
    return process_detrended(detrended, config=config, timings=timings, t_start=t_start)


@dataclass
class CalibratedCCD:
    """A calibrated CCD (electrons, mask, weight) of either input kind, the input of
    :func:`process_detrended` (not :class:`desgw.se.detrend.DetrendedCCD`, the raw path's
    detrend output it is made from).

    A raw CCD gets here through :func:`process_ccd` (crosstalk, detrend); a Community Pipeline
    InstCal CCD through :func:`desgw.se.process_instcal.process_instcal_ccd` (ADU -> e-, CP
    mask codes -> bits).

    Attributes
    ----------
    image : ndarray, float32
        Electrons, sky not subtracted (modified in place by the steps).
    mask : ndarray, int32
        :mod:`desgw.se.maskbits` bits (modified in place).
    weight : ndarray, float32
        Inverse variance (e^-2), 0 where unusable (modified in place).
    ccdnum, expnum : int
    band : str
        DES band (checked by the caller).
    filter_name : str
        The exposure's filter, for the header.
    exptime : float
        Seconds.
    mjd_obs : float
    airmass : float
        >= 1 (1 when unknown).
    saturation_e : float
        Lowest amplifier saturation level (e-).
    read_noise_e : float
        Mean amplifier read noise (e-; NaN when unknown).
    init_wcs : astropy.wcs.WCS
        The WCS the astrometry refines (instrument optics at the pointing, or the CP's).
    refcat : astropy.table.Table
        Gaia stars around the CCD at the exposure epoch.
    identity : astropy.io.fits.Header
        CCDNUM, DETPOS (and EXTNAME) for the product header.
    header_extra : mapping of str to (value, comment)
        Keywords of this input kind (``LINCOR``; ``CPGAINA``...), after ``GAIN``.
    flagged_upstream : bool
        Bleed trails, cosmic rays and satellite trails are flagged in ``mask`` already (the
        CP's data-quality codes): the bleed-trail, L.A.Cosmic, trail and cosmic-ray-leftover
        steps are not run.
    default_fwhm_px, default_fwhm_source : float or None, str
        Seeing (pixels) to assume when the first pass finds no star (the CP header ``FWHM``),
        and what it is, for the sparse-PSF flag; None: :func:`estimate_seeing`'s default.
    wcs_max_shift_arcsec : float or None
        Largest shift of a shift-only WCS refinement (:func:`solve_ccd_wcs`).
    keep_initial_wcs : bool
        With ``SEConfig.sparse_fallbacks``, an astrometry that finds no star at all keeps
        ``init_wcs`` (flagged ``wcs``) instead of raising (a CP WCS is good to ~0.1").
    first_pass_detect_base : bool
        True: the first detection pass uses :func:`first_pass_config`; False:
        ``SEConfig.detect`` as it is (the CP path as validated on the real cut-outs).
    detect_noise : str
        ``"weight"`` or ``"variance"``: how the second detection pass is given the noise.
    mean_sky : bool
        Whether ``SEConfig.mean_sky`` applies (the CP path was validated without it).
    label : str
        Prefix of the log line (``"CCD"``, ``"CP CCD"``).
    smooth_sky : ndarray or None
        The detrending's smooth sky (e-, float32, same shape) for the cosmic-ray prefilter;
        None: the prefilter estimates it.
    """

    image: np.ndarray
    mask: np.ndarray
    weight: np.ndarray
    ccdnum: int
    expnum: int
    band: str
    filter_name: str
    exptime: float
    mjd_obs: float
    airmass: float
    saturation_e: float
    read_noise_e: float
    init_wcs: WCS
    refcat: Table
    identity: fits.Header
    header_extra: Mapping[str, tuple[object, str]] = field(default_factory=dict)
    flagged_upstream: bool = False
    default_fwhm_px: float | None = None
    default_fwhm_source: str = "the first-pass seeing"
    wcs_max_shift_arcsec: float | None = None
    keep_initial_wcs: bool = False
    first_pass_detect_base: bool = True
    detect_noise: str = "weight"
    mean_sky: bool = True
    label: str = "CCD"
    smooth_sky: np.ndarray | None = None


def _unrefined_wcs(wcs: WCS, n_det: int, n_ref: int) -> AstrometryResult:
    """The initial WCS kept as the astrometric result (no star matched)."""
    z = np.zeros(0, dtype=np.intp)
    return AstrometryResult(wcs=wcs, n_detections=n_det, n_refs=n_ref, n_matched=0, n_used=0,
                            rms_ra_arcsec=math.nan, rms_dec_arcsec=math.nan,
                            rms_arcsec=math.nan, sip_order=0, fit_order=0,
                            wcs_max_error_arcsec=0.0, src_index=z, ref_index=z,
                            used=np.zeros(0, dtype=bool), offset_ra_arcsec=0.0,
                            offset_dec_arcsec=0.0, rotation_deg=0.0, scale_ratio=1.0, bic={},
                            inverse_max_error_pix=0.0)


def _ccd_or_cutout_corners(wcs: WCS, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`desgw.se.process_wcs.ccd_corners` for a full CCD; for a cut-out its outer pixel
    corners (1-based (0.5, 0.5) ... (nx + 0.5, ny + 0.5))."""
    from desgw.instrument import CCD_SHAPE

    if tuple(shape) == tuple(CCD_SHAPE):
        return ccd_corners(wcs)
    ny, nx = shape
    x = np.array([0.5, nx + 0.5, nx + 0.5, 0.5])
    y = np.array([0.5, 0.5, ny + 0.5, ny + 0.5])
    ra, dec = wcs.all_pix2world(x, y, 1)
    return np.asarray(ra, dtype=np.float64) % 360.0, np.asarray(dec, dtype=np.float64)


def process_detrended(ccd: CalibratedCCD, *, config: SEConfig = SEConfig(),
                      timings: dict[str, float] | None = None,
                      t_start: float | None = None) -> CCDResult:
    """The per-CCD steps after the detrending, shared by raw and CP InstCal input: steps 4-13
    of the module docstring (bleed trails, first pass and seeing, cosmic rays, trails, second
    background, detection, PSF, measurement, astrometry, zeropoint, QC) and the product header.

    Parameters
    ----------
    ccd : CalibratedCCD
        The detrended pixels (modified in place), what is known of the exposure, and what
        the input kind did already.
    config : SEConfig
    timings : dict, optional
        Seconds per step so far (continued here; a new dict by default).
    t_start : float, optional
        ``time.perf_counter()`` at the start of the CCD, for ``timings["total"]``.

    Returns
    -------
    CCDResult

    Raises
    ------
    desgw.se.psf.PSFFitError, desgw.se.astrometry.AstrometryError
        Too few stars for the PSF or the astrometric solution (beyond the sparse fallbacks).

    Notes
    -----
    On a cut-out smaller than four background meshes the mesh shrinks to a quarter of its
    side, and the seeing stamps and the aperture-correction margin shrink with it (no change
    on a full CCD).
    """
    timings = {} if timings is None else timings
    t_start = time.perf_counter() if t_start is None else t_start
    t0 = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t0
        t1 = time.perf_counter()
        timings[name] = timings.get(name, 0.0) + (t1 - t0)
        t0 = t1

    image, mask, weight = ccd.image, ccd.mask, ccd.weight
    ccdnum, band = int(ccd.ccdnum), ccd.band
    ny, nx = image.shape
    extra: dict[str, tuple[object, str]] = {}
    if not ccd.flagged_upstream:
        bleed = mask_bleed_trails(image, bad_from_mask(mask, np.int64(maskbits.SAT)),
                                  config=config.bleed)
        mask |= bleed.mask
        extra["NSATSTAR"] = (int(bleed.star_x.size), "saturated stars (bleed/halo masked)")
    flag_pixels(mask, weight, None, 0, maskbits.UNUSABLE)
    if not ccd.flagged_upstream:
        lap("bleed")

    # --- first pass: background, detections, seeing
    sat_e = float(ccd.saturation_e)
    bcfg = config.background
    if min(ny, nx) < 4 * bcfg.mesh:
        bcfg = replace(bcfg, mesh=max(8, min(ny, nx) // 4))
    # the image is in electrons: the level is the mean of the Poisson sky, not its mode
    bkg1 = estimate_background(image, mask, gain=1.0, read_noise=float(ccd.read_noise_e),
                               config=bcfg)
    sub = image - bkg1.level
    det1 = detect_sources(sub, bkg1.rms, mask, config=first_pass_config(config)
                         if ccd.first_pass_detect_base else config.detect)
    max_peak = config.psf_max_peak_fraction * sat_e - bkg1.global_level
    half_size = max(3, min(15, (min(ny, nx) - 1) // 2 - 1))
    if ccd.default_fwhm_px is None:
        seeing = estimate_seeing(det1, sub, max_peak=max_peak, half_size=half_size)
    else:
        seeing = estimate_seeing(det1, sub, max_peak=max_peak, half_size=half_size,
                                 default_fwhm=float(ccd.default_fwhm_px))
    lap("first_pass")

    read_noise = float(ccd.read_noise_e)
    n_trails = 0
    if not ccd.flagged_upstream:
        # --- cosmic rays
        cr_cfg = (config.cosmics if config.cosmics.objlim is not None
                  else replace(config.cosmics, objlim=cosmics_objlim(seeing.fwhm_px)))
        cr = find_cosmic_rays(image, bad_from_mask(mask, np.int64(maskbits.UNUSABLE)),
                              read_noise_e=read_noise,
                              gain=1.0, psf_fwhm_px=seeing.fwhm_px, config=cr_cfg,
                              smooth_sky_e=ccd.smooth_sky)
        if config.cosmic_grow > 0 and cr.any():
            cr = grow_mask(cr, int(config.cosmic_grow)) & (weight > 0)
        # flag_pixels counts the pixels it flags (a cr.sum() pass cost ~3 ms)
        n_cray = flag_pixels(mask, weight, cr, maskbits.CRAY)
        extra["NCRAY"] = (n_cray, "cosmic-ray pixels masked")
        lap("cosmics")

        # --- satellite and aircraft trails
        if config.mask_trails:
            tr = find_trails(sub, weight, mask, fwhm_px=seeing.fwhm_px, config=config.trails)
            n_trails = len(tr.trails)
            if n_trails:
                mask[tr.mask] |= maskbits.STREAK
                weight[tr.mask] = 0.0
        extra["NTRAIL"] = (n_trails, "satellite/aircraft trails masked (STREAK)")
        lap("trails")

    # --- second pass: background with sources masked, detection for the seeing
    c1 = det1.catalog
    wings = ObjectWings(x=np.asarray(c1["x"], dtype=np.float64),
                        y=np.asarray(c1["y"], dtype=np.float64),
                        peak=np.asarray(c1["peak"], dtype=np.float64), fwhm_px=seeing.fwhm_px,
                        noise=bkg1.global_rms)
    # the noise map is only read by the mean-sky step (the detection uses the weight)
    bkg = estimate_background(image, mask, objects=det1.segmap, wings=wings, config=bcfg,
                              rms_map=bool(ccd.mean_sky and config.mean_sky), gain=1.0,
                              read_noise=read_noise)
    np.subtract(image, bkg.level, out=sub)
    wscale = (weight_rescale_factor(sub, weight, mask, det1.segmap)
              if config.rescale_weight else 1.0)
    if not (math.isfinite(wscale) and wscale > 0):
        wscale = 1.0
    if wscale != 1.0:
        weight *= np.float32(1.0 / wscale)
    det_cfg = detect_config_for_seeing(config.detect, seeing.fwhm_px, snr=config.detect_snr,
                                       minarea=config.detect_minarea)
    if ccd.detect_noise == "variance":
        with np.errstate(divide="ignore"):
            variance = np.where(weight > 0, 1.0 / weight, np.inf).astype(np.float32)
        det = detect_sources(sub, variance, mask, noise_type="variance", config=det_cfg)
    else:
        det = detect_sources(sub, weight, mask, noise_type="weight", config=det_cfg)
    lap("detect")

    # --- PSF
    cand = select_psf_candidates(det, max_peak=config.psf_max_peak_fraction * sat_e
                                 - bkg.global_level)
    psf_cfg = psf_config_for_seeing(config.psf, seeing.fwhm_px, stamp_fwhm=config.psf_stamp_fwhm)
    det_xy = np.column_stack([np.asarray(det.catalog["xwin"], dtype=np.float64),
                              np.asarray(det.catalog["ywin"], dtype=np.float64)])
    source = ("the first-pass seeing" if seeing.n_stars or ccd.default_fwhm_px is None
              else ccd.default_fwhm_source)
    flags: dict[str, str] = {}
    if config.psf_pedestal:
        psf_cfg = replace(psf_cfg, fit_pedestal=True)
    psf = fit_ccd_psf(sub, weight, mask, det_xy[cand, 0], det_xy[cand, 1], psf_cfg, config,
                      seeing.fwhm_px, flags, fwhm_source=source, segmap=det.segmap,
                      neighbour_xy=det_xy)
    lap("psf")

    # --- the sky as the mean of the image less the detections' models (crowded fields)
    mcfg = replace(config.measure, zeropoint=config.sex_mag_zeropoint)
    if ccd.mean_sky and config.mean_sky and len(det.catalog):
        bkg = mean_sky_background(image, weight, mask, bkg, det, psf, config=mcfg)
        np.subtract(image, bkg.level, out=sub)
        # the PSF stamps' pedestal changed: refit (the wings hold any excess)
        psf = fit_ccd_psf(sub, weight, mask, det_xy[cand, 0], det_xy[cand, 1], psf_cfg, config,
                          seeing.fwhm_px, flags, fwhm_source=source, segmap=det.segmap,
                          neighbour_xy=det_xy)
        lap("mean_sky")

    # --- measurement (with the initial WCS for the column layout; redone below)
    init_wcs = ccd.init_wcs
    catalog = measure_sources(image, weight, mask, bkg, det, psf, wcs=init_wcs, exptime=None,
                              config=mcfg)
    if not ccd.flagged_upstream:
        n_crres = 0
        if config.drop_cosmic_residuals:
            residual = cosmic_ray_residuals(catalog, cray_bit=maskbits.CRAY)
            n_crres = int(residual.sum())
            if n_crres:
                pix = segment_pixels(det, np.asarray(catalog["NUMBER"])[residual])
                mask[pix] |= maskbits.CRAY
                weight[pix] = 0.0
                catalog = catalog[~residual]
        extra["NCRRESID"] = (n_crres, "detections dropped as cosmic-ray leftovers")
    margin = min(100.0, 0.25 * min(ny, nx))
    apcor = psf_aperture_correction(psf, margin=margin) if config.psf_aperture_correction \
        else 1.0
    _apply_psf_aperture_correction(catalog, apcor, config.sex_mag_zeropoint)
    lap("measure")

    # --- astrometry
    rows = _astrometry_rows(catalog)
    ref = ccd.refcat[gaia_quality_mask(ccd.refcat, cuts=config.gaia_quality)]
    try:
        astro = solve_ccd_wcs(np.asarray(catalog["XWIN_IMAGE"], dtype=np.float64)[rows] - 1.0,
                              np.asarray(catalog["YWIN_IMAGE"], dtype=np.float64)[rows] - 1.0,
                              ref, init_wcs, flux=np.asarray(catalog["FLUX_AUTO"])[rows],
                              xy_err=np.asarray(catalog["ERRAWIN_IMAGE"],
                                                dtype=np.float64)[rows],
                              image_shape=image.shape, config=config, flags=flags,
                              max_shift_arcsec=ccd.wcs_max_shift_arcsec)
    except AstrometryError as exc:
        if not (ccd.keep_initial_wcs and config.sparse_fallbacks):
            raise
        flags["wcs"] = f"CP WCS not refined: {exc.reason}"
        astro = _unrefined_wcs(init_wcs, int(rows.size), len(ref))
    wcs = astro.wcs
    if len(catalog):
        ra, dec = wcs.all_pix2world(np.asarray(catalog["XWIN_IMAGE"]) - 1.0,
                                    np.asarray(catalog["YWIN_IMAGE"]) - 1.0, 0)
        catalog["ALPHAWIN_J2000"] = ra
        catalog["DELTAWIN_J2000"] = dec
    scale_deg = float(np.sqrt(np.prod(proj_plane_pixel_scales(wcs.celestial))))
    catalog["FWHM_WORLD"] = (np.asarray(catalog["FWHM_IMAGE"], dtype=np.float64)
                             * scale_deg).astype(np.float32)
    fwhm_psf = psf_fwhm_at(psf, np.asarray(catalog["XWIN_IMAGE"]) - 1.0,
                           np.asarray(catalog["YWIN_IMAGE"]) - 1.0)
    catalog["FWHMPSF_IMAGE"] = fwhm_psf
    catalog["FWHMPSF_IMAGE"].unit = u.pix
    catalog["FWHMPSF_WORLD"] = (fwhm_psf.astype(np.float64) * scale_deg).astype(np.float32)
    catalog["FWHMPSF_WORLD"].unit = u.deg
    lap("astrometry")

    # --- zeropoint
    zp, zp_reason = _zeropoint(catalog, ref, band, config, flags)
    lap("zeropoint")

    # --- QC
    xc, yc = (nx - 1) / 2.0, (ny - 1) / 2.0
    pixscale = _pixel_scale_arcsec(wcs, xc, yc)
    fwhm_px = float(psf.fwhm_at(xc, yc))
    airmass = float(ccd.airmass)
    metrics = compute_qc_metrics(band=band, exptime=float(ccd.exptime), airmass=airmass,
                                 fwhm_arcsec=fwhm_px * pixscale, sky_level_e=bkg.global_level,
                                 zp=zp.zp if zp is not None else math.nan,
                                 astrometric_rms_arcsec=astro.rms_arcsec, n_stars=astro.n_used,
                                 pixel_scale_arcsec=pixscale)
    qc = assess_quality(metrics, thresholds=config.qc)
    if zp_reason is not None:
        qc = replace(qc, passed=False, reasons=(*qc.reasons, zp_reason))
    qc = flag_quality(qc, flags)
    corners = _ccd_or_cutout_corners(wcs, image.shape)
    lap("qc")

    header = ccd_product_header(ccd.identity, wcs, {
        "EXPNUM": (int(ccd.expnum), "DECam exposure number"),
        "BAND": (band, "DES band"),
        "FILTER": (ccd.filter_name, "filter of the exposure"),
        "EXPTIME": (float(ccd.exptime), "[s] exposure time"),
        "MJD-OBS": (float(ccd.mjd_obs), "MJD of the shutter opening"),
        "AIRMASS": (airmass, "airmass"),
        "BUNIT": ("electrons", "image unit"),
        "GAIN": (1.0, "[e-/unit] image is in electrons"),
        **ccd.header_extra,
        "SATURATE": (float(sat_e), "[e-] lowest amplifier saturation level"),
        "RDNOISE": (read_noise, "[e-] mean amplifier read noise"),
        "AVSKY": (float(bkg.global_level), "[e-] median sky level"),
        "SKYSKEW": (float(bkg.skew_shift), "[e-] Poisson-skew shift added to the sky mode"),
        "PSFPED": (round(float(psf.sky_pedestal), 4), "[e-] level under the PSF stars, fitted"),
        "SKYSIGMA": (float(bkg.global_rms), "[e-] median sky noise"),
        "WGTSCALE": (wscale, "sky var measured/model (weight divided by it)"),
        "FWHM": (fwhm_px, "[pix] PSF FWHM at the CCD centre"),
        "FWHMASEC": (fwhm_px * pixscale, "[arcsec] PSF FWHM at the CCD centre"),
        "PSFNSTAR": (psf.n_stars, "stars in the PSF model"),
        "PSFSTAMP": (psf.stamp_size, "[pix] PSF model stamp side"),
        "PSFAPCOR": (apcor, "total / PSF-stamp flux, applied to FLUX_PSF"),
        **{k: extra[k] for k in ("NCRAY", "NTRAIL", "NCRRESID", "NSATSTAR") if k in extra},
        "NOBJECT": (len(catalog), "catalog rows"),
        "ASTRNMAT": (astro.n_used, "Gaia stars in the astrometric fit"),
        "ASTRRMS": (astro.rms_arcsec, "[arcsec] astrometric rms vs Gaia"),
        "ASTRORD": (astro.sip_order, "SIP order of the WCS (0: shift or none)"),
        "MAGZERO": (zp.zp if zp is not None else math.nan,
                    f"AB zeropoint of {config.mags_type} flux in e-"),
        "MAGZERR": (zp.zp_err if zp is not None else math.nan, "error of MAGZERO"),
        "MAGZNSTR": (zp.n_used if zp is not None else 0, "stars in the zeropoint"),
        "COLTERMS": (bool(config.use_color_terms), "Gaia colour terms in the zeropoint"),
        "SEXMAGZP": (config.sex_mag_zeropoint, "zeropoint of the catalog MAG_ columns"),
        "QCPASS": (bool(qc.passed), "single-epoch quality check passed"),
        "DEGRADED": (",".join(sorted(flags)) or "none", "steps degraded for lack of stars"),
        "DESGWCFG": (config.hash(), "hash of the SEConfig settings"),
    })
    timings["total"] = time.perf_counter() - t_start
    log.info("%s %d: %d objects, FWHM %.2f\", astrometry %.0f mas (%d stars), ZP %s, QC %s "
             "(%.2f s)", ccd.label, ccdnum, len(catalog), fwhm_px * pixscale,
             1e3 * astro.rms_arcsec,
             astro.n_used, "none" if zp is None else f"{zp.zp:.4f}",
             "pass" if qc.passed else "FAIL: " + "; ".join(qc.reasons), timings["total"])
    return CCDResult(ccdnum=ccdnum, image=image, mask=mask, weight=weight, wcs=wcs,
                     header=header, catalog=catalog, psf=psf, background=bkg, astrometry=astro,
                     zeropoint=zp, qc=qc, timings=timings, corners=corners, flags=flags)


def first_pass_config(config: SEConfig) -> DetectConfig:
    """The settings of :func:`process_ccd`'s first detection pass (seeing and object mask).

    ``config.detect`` with windowed centroids only where
    :func:`desgw.se.psf.select_psf_candidates` can pick a star (its ``min_snr``), and without
    deblending or cleaning unless ``config.first_pass_deblend``.
    """
    cfg = replace(config.detect, window_min_snr=_SEEING_MIN_SNR)
    if not config.first_pass_deblend:
        cfg = replace(cfg, deblend_nthresh=1, clean=False)
    return cfg


def flag_quality(qc: QCResult, flags: Mapping[str, str]) -> QCResult:
    """``qc`` failed with one reason per degraded step (``"degraded psf: ..."``)."""
    if not flags:
        return qc
    extra = tuple(f"degraded {k}: {v}" for k, v in sorted(flags.items()))
    return replace(qc, passed=False, reasons=qc.reasons + extra)


def _apply_psf_aperture_correction(catalog: Table, apcor: float, zeropoint: float) -> None:
    """Scale the PSF flux columns by ``apcor`` in place and recompute MAG_PSF/MAGERR_PSF."""
    if apcor == 1.0 or len(catalog) == 0:
        return
    f = np.asarray(catalog["FLUX_PSF"], dtype=np.float64) * apcor
    e = np.asarray(catalog["FLUXERR_PSF"], dtype=np.float64) * apcor
    catalog["FLUX_PSF"][:] = f
    catalog["FLUXERR_PSF"][:] = e
    mag, magerr = flux_to_mag(f, e, zeropoint, None)
    catalog["MAG_PSF"][:] = mag
    catalog["MAGERR_PSF"][:] = magerr


def _identity_header(raw: RawCCD) -> fits.Header:
    from astropy.io import fits

    h = fits.Header()
    for key in ("CCDNUM", "DETPOS", "EXTNAME"):
        if key in raw.header:
            h[key] = (raw.header[key], raw.header.comments[key])
    h.setdefault("CCDNUM", int(raw.ccdnum))
    h.setdefault("DETPOS", raw.detpos)
    return h
