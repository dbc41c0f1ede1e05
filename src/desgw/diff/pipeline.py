"""Difference imaging of one search CCD (DiffImg's 28 steps as one pure function).

:func:`difference_ccd` takes the search CCD and the template CCDs that may overlap it, all in
memory (:class:`~desgw.diff.pipeline_types.CCDProducts`; the I/O shell is
:mod:`desgw.workflow.diff_ccd`), and returns a :class:`~desgw.diff.pipeline_types.DiffResult`.
Steps (timing keys in brackets), with the original DiffImg step they replace:

1. ``[template_cuts]`` template quality: SE QC verdict, FWHM maximum, t_eff minimum, PSF
   model, zeropoint, WCS (the verification step; rejected CCDs are listed with reasons).
2. ``[background]`` sky of the search and of every template CCD, two passes (the second with
   the sources masked); the weights are the SE inverse background variances (makeWeight).
   A template CCD read from its prepared form (``CCDProducts.sky_subtracted``) comes with
   that sky removed already, estimated once on the whole CCD; a search CCD straight from SE
   (``CCDProducts.background``) has SE's sky subtracted instead of a new estimate when the
   relative sky of step 4 follows (:func:`~desgw.diff.pipeline_steps.search_sky`).
3. ``[resample]`` each template CCD whose footprint reaches the search CCD is resampled onto
   the search grid, Lanczos-3 with flux conservation (SWarp), through the WCS mapping refined
   with the bright stars both catalogs measured (:mod:`desgw.diff.register`: an affine
   correction from >= 20 matched stars, a shift from >= 5; with fewer the WCS alone, and the
   result is flagged ``registration_wcs_only``). Each template's fit is in
   :attr:`DiffResult.registrations` and ``meta["registration"]``.
4. ``[coadd]`` coadd on the search photometric scale, inverse-variance weighted, with the
   matching PSF (SWarp combine), leaving out template pixels that no other template supports
   where >= 3 cover a pixel (:class:`~desgw.diff.coadd.OutlierRejection`); then the mesh
   sky of the plain difference search - coadd (sources left out) is removed from the search
   image (:func:`~desgw.diff.pipeline_steps.relative_sky`): PSF fluxes on the difference sum ~100
   pixels, so a relative sky error of 1 % of the noise would bias them by 0.1 sigma
   (``[sky_match]``, with the variances and the ideal limit). The mesh level is a clipped
   mode, raised to the difference's mean by the skew of both Poisson skies
   (:func:`~desgw.diff.pipeline_steps.relative_sky_skew_shift`, ``meta[
   "relative_sky_skew_shift_e"]``: ~0.25-0.35 e- for templates 3-10x deeper).
5. ``[fakes]`` fake point sources (SNFAKE): magnitudes uniform in ``m_ideal - 2 .. m_ideal +
   1.5`` around the ideal 5-sigma limit of this difference (step 12 below), placed on the
   pixels the difference will not mask (:func:`desgw.diff.subtract.predict_difference_mask`
   of the inputs before injection, ``DiffConfig.fake_mask_radius_px``; 20 % on galaxies),
   rendered with the search PSF into the search image with Poisson noise. The prediction is
   updated where the fakes' light changes a defect's growth and the subtraction reuses it
   (the mask is computed once per CCD).
6. ``[subtract]`` ZOGY subtraction (HOTPANTS): ``S_corr``, the difference and its variance.
7. ``[detect]`` peaks of ``|S_corr| >= threshold_sigma`` (SExtractor on the difference), after
   the mask growth is cleared where a source outshines the light the in-painting cut
   (:func:`desgw.diff.detect.release_grown_mask`, counted in the subtract step's time): a
   transient a few pixels from a defect on its host is found.
8. ``[measure]`` PSF flux, shape, dipole, context of each detection.
9. ``[veto]`` flag detections inside a star's veto circle (filterObj with SNVETO).
10. ``[stamps]`` 51 x 51 search / template / difference stamps.
11. ``[realbogus]`` machine-learning score (autoScan) of each candidate:
    ``desgw.diff.realbogus.score(candidates, stamps)`` on the stamps with the inputs' unusable
    pixels in-painted as the subtraction in-paints them
    (:func:`desgw.diff.stamps.inpaint_stamps`), imported when needed; if that module
    is not importable the function raises :class:`DiffError` (kind ``"failed"``) rather than
    return unscored candidates.
12. ``[efficiency]`` fakes matched one-to-one to positive detections within 1.5 px; the
    efficiency curve and its ``m50`` (unbinned logistic fit with its error): the efficiency
    on the difference's usable area, whose fraction of the template-covered area is
    ``meta["usable_area_fraction"]`` (masked area is lost to any search; both go to the
    products). A fake whose own flux, cut by a neighbouring masked pixel, grew that mask over
    it counts as lost (``fakes["masked"]``, ``meta["fakes_masked"]``).

Photometric scale
-----------------
PSF models render unit-sum stamps while SE zeropoints are total-flux zeropoints (the catalog
PSF fluxes are multiplied by ``PSFAPCOR``). Every image is therefore put on the scale of the
*stamp* flux of the search image, zeropoint ``zp_stamp = zp - 2.5 log10(PSFAPCOR)``: a
template is scaled by ``10**(0.4 (zp_stamp_search - zp_stamp_template))``, so that a constant
star's PSF-stamp flux is the same in both images whatever their seeing; fakes of magnitude
``m`` get the stamp flux ``10**(-0.4 (m - zp_stamp_search))``; a candidate's flux ``F`` (e- in
the stamp) has ``mag = -2.5 log10(F) + zp_stamp_search``, a total-flux AB magnitude.

Noise
-----
The search variance is ``1 / weight`` (background; with ``DiffConfig.model_weights`` SE's
model weight, before its rescale to the measured sky noise, :func:`~desgw.diff.pipeline_steps.
model_weight`), the template's the coadd's per-pixel variance (of the templates' model
weights); ZOGY adds the sources' Poisson noise from the pixel values (the template's with the
coadd's per-pixel gain, :attr:`desgw.diff.coadd.Coadd.gain`) and propagates the
variances through its filters as if pixels were independent. The resampled template's noise is
correlated (neighbouring pixels share input pixels): with ``DiffConfig.
correlated_template_noise`` the variances of ``S`` (hence ``S_corr`` and the flux errors) and of
the difference are then corrected per tile by the factor the template term of each filter gets
from the resampling noise autocorrelation, computed from the filters the subtraction built
(:meth:`desgw.diff.zogy.ZogyKernels.noise_factors`; no filter is rebuilt and no new transform
made): ~ the noise correlation factor (1.26 for Lanczos-3) for the broad score filter, less
for the sharper difference filters. On the simulator this takes the blank-sky ``S_corr``
noise from 1.05-1.10 to 1.01-1.02 and keeps the difference's within 2 %.
Inputs that were *already* resampled (``DiffConfig.resampled_inputs``, e.g. images delivered on
a common grid) carry their own correlated noise: each input's autocorrelation is then measured
on its blank sky (:func:`~desgw.diff.pipeline_steps.measure_noise_acf`), the search term of
each filter is corrected with it and the template's is combined with the resampling's.

Masks
-----
Unusable pixels of either image are in-painted by the subtraction, and each cluster of them is
grown only as far as the flux it hides needs (:mod:`desgw.diff.subtract`, *Mask growth*): a
cosmic ray or hot pixel on blank sky stays its own size, one on a star is grown by up to the
PSF FWHM, a bad column only where it crosses a star, none next to a transient whose wing it
cuts. ``meta["masked_fraction"]`` (pixels masked in the difference) and
``meta["bad_fraction"]`` (pixels unusable in the search or in every covering template) are
fractions of the template-covered area, reported per CCD in the product header and the
diffdone JSON.

Ideal limit
-----------
:func:`desgw.diff.efficiency.ideal_limit_mag` with the median background sigma of the search,
the median coadd sigma (search scale) times ``sqrt(noise correlation factor)``, the FWHMs of the
two PSFs at the CCD centre, the noise-equivalent area of the broader PSF's stamp, and
``zp_stamp``: the magnitude at which an ideal PSF-fit detection at ``threshold_sigma`` finds half
of the point sources.

Bad inputs
----------
No template CCD given, or every template rejected by the cuts: a *flagged empty result*
(``no_template``, rejections listed). Templates that pass but do not cover the search CCD:
``no_template``. Covered but no pixel usable in both images: ``all_masked``. No search PSF
model, no search WCS or zeropoint, image/mask/weight shapes that differ: :class:`DiffError`
(kind ``"failed"``). The real/bogus scorer missing: :class:`DiffError` (``"failed"``).
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from astropy.table import Table
from numba import njit

from desgw.diff.coadd import coadd_templates
from desgw.diff.detect import detect_transients, release_grown_mask
from desgw.diff.efficiency import efficiency_curve
from desgw.diff.fakes import fake_mag_range, inject_fakes, match_fakes, plan_fakes
from desgw.diff.measure import measure_candidates
from desgw.diff.register import refine_registration, select_stars
from desgw.diff.resample import resample_to_grid
from desgw.diff.resample_mapping import mapping_grid
from desgw.diff.stamps import cutout_stamps, inpaint_stamps
from desgw.diff.starcat import apply_veto
from desgw.diff.subtract import predict_difference_mask, subtract
from desgw.diff.template_crop import crop_to_search
from desgw.se.maskbits import EDGE, UNUSABLE

from .pipeline_steps import (
    as_rejected,
    combine_catalogs,
    empty_candidates,
    empty_fakes,
    footprint_overlaps,
    forced_flux,
    ideal_limit,
    measure_noise_acf,
    model_weight,
    relative_sky,
    relative_sky_skew_shift,
    resampling_noise_acf,
    search_sky,
    subtract_sky,
    template_cut_reasons,
    usable_pixels,
)
from .pipeline_types import (
    CCDProducts,
    DiffConfig,
    DiffError,
    DiffResult,
    RejectedTemplateCCD,
)

__all__ = [
    "CCDProducts",
    "DiffConfig",
    "DiffError",
    "DiffResult",
    "RejectedTemplateCCD",
    "difference_ccd",
    "load_realbogus_scorer",
]

log = logging.getLogger(__name__)


def load_realbogus_scorer() -> Callable[[Table, Any], np.ndarray]:
    """``desgw.diff.realbogus.score``, imported now.

    Raises
    ------
    DiffError
        kind ``"failed"`` when the module or the function is not available.
    """
    try:
        realbogus = importlib.import_module("desgw.diff.realbogus")
    except ImportError as exc:
        raise DiffError(f"the real/bogus scorer desgw.diff.realbogus cannot be imported "
                        f"({type(exc).__name__}: {exc}): candidates cannot be scored",
                        kind="failed") from None
    score = getattr(realbogus, "score", None)
    if not callable(score):
        raise DiffError("desgw.diff.realbogus has no score(candidates, stamps) function",
                        kind="failed")
    return score


def _check_search(search: CCDProducts) -> None:
    if search.psf is None:
        raise DiffError(f"search exposure {search.expnum} CCD {search.ccdnum} has no PSF model",
                        kind="failed")
    if search.wcs is None:
        raise DiffError(f"search exposure {search.expnum} CCD {search.ccdnum} has no WCS",
                        kind="failed")
    if not np.isfinite(search.zp):
        raise DiffError(f"search exposure {search.expnum} CCD {search.ccdnum} has no "
                        "zeropoint", kind="failed")
    shapes = {search.image.shape, search.mask.shape, search.weight.shape}
    if len(shapes) != 1 or search.image.ndim != 2:
        raise DiffError(f"search image, mask and weight shapes differ: {sorted(shapes)}",
                        kind="failed")


def _empty(search: CCDProducts, flags: Sequence[str], timings: dict[str, float],
           used: Sequence[tuple[int, int]], rejected: Sequence[RejectedTemplateCCD],
           meta: dict[str, Any]) -> DiffResult:
    log.warning("exposure %d CCD %d: nothing subtracted (%s)", search.expnum, search.ccdnum,
                ", ".join(flags))
    return DiffResult(expnum=int(search.expnum), ccdnum=int(search.ccdnum), diff=None,
                      diff_var=None, score=None, mask=None, search_image=None,
                      template_image=None, template_weight=None, template_mask=None,
                      candidates=empty_candidates(), fakes=empty_fakes(), efficiency=None,
                      ideal_limit=None, stamps=None, templates_used=tuple(used),
                      templates_rejected=tuple(rejected), zp=float(search.zp),
                      zp_stamp=search.zp_stamp, timings=timings, flags=tuple(flags), meta=meta)


@njit(cache=True, nogil=True)
def _covered_counts(mask, bits, good, cover):  # pragma: no cover - numba
    """Over the pixels with ``cover``: their number, those with ``bits`` in ``mask`` and those
    not ``good`` (one pass)."""
    ny, nx = mask.shape
    n_cov = 0
    n_masked = 0
    n_bad = 0
    for y in range(ny):
        for x in range(nx):
            if cover[y, x]:
                n_cov += 1
                if (mask[y, x] & bits) != 0:
                    n_masked += 1
                if not good[y, x]:
                    n_bad += 1
    return n_cov, n_masked, n_bad


@njit(cache=True, nogil=True)
def _inverse_kernel(weight):  # pragma: no cover - numba
    ny, nx = weight.shape
    out = np.empty((ny, nx), np.float32)
    for y in range(ny):
        for x in range(nx):
            w = weight[y, x]
            out[y, x] = np.float32(1.0) / w if w > 0 else np.inf
    return out


def _inverse(weight: np.ndarray) -> np.ndarray:
    """float32 ``1 / weight`` (inf where weight <= 0 or NaN), one pass."""
    return _inverse_kernel(np.asarray(weight))


def difference_ccd(search: CCDProducts, templates: Sequence[CCDProducts], *,
                   star_veto: Table | None = None, config: DiffConfig | None = None,
                   rng: np.random.Generator | None = None,
                   keep_intermediate: bool = False) -> DiffResult:
    """Difference imaging of one search CCD against its template CCDs (module docstring).

    Parameters
    ----------
    search : CCDProducts
        The search CCD; its pixel grid is the grid of every output.
    templates : sequence of CCDProducts
        Template CCDs (any exposures) that may overlap the search CCD.
    star_veto : astropy.table.Table or None
        Veto list (``RA``, ``DEC`` deg, ``radius`` arcsec; :func:`desgw.diff.starcat.
        make_veto_table` or ``read_veto_list``); None: no candidate is vetoed.
    config : DiffConfig or None
        Settings (None: ``DiffConfig()``).
    rng : numpy.random.Generator or None
        Random numbers of the fakes (plan and Poisson noise); None: seeded from the search
        exposure and CCD numbers (deterministic).
    keep_intermediate : bool
        Keep each resampled template CCD in :attr:`DiffResult.resampled`.

    Returns
    -------
    DiffResult

    Raises
    ------
    DiffError
        The search CCD cannot be used (no PSF, WCS or zeropoint, inconsistent arrays) or the
        real/bogus scorer is missing (kind ``"failed"``).
    """
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    t0 = t_start

    def lap(name: str) -> None:
        nonlocal t0
        t1 = time.perf_counter()
        timings[name] = timings.get(name, 0.0) + (t1 - t0)
        t0 = t1

    config = DiffConfig() if config is None else config
    _check_search(search)
    if rng is None:
        rng = np.random.default_rng([int(search.expnum), int(search.ccdnum)])
    flags: list[str] = []
    meta: dict[str, Any] = {"search_fwhm_arcsec": float(search.fwhm)}
    if not search.qc_passed:
        flags.append("search_qc_failed")

    # 1. template quality cuts
    rejected: list[RejectedTemplateCCD] = []
    usable: list[CCDProducts] = []
    for t in templates:
        reasons = template_cut_reasons(t, search, config)
        if reasons:
            rejected.append(as_rejected(t, reasons))
        elif not footprint_overlaps(t, search):
            rejected.append(as_rejected(t, ("does not overlap the search CCD",)))
        else:
            usable.append(crop_to_search(t, search) if config.crop_templates else t)
    for r in rejected:
        log.info("template exposure %d CCD %d rejected: %s", r.expnum, r.ccdnum,
                 "; ".join(r.reasons))
    lap("template_cuts")
    if not usable:
        timings["total"] = time.perf_counter() - t_start
        return _empty(search, [*flags, "no_template"], timings, (), rejected, meta)

    # the inputs' model weights: the difference's noise is the images' noise from one epoch
    # to the next, not the static scatter SE's weight rescale also counts
    if config.model_weights:
        search = model_weight(search)
        usable = [model_weight(t) for t in usable]

    # 2. sky
    shape = search.shape
    s_img, s_sky, s_rms = search_sky(search, config)
    meta.update(search_sky_e=s_sky, search_sky_rms_e=s_rms)
    # prepared template CCDs come with their sky removed (the same estimate, made once)
    t_imgs = [t.image if t.sky_subtracted else subtract_sky(t.image, t.mask, config)[0]
              for t in usable]
    s_acf = t_acf = None
    if config.resampled_inputs:
        # inputs already resampled: their own noise autocorrelations, from their blank sky
        s_acf = measure_noise_acf(s_img, search.mask, search.weight)
        t_acf = np.mean([measure_noise_acf(img, t.mask, t.weight)
                         for t, img in zip(usable, t_imgs)], axis=0)
        meta.update(search_input_ncf=float(s_acf.sum()), template_input_ncf=float(t_acf.sum()))
    lap("background")

    # 3. registration refinement and resampling
    resampled = []
    registrations = []
    s_stars = select_stars(search.catalog, search.wcs, config=config.registration)
    for t, img in zip(usable, t_imgs):
        mapping = mapping_grid(t.wcs, search.wcs, shape, step=config.resample.grid_step,
                               tolerance=config.resample.wcs_tolerance)
        reg = refine_registration(s_stars, select_stars(t.catalog, t.wcs,
                                                        config=config.registration),
                                  mapping, config=config.registration)
        registrations.append(reg)
        resampled.append(resample_to_grid(img, t.mask, t.weight, t.wcs, search.wcs, shape,
                                          kernel=config.resample_kernel,
                                          config=config.resample, mapping=reg.apply(mapping)))
    del t_imgs
    covering = [i for i, r in enumerate(resampled) if r.coverage.any()]
    for i, t in enumerate(usable):
        if i not in covering:
            rejected.append(as_rejected(t, ("does not overlap the search CCD",)))
    used = tuple((int(usable[i].expnum), int(usable[i].ccdnum)) for i in covering)
    registrations = [registrations[i] for i in covering]
    meta["registration"] = [{"expnum": e, "ccdnum": c, **reg.as_dict()}
                            for (e, c), reg in zip(used, registrations)]
    for (e, c), reg in zip(used, registrations):
        if reg.applied:
            log.info("template %d CCD %d registered: %s from %d stars, shift (%.3f, %.3f) px, "
                     "rms %.3f -> %.3f px", e, c, reg.method, reg.n_stars, reg.shift_x,
                     reg.shift_y, reg.rms_before, reg.rms_after)
        elif config.registration.enabled:
            log.warning("template %d CCD %d aligned by the WCS only: %s", e, c, reg.reason)
    if config.registration.enabled and any(not reg.applied for reg in registrations):
        flags.append("registration_wcs_only")
    lap("resample")
    if not covering:
        timings["total"] = time.perf_counter() - t_start
        return _empty(search, [*flags, "no_template"], timings, used, rejected, meta)

    # 4. coadd on the search stamp-flux scale
    zp_s = search.zp_stamp
    coadd = coadd_templates([resampled[i] for i in covering],
                            [usable[i].zp_stamp for i in covering], zp_s,
                            [usable[i].psf for i in covering], method=config.coadd_method,
                            reject=config.coadd_reject)
    kept = tuple(resampled[i] for i in covering) if keep_intermediate else ()
    t_cover = np.zeros(shape, bool)
    for i in covering:
        t_cover |= resampled[i].coverage
    del resampled
    ncf = float(coadd.noise_correlation_factor)
    good = usable_pixels(search.mask, search.weight, coadd.mask, coadd.weight)
    frac = float(good.mean())
    covered = float((coadd.weight > 0).mean())
    if coadd.n_rejected is not None:
        meta["coadd_rejected_pixels"] = int(coadd.n_rejected.sum())
    meta.update(usable_fraction=frac, template_coverage=covered, noise_correlation_factor=ncf,
                template_scales=tuple(float(s) for s in coadd.scales), zp_stamp=zp_s)
    if covered < 0.99:
        flags.append("partial_coverage")
    lap("coadd")
    if frac < config.min_usable_fraction:
        timings["total"] = time.perf_counter() - t_start
        return _empty(search, [*flags, "all_masked"], timings, used, rejected, meta)

    s_var = _inverse(search.weight)
    t_var = _inverse(coadd.weight)
    if config.relative_sky:
        # the mesh mode of the skewed difference, raised to its mean
        shift = relative_sky_skew_shift(s_sky, s_var, t_var, coadd.gain, good,
                                        resample_kernel=config.resample_kernel)
        meta["relative_sky_skew_shift_e"] = shift
        s_img -= relative_sky(s_img, coadd.image, good, s_rms, config, skew_shift=shift)
    limit = ideal_limit(search, s_var, t_var, good, coadd.psf, ncf, zp=zp_s,
                        nsigma=config.threshold_sigma)
    if limit is not None:
        meta.update(ideal_fwhm_px=limit.difference_fwhm_px, nea_px=limit.nea_pix)
    lap("sky_match")

    # the coadd's source noise per pixel: each template's Poisson noise with its scale and
    # weight (1 / mean(scale) would count an n-exposure stack's n times)
    sub_cfg = replace(config.subtract, template_gain=1.0 / float(np.mean(coadd.scales)))
    assert coadd.psf is not None  # coadd_templates was given the template PSFs

    # 5. fakes, on the pixels the difference will not mask (its mask predicted from the
    # inputs without the fakes): the efficiency is that of the usable area, whose fraction
    # meta["usable_area_fraction"] gives
    fakes = empty_fakes()
    mask_pred = None
    if config.fakes and config.n_fakes > 0 and limit is not None:
        mask_pred = predict_difference_mask(s_img, s_var, search.mask, search.psf, coadd.image,
                                            t_var, coadd.mask, coadd.psf, zp_search=zp_s,
                                            zp_template=zp_s, config=sub_cfg,
                                            template_gain_map=coadd.gain)
        plan_mask = mask_pred.mask
        galaxies = search.catalog if config.fake_host_fraction > 0 else None
        host_fraction = config.fake_host_fraction if galaxies is not None else 0.0
        planned = plan_fakes(search.wcs, shape, plan_mask, n=config.n_fakes,
                             mag_range=fake_mag_range(limit.mag, brighter=config.fake_brighter,
                                                      fainter=config.fake_fainter),
                             host_fraction=host_fraction, galaxies=galaxies, rng=rng,
                             mask_radius_px=config.fake_mask_radius_px,
                             min_separation_px=config.fake_min_separation_px,
                             unusable_bits=UNUSABLE | EDGE, detections=search.catalog,
                             min_detection_separation_px=config.fake_detection_separation_fwhm
                             * float(limit.difference_fwhm_px))
        del plan_mask
        if len(planned):
            inj = inject_fakes(s_img, None, search.psf, planned, zp=zp_s, rng=rng)
            s_img = inj.image
            planned["flux_e"] = inj.flux_e
            fakes = planned
            # the mask again only where the fakes' light changed a cluster's growth: exactly
            # the subtraction's mask, which it reuses
            mask_pred = mask_pred.update(s_img, windows=inj.windows)
    if len(fakes) == 0 and config.fakes:
        flags.append("no_fakes")
    lap("fakes")

    # 6. subtract
    acf = None
    if (config.correlated_template_noise and ncf > 1.0) or config.resampled_inputs:
        acf = resampling_noise_acf(ncf if config.correlated_template_noise else 1.0)
        if t_acf is not None:
            # the input's own correlation seen through the resampling: (R * rho) / R(0)
            from scipy.signal import fftconvolve
            acf = fftconvolve(acf, t_acf, mode="full")
    sub = subtract(s_img, s_var, search.mask, search.psf, coadd.image, t_var, coadd.mask,
                   coadd.psf, zp_search=zp_s, zp_template=zp_s, config=sub_cfg,
                   template_gain_map=coadd.gain, search_noise_acf=s_acf,
                   template_noise_acf=acf, mask_prediction=mask_pred)
    del mask_pred
    if config.detect.release_grown:
        # a transient next to a defect: its flux beyond what the cut light can leave
        released, n_released = release_grown_mask(
            sub, s_img, s_var, search.mask, coadd.image, t_var, coadd.mask,
            threshold_sigma=config.threshold_sigma)
        sub = replace(sub, mask=released)
        meta["mask_released_px"] = n_released
    del s_var, t_var
    if acf is not None:
        meta.update(score_noise_factor=float(np.median(sub.meta["score_noise_factor"])),
                    diff_noise_factor=float(np.median(sub.meta["diff_noise_factor"])))
    # masked vs truly bad pixels over the template-covered area
    n_cov, n_masked, n_bad = _covered_counts(sub.mask, np.int32(UNUSABLE | EDGE), good,
                                             t_cover)
    n_cov = max(n_cov, 1)
    meta.update(masked_fraction=n_masked / n_cov, bad_fraction=n_bad / n_cov,
                usable_area_fraction=1.0 - n_masked / n_cov,
                mask_growth=dict(sub.meta.get("mask_growth", {})),
                zogy_kernel_size=int(sub.meta["zogy_kernel_size"]),
                zogy_border=int(sub.meta["zogy_border"]))
    del t_cover
    lap("subtract")

    # 7-8. detect, measure
    det = detect_transients(sub, threshold_sigma=config.threshold_sigma, config=config.detect)
    lap("detect")
    cands = measure_candidates(sub, det, search_image=s_img, template_image=coadd.image,
                               search_catalog=search.catalog,
                               template_catalog=combine_catalogs([usable[i].catalog
                                                                  for i in covering]),
                               wcs=search.wcs, config=config.measure)
    n = len(cands)
    cands["expnum"] = np.full(n, int(search.expnum), np.int64)
    cands["ccdnum"] = np.full(n, int(search.ccdnum), np.int64)
    flux = np.asarray(cands["flux"], np.float64)
    ferr = np.asarray(cands["flux_err"], np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        cands["mag"] = np.where(flux > 0, -2.5 * np.log10(np.where(flux > 0, flux, 1.0)) + zp_s,
                                np.nan)
        cands["magerr"] = np.where(flux > 0, 1.0857362047581294 * ferr / np.abs(flux), np.nan)
    lap("measure")

    # 9. veto
    if star_veto is not None and n:
        cands["veto"] = apply_veto(np.asarray(cands["ra"]), np.asarray(cands["dec"]), star_veto)
    else:
        cands["veto"] = np.zeros(n, bool)
    lap("veto")

    # 12a. fakes matched to positive detections
    cands["is_fake"] = np.zeros(n, bool)
    cands["fake_id"] = np.full(n, -1, np.int64)
    if len(fakes):
        pos = np.flatnonzero(~np.asarray(cands["negative"], bool))
        match = match_fakes(fakes, (np.asarray(cands["x"])[pos], np.asarray(cands["y"])[pos]),
                            radius_px=config.fake_match_radius_px)
        rows = np.where(match.recovered, pos[np.maximum(match.det_index, 0)] if pos.size
                        else -1, -1)
        cand_id = np.full(len(fakes), -1, np.int64)
        cand_id[match.recovered] = np.asarray(cands["id"], np.int64)[rows[match.recovered]]
        fakes["recovered"] = match.recovered
        fakes["cand_id"] = cand_id
        fakes["separation_px"] = match.separation_px
        ff, fe = forced_flux(sub, np.asarray(fakes["x"]), np.asarray(fakes["y"]))
        fakes["flux_forced"] = ff
        fakes["flux_forced_err"] = fe
        # planned on usable pixels; masked after all where the fake's own flux, cut by a
        # neighbouring masked pixel, grew that mask over it (a loss a transient there has too)
        fx = np.clip(np.floor(np.asarray(fakes["x"]) + 0.5).astype(np.intp), 0, shape[1] - 1)
        fy = np.clip(np.floor(np.asarray(fakes["y"]) + 0.5).astype(np.intp), 0, shape[0] - 1)
        fakes["masked"] = (sub.mask[fy, fx] & (UNUSABLE | EDGE)) != 0
        meta["fakes_masked"] = int(np.sum(fakes["masked"]))
        hit = rows[rows >= 0]
        cands["is_fake"][hit] = True
        cands["fake_id"][hit] = np.asarray(fakes["fake_id"])[match.recovered]

    # 10. stamps
    stamps = cutout_stamps({"search": s_img, "template": coadd.image, "diff": sub.diff},
                           np.asarray(cands["x"]), np.asarray(cands["y"]),
                           size=config.stamp_size)
    lap("stamps")

    # 11. real/bogus
    scorer = load_realbogus_scorer()
    # scored on the inputs as the subtraction used them: known bad pixels in-painted
    rb = np.asarray(scorer(cands, inpaint_stamps(stamps, {"search": search.mask,
                                                          "template": coadd.mask},
                                                 UNUSABLE | EDGE)),
                    dtype=np.float64).reshape(-1)
    if rb.shape != (n,) or not np.all(np.isfinite(rb)) or (n and (rb.min() < 0 or rb.max() > 1)):
        raise DiffError(f"desgw.diff.realbogus.score returned {rb.shape} values "
                        f"(range {rb.min() if rb.size else 'n/a'}..{rb.max() if rb.size else 'n/a'})"
                        f" for {n} candidates; expected {n} values in [0, 1]", kind="failed")
    cands["real_bogus"] = rb.astype(np.float32)
    lap("realbogus")

    # 12b. efficiency
    eff = None
    if len(fakes) >= 10:
        rec = np.asarray(fakes["recovered"], bool)
        try:
            eff = efficiency_curve(np.asarray(fakes["mag"]), rec, bins=config.efficiency_bins,
                                   model=config.efficiency_model)
        except ValueError as exc:
            log.warning("exposure %d CCD %d: no efficiency fit (%s)", search.expnum,
                        search.ccdnum, exc)
    if eff is None and config.fakes:
        flags.append("no_efficiency")
    lap("efficiency")

    timings["total"] = time.perf_counter() - t_start
    meta.update(subtract={"fwhm_search_px": sub.meta.get("fwhm_search"),
                          "fwhm_template_px": sub.meta.get("fwhm_template")})
    log.info("exposure %d CCD %d: %d templates, %d candidates, %d/%d fakes recovered, m50 %s, "
             "ideal %s (%.2f s)", search.expnum, search.ccdnum, len(used), n,
             int(np.sum(fakes["recovered"])) if len(fakes) else 0, len(fakes),
             "n/a" if eff is None else f"{eff.m50:.2f}",
             "n/a" if limit is None else f"{limit.mag:.2f}", timings["total"])
    return DiffResult(expnum=int(search.expnum), ccdnum=int(search.ccdnum), diff=sub.diff,
                      diff_var=sub.diff_var, score=sub.score, mask=sub.mask, search_image=s_img,
                      template_image=coadd.image, template_weight=coadd.weight,
                      template_mask=coadd.mask, candidates=cands, fakes=fakes, efficiency=eff,
                      ideal_limit=limit, stamps=stamps, templates_used=used,
                      templates_rejected=tuple(rejected), zp=float(search.zp), zp_stamp=zp_s,
                      timings=timings, flags=tuple(flags), meta=meta, resampled=kept,
                      registrations=tuple(registrations))
