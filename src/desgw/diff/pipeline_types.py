"""Inputs, settings, results and errors of :func:`desgw.diff.pipeline.difference_ccd`.

* :class:`CCDProducts`: one processed CCD (search or template) as arrays, read by the caller
  (:mod:`desgw.workflow.diff_ccd` reads them from the SE products).
* :class:`DiffConfig`: every setting of the difference imaging of one CCD, frozen.
* :class:`DiffResult`: images, tables, efficiency, timings and flags of one CCD.
* :class:`DiffError`: a failure the orchestration can act on, ``kind`` ``"nothing_to_do"``
  (no template, nothing to subtract: running again will not help) or ``"failed"`` (the input
  cannot be used, e.g. no PSF model, or a step failed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from astropy.table import Table

from desgw.diff.coadd import OutlierRejection
from desgw.diff.detect import DiffDetectConfig
from desgw.diff.measure import DiffMeasureConfig
from desgw.diff.register import RegistrationConfig
from desgw.diff.resample import ResampleConfig
from desgw.diff.subtract import SubtractConfig
from desgw.errors import AlgorithmError
from desgw.se.background import Background, BackgroundConfig

__all__ = [
    "DIFF_ERROR_KINDS",
    "RESULT_FLAGS",
    "CCDProducts",
    "DiffConfig",
    "DiffError",
    "DiffResult",
    "RejectedTemplateCCD",
]

#: Kinds of :class:`DiffError`.
DIFF_ERROR_KINDS: tuple[str, ...] = ("nothing_to_do", "failed")

#: Flags a :class:`DiffResult` may carry (see :class:`DiffResult`).
RESULT_FLAGS: tuple[str, ...] = ("no_template", "all_masked", "search_qc_failed",
                                 "no_fakes", "no_efficiency", "partial_coverage",
                                 "registration_wcs_only")


class DiffError(AlgorithmError):
    """Difference imaging of a CCD could not be done.

    Parameters
    ----------
    message : str
        What went wrong, with its numbers.
    kind : {"nothing_to_do", "failed"}
        ``"nothing_to_do"``: there is nothing to subtract (no usable template); ``"failed"``:
        the input cannot be used or a step failed.
    details : mapping, optional
        Extra facts (picklable values), kept as :attr:`details`.
    """

    def __init__(self, message: str, *, kind: str = "failed",
                 details: Mapping[str, Any] | None = None) -> None:
        if kind not in DIFF_ERROR_KINDS:
            raise ValueError(f"DiffError kind must be one of {DIFF_ERROR_KINDS}, got {kind!r}")
        self.message = str(message)
        self.kind = kind
        self.details = dict(details or {})
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_diff_error, (type(self), self.message, self.kind, self.details))


def _rebuild_diff_error(cls: type[DiffError], message: str, kind: str,
                        details: dict[str, Any]) -> DiffError:
    return cls(message, kind=kind, details=details)


@dataclass(frozen=True)
class CCDProducts:
    """One SE-processed CCD, in memory.

    Attributes
    ----------
    image : numpy.ndarray
        (ny, nx) float32 detrended image (e-, sky not subtracted, as the immask SCI).
    mask : numpy.ndarray
        (ny, nx) int32 mask bits (:mod:`desgw.se.maskbits`).
    weight : numpy.ndarray
        (ny, nx) float32 inverse background variance (e^-2); 0 where unusable.
    wcs : astropy.wcs.WCS or None
        Fitted WCS (0-based pixels of this CCD).
    psf : PSFModel or None
        PSF model (``render(x, y, size=None, dx=0, dy=0)``, unit sum over its stamp).
    zp : float
        AB zeropoint of the total flux in e- over the exposure (``m = -2.5 log10(F) + zp``).
    exptime : float
        Exposure time (s).
    band : str
    expnum, ccdnum : int
    catalog : astropy.table.Table or None
        The SE catalog (fullcat, SExtractor column names).
    qc_passed : bool
        The CCD's single-epoch quality verdict (astrometry, seeing, t_eff, zeropoint...).
    fwhm : float
        PSF FWHM at the CCD centre (arcsec).
    t_eff : float
        Effective exposure time factor (NaN when unknown).
    psf_apcor : float
        Total flux / flux inside the PSF model stamp (header ``PSFAPCOR``; 1 when unknown).
    sky_subtracted : bool
        ``image`` has its sky removed already (a prepared template CCD,
        :func:`desgw.diff.pipeline_products.load_template_products`): the difference imaging
        does not estimate it again.
    airmass : float
        Airmass of the exposure (header ``AIRMASS``; NaN when unknown): for a nominal
        zeropoint (:mod:`desgw.se.nominal_zp`) when none can be measured.
    background : Background or None
        The sky SE measured on ``image`` (level map and global level and rms, e-), when the
        CCD comes straight from SE in memory (the fused search CCD,
        :func:`desgw.workflow.sediff_ccd.search_products_from_se`); None when read from files.
        With :attr:`DiffConfig.relative_sky` the difference imaging subtracts it instead of
        estimating the sky again (:func:`desgw.diff.pipeline.difference_ccd`).
    weight_scale : float
        The factor SE divided its model weight by to match the sky noise measured on the
        image (header ``WGTSCALE``, :func:`desgw.se.process_steps.weight_rescale_factor`; 1
        when unknown): ``weight * weight_scale`` is the model inverse variance (sky and read
        noise), which :attr:`DiffConfig.model_weights` gives the difference imaging.
    """

    image: np.ndarray
    mask: np.ndarray
    weight: np.ndarray
    wcs: Any
    psf: Any
    zp: float
    exptime: float
    band: str
    expnum: int
    ccdnum: int
    catalog: Table | None = None
    qc_passed: bool = True
    fwhm: float = float("nan")
    t_eff: float = float("nan")
    psf_apcor: float = 1.0
    sky_subtracted: bool = False
    airmass: float = float("nan")
    background: Background | None = None
    weight_scale: float = 1.0

    @property
    def shape(self) -> tuple[int, int]:
        """(ny, nx) of the image."""
        return (int(self.image.shape[0]), int(self.image.shape[1]))

    @property
    def zp_stamp(self) -> float:
        """Zeropoint of fluxes measured with the unit-sum PSF stamp: ``zp - 2.5 log10(apcor)``."""
        apcor = self.psf_apcor if np.isfinite(self.psf_apcor) and self.psf_apcor > 0 else 1.0
        return float(self.zp - 2.5 * np.log10(apcor))


@dataclass(frozen=True)
class DiffConfig:
    """Settings of :func:`desgw.diff.pipeline.difference_ccd`.

    Attributes
    ----------
    require_template_qc : bool
        Reject template CCDs whose SE quality check failed (``qc_passed`` False).
    max_template_fwhm_arcsec : float or None
        Reject template CCDs with a broader PSF (arcsec); None: no cut.
    min_template_teff : float or None
        Reject template CCDs with a smaller t_eff (a NaN t_eff passes); None: no cut.
    background : BackgroundConfig
        Sky estimate of the search and of each template CCD (two passes, the second with the
        pixels above ``object_sigma`` of the first masked).
    object_sigma : float
        Threshold (sigma of the background noise) of the object mask of the second pass.
    relative_sky : bool
        Remove the mesh sky of ``search - template`` from the search image after the coadd
        (:func:`desgw.diff.pipeline_steps.relative_sky`).
    crop_templates : bool
        Cut each template CCD to the part that lands on the search CCD before its sky and
        resampling (:func:`desgw.diff.template_crop.crop_to_search`); False: whole CCDs.
    registration : RegistrationConfig
        Refinement of each template CCD's WCS mapping with stars matched between its catalog
        and the search catalog (:mod:`desgw.diff.register`), before resampling.
    resample : ResampleConfig
    resample_kernel : str
        Interpolation kernel of the template resampling (``"lanczos3"``).
    coadd_method : {"weighted", "mean"}
    coadd_reject : OutlierRejection
        Outlier rejection of the coadd where >= 3 template exposures cover a pixel (cosmic
        rays, satellite trails, asteroids of one template).
    correlated_template_noise : bool
        Correct the propagated variances of the score and of the difference for the
        correlation of the resampled template's noise (ZOGY treats pixels as independent).
    model_weights : bool
        Give the difference imaging each input's model weight (sky and read noise: the SE
        weight times :attr:`CCDProducts.weight_scale`), not SE's weight rescaled to the sky
        noise measured on the image. That measurement also counts the static scatter of the
        light outside the detected objects (star wings, undetected sources), noise to a
        single epoch's photometry but the same in both epochs and gone from the difference:
        on a crowded field (beta 2.5 wings, ~11,600 objects per CCD) it made the difference's
        propagated sigma ~5 % too large.
    resampled_inputs : bool
        The search and template images were already resampled before they reached desgw
        (their pixel noise is correlated): measure each input's noise autocorrelation on its
        blank sky and correct the score, flux errors and difference variance for it.
    subtract : SubtractConfig
        ZOGY settings (the template's source noise comes from the coadd's per-pixel ``gain``).
    threshold_sigma : float
        Detection threshold on ``|S_corr|``.
    detect : DiffDetectConfig
    measure : DiffMeasureConfig
    fakes : bool
        Inject fake point sources (SNFAKE) to measure the detection efficiency.
    n_fakes : int
        Fakes per CCD.
    fake_brighter, fake_fainter : float
        Fake magnitudes are uniform in ``(m_ideal - brighter, m_ideal + fainter)``.
    fake_host_fraction : float
        Fraction of fakes placed on galaxies of the search catalog.
    fake_match_radius_px : float
        A fake is recovered by a positive detection within this distance (px).
    fake_min_separation_px : float
        Least distance between two fakes (px): the PSF-flux filter of the difference is about
        twice the PSF wide, and a neighbouring bright fake closer than a few of its FWHM adds
        to a fake's measured flux.
    fake_detection_separation_fwhm : float
        Fakes keep this many FWHM of the difference's PSF from every detection of the search
        catalog other than their host (:func:`desgw.diff.fakes.plan_fakes`): a fake on a real
        transient hid it behind a candidate flagged as a fake.
    fake_mask_radius_px : float
        Fakes are placed where no pixel within this distance (px) is masked in the difference
        (its mask predicted before injection): the fake's central 3 x 3 pixels are usable, so
        the efficiency is that of the whole usable area, and a fake whose flux cut by a
        neighbouring masked pixel grows that mask over it counts as lost.
    efficiency_bins : int
    efficiency_model : {"logistic", "erf"}
    stamp_size : int
        Side of the candidate stamps (px, odd).
    min_usable_fraction : float
        Below this fraction of usable pixels (search and template both good) the result is
        flagged ``all_masked`` and nothing is detected.
    """

    require_template_qc: bool = True
    max_template_fwhm_arcsec: float | None = 2.5
    min_template_teff: float | None = None
    background: BackgroundConfig = field(default_factory=BackgroundConfig)
    object_sigma: float = 3.0
    relative_sky: bool = True
    crop_templates: bool = True
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    resample: ResampleConfig = field(default_factory=ResampleConfig)
    resample_kernel: str = "lanczos3"
    coadd_method: str = "weighted"
    coadd_reject: OutlierRejection = field(default_factory=OutlierRejection)
    correlated_template_noise: bool = True
    model_weights: bool = True
    resampled_inputs: bool = False
    subtract: SubtractConfig = field(default_factory=SubtractConfig)
    threshold_sigma: float = 5.0
    detect: DiffDetectConfig = field(default_factory=DiffDetectConfig)
    measure: DiffMeasureConfig = field(default_factory=DiffMeasureConfig)
    fakes: bool = True
    n_fakes: int = 200
    fake_brighter: float = 2.0
    fake_fainter: float = 1.5
    fake_host_fraction: float = 0.2
    fake_match_radius_px: float = 1.5
    fake_min_separation_px: float = 40.0
    fake_detection_separation_fwhm: float = 3.0
    fake_mask_radius_px: float = 1.5
    efficiency_bins: int = 14
    efficiency_model: str = "logistic"
    stamp_size: int = 51
    min_usable_fraction: float = 0.001

    def __post_init__(self) -> None:
        if not self.threshold_sigma > 0:
            raise ValueError(f"DiffConfig.threshold_sigma must be > 0, got {self.threshold_sigma}")
        if self.n_fakes < 0:
            raise ValueError("DiffConfig.n_fakes must be >= 0")
        if self.stamp_size < 1 or self.stamp_size % 2 == 0:
            raise ValueError(f"DiffConfig.stamp_size must be odd, got {self.stamp_size}")
        if self.coadd_method not in ("weighted", "mean"):
            raise ValueError(f"DiffConfig.coadd_method must be weighted or mean, got "
                             f"{self.coadd_method!r}")
        if not 0.0 <= self.fake_host_fraction <= 1.0:
            raise ValueError("DiffConfig.fake_host_fraction must be in [0, 1]")
        if not self.fake_detection_separation_fwhm >= 0:
            raise ValueError("DiffConfig.fake_detection_separation_fwhm must be >= 0")
        if not self.object_sigma > 0:
            raise ValueError("DiffConfig.object_sigma must be > 0")


@dataclass(frozen=True)
class RejectedTemplateCCD:
    """A template CCD left out, and why."""

    expnum: int
    ccdnum: int
    reasons: tuple[str, ...]


@dataclass
class DiffResult:
    """Difference imaging of one search CCD.

    Images are on the search CCD grid ((ny, nx)), fluxes in search electrons measured with the
    unit-sum PSF stamp (multiply by the search ``psf_apcor`` for total fluxes; magnitudes use
    :attr:`zp_stamp`, so they are total-flux AB magnitudes). An *empty* result (flags
    ``no_template`` or ``all_masked``) has ``diff`` etc. None and empty tables.

    Attributes
    ----------
    expnum, ccdnum : int
        The search CCD.
    diff, diff_var, score : numpy.ndarray or None
        float32 ZOGY difference (e-), its variance (e^2, inf where blanked) and ``S_corr``.
    mask : numpy.ndarray or None
        int32 mask of the difference.
    search_image : numpy.ndarray or None
        float32 background-subtracted search image with the fakes.
    template_image, template_weight : numpy.ndarray or None
        float32 background-subtracted template coadd on the search grid and scale, its
        inverse variance.
    template_mask : numpy.ndarray or None
        int32 coadd mask.
    resampled : tuple
        The resampled template CCDs (:class:`~desgw.diff.resample.Resampled`), kept only with
        ``keep_intermediate``.
    registrations : tuple of Registration
        The registration refinement of each template CCD of ``templates_used`` (same order;
        :class:`desgw.diff.register.Registration`, method ``"wcs"`` where none was applied).
    candidates : astropy.table.Table
        :data:`desgw.diff.measure.MEASURE_COLUMNS` plus ``expnum``, ``ccdnum``, ``mag``,
        ``magerr`` (AB, NaN for a non-positive flux), ``veto`` (inside a star's veto circle),
        ``is_fake``, ``fake_id`` (-1 when not a fake) and ``real_bogus`` (in [0, 1]).
    fakes : astropy.table.Table
        The planned fakes (:func:`desgw.diff.fakes.plan_fakes` columns) plus ``flux_e``
        (injected stamp flux, e-), ``recovered``, ``cand_id`` (-1 when not recovered),
        ``separation_px`` and ``flux_forced``, ``flux_forced_err`` (ZOGY PSF flux and error at
        the injected position, e-: forced photometry, free of the peak-search bias), ``masked``
        (the fake's pixel is masked in the difference although it was planned on a usable
        one: its own flux grew a neighbouring mask over it).
    efficiency : EfficiencyCurve or None
        Detection efficiency of the fakes, i.e. on the difference's usable area; that area's
        fraction of the template-covered area is ``meta["usable_area_fraction"]`` (the
        efficiency over the whole covered area is the product of the two).
    ideal_limit : IdealLimit or None
        5-sigma PSF-fit limit of the difference image from the measured noise (module
        docstring of :mod:`desgw.diff.pipeline`).
    stamps : Stamps or None
        ``search``, ``template``, ``diff`` stamps of the candidates (table order).
    templates_used : tuple of (expnum, ccdnum)
        Template CCDs that cover the search CCD and entered the coadd.
    templates_rejected : tuple of RejectedTemplateCCD
    zp, zp_stamp : float
        Search zeropoint (total flux) and zeropoint of stamp fluxes.
    timings : dict of str to float
        Seconds per step.
    flags : tuple of str
        Some of :data:`RESULT_FLAGS`.
    meta : dict
        Numbers worth keeping: usable fraction, noise levels, FWHMs, noise correlation factor.
    """

    expnum: int
    ccdnum: int
    diff: np.ndarray | None
    diff_var: np.ndarray | None
    score: np.ndarray | None
    mask: np.ndarray | None
    search_image: np.ndarray | None
    template_image: np.ndarray | None
    template_weight: np.ndarray | None
    template_mask: np.ndarray | None
    candidates: Table
    fakes: Table
    efficiency: Any
    ideal_limit: Any
    stamps: Any
    templates_used: tuple[tuple[int, int], ...]
    templates_rejected: tuple[RejectedTemplateCCD, ...]
    zp: float
    zp_stamp: float
    timings: dict[str, float] = field(default_factory=dict)
    flags: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    resampled: tuple[Any, ...] = ()
    registrations: tuple[Any, ...] = ()

    @property
    def empty(self) -> bool:
        """True when nothing was subtracted (``no_template`` or ``all_masked``)."""
        return self.diff is None
