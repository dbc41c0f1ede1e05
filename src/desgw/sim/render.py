"""Rendering simulated raw DECam CCDs: sky, stars, galaxies and the detector, with truth.

`render_exposure` is the entry point: it renders the electron images of all requested CCDs (and
of the CCDs whose amplifiers leak into them, for crosstalk), then adds crosstalk between them
with the real DECam coefficients, then digitises each CCD into the real raw layout. `render_ccd`
renders one CCD (crosstalk from other CCDs only when their images are passed in).

Order of the physics (each step switchable by `SimSwitches`)
------------------------------------------------------------
1. Expected electrons on the trimmed 4096 x 2048 grid: sky (surface brightness and the CCD's
   zeropoint, times the local pixel area from the distortion, times the focal-plane gradient);
   point sources with the local PSF (`desgw.sim.psf`, PSF evaluated at each object; Moffat by
   the numba renderer, other `PSFField.profile` values by galsim);
   galaxies as PSF-convolved Sersic profiles (`desgw.sim.render_galaxies`); the satellite trail.
   Fluxes use the CCD zeropoint ``spec.zeropoint + 2.5 log10(qe)``.
2. Flat-field pattern (`DetectorCalib.flat`) and bad pixels (dead/low-response boxes multiply the
   signal; hot pixels add dark current, not flat-fielded).
3. Shot noise and read noise (one draw, see `desgw.sim.detector.apply_noise`); cosmic rays
   (they carry their own fluctuations).
4. Full well and bleed trails.
5. Bias structure (e-); gain per amplifier -> true ADU above bias.
6. Crosstalk (ADU, computed from the *true* (linear) bias-free ADU of the source amplifiers,
   before any crosstalk or non-linearity).
7. Non-linearity per amplifier (`desgw.sim.detector.nonlinear_adu` with the camera's
   coefficients, `DetectorCalib` ``CCDCalib.nonlinearity``) applied to the true bias-free ADU
   of step 5 (signal, dark and bias structure), in `desgw.sim.detector.digitise`; the
   crosstalk of step 6 is added after it.
8. Bias level per amplifier plus row-wise drift in data and overscan, prescan and parallel
   overscan with read noise; rounded and clipped to uint16.

Dead CCDs (2, 61) read out bias and noise only. Brighter-fatter, fringing and the gain
instability of CCD 31A are not simulated.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from astropy.io import fits

from ..instrument import (CCD_SHAPE, DEAD_CCDS, focal_to_pixel, focal_to_tangent, get_ccd,
                          pixel_to_focal, sky_to_tangent, source_ccds, tangent_to_focal)
from .calib import DetectorCalib
from .detector import (TRUTH_BAD, TRUTH_HOT, SatelliteTrail, add_cosmic_rays, add_satellite,
                       apply_noise, bleed_columns, crosstalk_adu, digitise,
                       draw_readout_state, full_well_e, satellite_trail, to_adu)
from .model import OBJECT_KINDS, ExposureSpec, ObjectTable, SimSwitches
from .psf import add_moffat_stars, add_profile_stars, local_psf, pixel_jacobian, shape_matrix
from .render_galaxies import PSF_CELL, GalaxyInputs, add_galaxies
from .render_headers import ccd_header

__all__ = ["ObjectTruth", "CCDTruth", "RenderedCCD", "ObjectPlacement", "place_objects",
           "render_ccd", "render_exposure", "ccd_zeropoint"]

log = logging.getLogger(__name__)

#: Objects whose centroid is within this many pixels outside a CCD are rendered on it (their
#: stamps reach in); objects brighter than `_BRIGHT_E` use `_BRIGHT_MARGIN`.
_MARGIN = 64
_BRIGHT_MARGIN = 300
_BRIGHT_E = 1e6


@dataclass(frozen=True)
class ObjectTruth:
    """Truth of the objects whose true centroid lies on a CCD (all arrays of length N).

    Attributes
    ----------
    id : ndarray of int64
    kind : ndarray of int8
        `desgw.sim.model.OBJECT_KINDS` code.
    x, y : ndarray of float64
        True centroid, 0-based trimmed pixel coordinates.
    flux_e : ndarray of float64
        Total electrons rendered (before the flat-field pattern, i.e. as measured after
        flat-fielding).
    mag : ndarray of float64
        AB magnitude in the exposure's band.
    """

    id: np.ndarray
    kind: np.ndarray
    x: np.ndarray
    y: np.ndarray
    flux_e: np.ndarray
    mag: np.ndarray

    def __len__(self) -> int:
        return len(self.id)


@dataclass(frozen=True, eq=False)
class CCDTruth:
    """What was put into one rendered CCD.

    Attributes
    ----------
    ccdnum : int
    objects : ObjectTruth
    zeropoint : float
        AB magnitude of 1 e-/s on this CCD after flat-fielding (``spec.zeropoint + 2.5 log10 qe``).
    qe : float
        Relative quantum efficiency of the CCD.
    sky_e_per_pixel : float
        Sky (e-/pixel, before the flat pattern) at the CCD centre.
    sky_e_mean : float
        Mean sky over the CCD (e-/pixel).
    psf_fwhm_arcsec, psf_fwhm_pix, psf_e1, psf_e2 : float
        PSF at the CCD centre (ellipticity in the focal-frame tangent plane).
    pixel_scale_arcsec : float
        Geometric-mean pixel scale at the CCD centre.
    mask : ndarray, shape (4096, 2048), uint8
        Bits `desgw.sim.detector.TRUTH_*`: 1 cosmic ray, 2 satellite, 4 saturated (at full
        well), 8 bleed trail, 16 bad-pixel box, 32 hot pixel.
    n_cosmic_rays : int
    satellite : bool
        True if the satellite trail crosses this CCD.
    bias_adu : dict[str, float]
        Bias level per amplifier in this exposure (ADU).
    bleed_lost_e : float
        Charge pushed off the CCD by bleeding (e-).
    crosstalk_missing : tuple of int
        Source CCDs whose crosstalk was not added (not rendered).
    dead : bool
        The CCD is dead (no signal).
    """

    ccdnum: int
    objects: ObjectTruth
    zeropoint: float
    qe: float
    sky_e_per_pixel: float
    sky_e_mean: float
    psf_fwhm_arcsec: float
    psf_fwhm_pix: float
    psf_e1: float
    psf_e2: float
    pixel_scale_arcsec: float
    mask: np.ndarray
    n_cosmic_rays: int
    satellite: bool
    bias_adu: dict[str, float]
    bleed_lost_e: float
    crosstalk_missing: tuple[int, ...]
    dead: bool


@dataclass(frozen=True, eq=False)
class RenderedCCD:
    """One rendered raw CCD.

    Attributes
    ----------
    ccdnum : int
    raw : ndarray, shape (4146, 2160), uint16
        Raw HDU pixels (ADU) in the real DECam layout.
    header : astropy.io.fits.Header
        The CCD's extension header (`desgw.sim.render_headers.ccd_header`).
    truth : CCDTruth
    timings : dict[str, float]
        Seconds spent per stage (``electrons``, ``objects``, ``detector``, ``crosstalk``,
        ``digitise``).
    """

    ccdnum: int
    raw: np.ndarray
    header: fits.Header
    truth: CCDTruth
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class ObjectPlacement:
    """Exposure-level positions of the renderable objects (computed once, used per CCD).

    Attributes
    ----------
    objects : ObjectTable
        The objects kept (finite magnitude, switched-on kinds).
    xmm, ymm : ndarray
        Focal-plane position (mm) through the exposure's true pointing and distortion.
    """

    objects: ObjectTable
    xmm: np.ndarray
    ymm: np.ndarray


def place_objects(spec: ExposureSpec, objects: ObjectTable, switches: SimSwitches) -> ObjectPlacement:
    """Select the objects to render and put them on the focal plane (true pointing)."""
    keep = np.isfinite(objects.mag)
    kind = np.asarray(objects.kind)
    if not switches.galaxies:
        keep &= kind != OBJECT_KINDS["galaxy"]
    if not switches.transients:
        keep &= kind != OBJECT_KINDS["transient"]
    if not switches.moving:
        keep &= kind != OBJECT_KINDS["moving"]
    if not switches.variables:
        keep &= kind != OBJECT_KINDS["variable"]
    obj = objects.select(keep) if not np.all(keep) else objects
    xi, eta = sky_to_tangent(obj.ra, obj.dec, spec.pointing)
    xmm, ymm = tangent_to_focal(xi, eta, spec.distortion)
    return ObjectPlacement(obj, np.asarray(xmm), np.asarray(ymm))


def ccd_zeropoint(spec: ExposureSpec, qe: float) -> float:
    """Zeropoint (AB mag of 1 e-/s) of a CCD of relative QE ``qe``."""
    return float(spec.zeropoint + 2.5 * np.log10(qe))


# ----------------------------------------------------------------------------- signal
def _sky_image(spec: ExposureSpec, ccdnum: int, zp: float, gradient: bool) -> tuple[np.ndarray, float]:
    """Sky electrons per pixel (float32 (4096, 2048)) and its value at the CCD centre."""
    ny, nx = CCD_SHAPE
    gx = np.linspace(-0.5, nx - 0.5, 9)
    gy = np.linspace(-0.5, ny - 0.5, 17)
    xx, yy = np.meshgrid(gx, gy)
    jac = pixel_jacobian(ccdnum, xx.ravel(), yy.ravel(), spec.distortion)
    area = np.abs(np.linalg.det(jac))
    level = area
    if gradient:
        xi, eta = focal_to_tangent(*pixel_to_focal(ccdnum, xx.ravel(), yy.ravel()), spec.distortion)
        level = area * (1.0 + spec.sky_gradient[0] * xi + spec.sky_gradient[1] * eta)
    rate = spec.exptime * 10 ** (-0.4 * (spec.sky_mag_arcsec2 - zp))
    # quadratic fit in normalised coordinates (residuals < 1e-6 of the level)
    u = xx.ravel() / nx - 0.5
    v = yy.ravel() / ny - 0.5
    design = np.column_stack([np.ones_like(u), u, v, u * u, u * v, v * v])
    coef, *_ = np.linalg.lstsq(design, level * rate, rcond=None)
    ux = (np.arange(nx) / nx - 0.5).astype(np.float64)
    vy = (np.arange(ny) / ny - 0.5).astype(np.float64)
    row = (coef[0] + coef[1] * ux + coef[3] * ux * ux).astype(np.float32)
    col = (coef[2] * vy + coef[5] * vy * vy).astype(np.float32)
    sky = row[None, :] + col[:, None]
    sky += np.float32(coef[4]) * (vy.astype(np.float32)[:, None] * ux.astype(np.float32)[None, :])
    uc, vc = (nx - 1) / 2 / nx - 0.5, (ny - 1) / 2 / ny - 0.5
    centre = float(np.array([1, uc, vc, uc * uc, uc * vc, vc * vc]) @ coef)
    return sky, centre


def _galaxy_inputs(spec: ExposureSpec, ccdnum: int, obj: ObjectTable, x: np.ndarray, y: np.ndarray,
                   flux: np.ndarray, switches: SimSwitches) -> GalaxyInputs:
    lp = local_psf(spec.psf, ccdnum, x, y, spec.distortion, variation=switches.psf_variation)
    jac = pixel_jacobian(ccdnum, x, y, spec.distortion)
    q = np.clip(np.asarray(obj.q, dtype=np.float64), 0.05, 1.0)
    e = (1.0 - q**2) / (1.0 + q**2)
    theta = np.deg2rad(90.0 - np.asarray(obj.pa_deg, dtype=np.float64) - spec.pointing.rotation_deg)
    e1, e2 = e * np.cos(2 * theta), e * np.sin(2 * theta)
    hlr = np.asarray(obj.hlr_arcsec, dtype=np.float64)
    s = shape_matrix(hlr, e1, e2)
    bmat = np.einsum("nki,nkl,nlj->nij", jac, s, jac)
    # PSF cells for the convolution kernels
    ncx = CCD_SHAPE[1] // PSF_CELL
    ncy = CCD_SHAPE[0] // PSF_CELL
    cx = np.clip(np.floor(x / PSF_CELL), 0, ncx - 1).astype(np.int64)
    cy = np.clip(np.floor(y / PSF_CELL), 0, ncy - 1).astype(np.int64)
    gx, gy = np.meshgrid((np.arange(ncx) + 0.5) * PSF_CELL - 0.5, (np.arange(ncy) + 0.5) * PSF_CELL - 0.5)
    cell_psf = local_psf(spec.psf, ccdnum, gx.ravel(), gy.ravel(), spec.distortion,
                         variation=switches.psf_variation)
    return GalaxyInputs(
        x=x, y=y, flux=flux, b=np.column_stack([bmat[:, 0, 0], bmat[:, 0, 1], bmat[:, 1, 1]]),
        n=np.asarray(obj.sersic_n, dtype=np.float64), m=lp.m, cell=cy * ncx + cx, cell_m=cell_psf.m,
        jac=jac, hlr_arcsec=hlr, e1=e1, e2=e2, psf_fwhm_arcsec=lp.fwhm_arcsec, psf_e1=lp.e1,
        psf_e2=lp.e2)


@dataclass(eq=False)
class _Electrons:
    """Stage 1-5 result of one CCD."""

    ccdnum: int
    adu: np.ndarray  # true bias-free ADU, float32 (4096, 2048)
    mask: np.ndarray
    truth_kw: dict
    state: tuple[Any, Any]  # (noise state, read-noise generator) for digitise
    timings: dict
    nonlinearity: dict[str, float] | None = None  # per-amp coefficient; None: linear


def _render_adu(spec: ExposureSpec, placement: ObjectPlacement, ccdnum: int, switches: SimSwitches,
                rng: np.random.Generator, calib: DetectorCalib,
                satellite: SatelliteTrail | None) -> _Electrons:
    t0 = time.perf_counter()
    ccd = get_ccd(ccdnum)
    cc = calib.ccds[ccdnum]
    noise_rng, cr_rng, read_rng, state_rng = rng.spawn(4)
    qe = cc.qe if switches.flat else 1.0
    zp = ccd_zeropoint(spec, qe)
    mask = np.zeros(CCD_SHAPE, dtype=np.uint8)
    dead = ccdnum in DEAD_CCDS
    centre = local_psf(spec.psf, ccdnum, np.array([1023.5]), np.array([2047.5]), spec.distortion,
                       variation=switches.psf_variation)
    timings: dict[str, float] = {}

    # objects on (or near) this CCD
    x, y = focal_to_pixel(ccdnum, placement.xmm, placement.ymm)
    obj = placement.objects
    flux_all = spec.exptime * 10 ** (-0.4 * (np.asarray(obj.mag, dtype=np.float64) - zp))
    margin = np.where(flux_all > _BRIGHT_E, _BRIGHT_MARGIN, _MARGIN)
    near = ((x > -margin) & (x < CCD_SHAPE[1] + margin) & (y > -margin) & (y < CCD_SHAPE[0] + margin))
    idx = np.flatnonzero(near)
    on = (x[idx] >= -0.5) & (x[idx] < CCD_SHAPE[1] - 0.5) & (y[idx] >= -0.5) & (y[idx] < CCD_SHAPE[0] - 0.5)
    truth_idx = idx[on]
    objects_truth = ObjectTruth(
        id=np.asarray(obj.id)[truth_idx], kind=np.asarray(obj.kind)[truth_idx],
        x=x[truth_idx], y=y[truth_idx], flux_e=flux_all[truth_idx],
        mag=np.asarray(obj.mag, dtype=np.float64)[truth_idx])

    sky, sky_centre = _sky_image(spec, ccdnum, zp, switches.sky_gradient)
    sky_mean = float(sky.mean(dtype=np.float64))
    electrons = sky
    t1 = time.perf_counter()
    timings["sky"] = t1 - t0
    n_cr = 0
    crossed = False
    if not dead:
        sub = obj.select(idx)
        xs, ys, fl = x[idx], y[idx], flux_all[idx]
        is_gal = (np.asarray(sub.hlr_arcsec) > 0) & (np.asarray(sub.kind) == OBJECT_KINDS["galaxy"])
        pts = np.flatnonzero(~is_gal)
        if pts.size:
            lp = local_psf(spec.psf, ccdnum, xs[pts], ys[pts], spec.distortion,
                           variation=switches.psf_variation)
            if spec.psf.profile == "moffat":
                add_moffat_stars(electrons, xs[pts], ys[pts], fl[pts], lp.m, lp.beta)
            else:
                add_profile_stars(electrons, xs[pts], ys[pts], fl[pts], lp.m, lp.beta,
                                  spec.psf.profile)
        gals = np.flatnonzero(is_gal)
        if gals.size:
            gi = _galaxy_inputs(spec, ccdnum, sub.select(gals), xs[gals], ys[gals], fl[gals], switches)
            add_galaxies(electrons, gi, spec.psf.beta, profile=spec.psf.profile)
        if switches.satellite and satellite is not None:
            crossed = add_satellite(electrons, mask, satellite, ccdnum, spec.distortion,
                                    fwhm_pix=float(centre.fwhm_pix[0]), beta=spec.psf.beta,
                                    pixel_scale_arcsec=float(np.sqrt(centre.pixel_area_arcsec2[0])))
        t2 = time.perf_counter()
        timings["objects"] = t2 - t1
        if switches.flat:
            electrons *= calib.flat(ccdnum)
    else:
        electrons[:] = 0.0
        t2 = time.perf_counter()
    if switches.bad_pixels:
        response, dy, dx, rate = calib.response_and_dark(ccdnum)
        for rs, cs, factor in response:
            electrons[rs, cs] *= np.float32(factor)
            mask[rs, cs] |= TRUTH_BAD
        if not dead:
            np.add.at(electrons, (dy, dx), (rate * spec.exptime).astype(np.float32))
        mask[dy, dx] |= TRUTH_HOT
    rn_col = np.empty(CCD_SHAPE[1], dtype=np.float32)
    gain_col = np.empty(CCD_SHAPE[1])
    for amp in ccd.amps.values():
        rn_col[amp.trimmed.x0:amp.trimmed.x1] = amp.read_noise_e
        gain_col[amp.trimmed.x0:amp.trimmed.x1] = amp.gain
    if switches.noise:
        apply_noise(electrons, noise_rng, rn_col)
    if switches.cosmic_rays:
        n_cr = add_cosmic_rays(electrons, cr_rng, spec.exptime, mask)
    lost = 0.0
    if switches.saturation:
        lost = bleed_columns(electrons, full_well_e(ccdnum), mask)
    to_adu(electrons, calib.bias_e(ccdnum) if switches.bias_overscan else None, gain_col)
    state = draw_readout_state(ccdnum, cc.bias_level_adu, state_rng, bias_overscan=switches.bias_overscan)
    timings["detector"] = time.perf_counter() - t2
    truth_kw = dict(
        ccdnum=ccdnum, objects=objects_truth, zeropoint=zp, qe=qe, sky_e_per_pixel=sky_centre,
        sky_e_mean=sky_mean, psf_fwhm_arcsec=float(centre.fwhm_arcsec[0]),
        psf_fwhm_pix=float(centre.fwhm_pix[0]), psf_e1=float(centre.e1[0]), psf_e2=float(centre.e2[0]),
        pixel_scale_arcsec=float(np.sqrt(centre.pixel_area_arcsec2[0])), mask=mask, n_cosmic_rays=n_cr,
        satellite=bool(crossed), bias_adu=dict(state.bias_adu), bleed_lost_e=lost, dead=dead)
    nonlin = dict(cc.nonlinearity) if switches.nonlinearity and cc.nonlinearity else None
    return _Electrons(ccdnum, electrons, mask, truth_kw, (state, read_rng), timings, nonlin)


def _finish(spec: ExposureSpec, e: _Electrons, switches: SimSwitches,
            sources: dict[int, np.ndarray] | None) -> RenderedCCD:
    t0 = time.perf_counter()
    xt = None
    missing: list[int] = []
    if switches.crosstalk:
        xt, missing = crosstalk_adu(e.ccdnum, sources if sources is not None else {e.ccdnum: e.adu})
    t1 = time.perf_counter()
    state, read_rng = e.state
    raw = digitise(e.adu, e.ccdnum, state, read_rng, crosstalk=xt, read_noise=switches.noise,
                   nonlinearity=e.nonlinearity)
    t2 = time.perf_counter()
    timings = dict(e.timings, crosstalk=t1 - t0, digitise=t2 - t1)
    truth = CCDTruth(crosstalk_missing=tuple(missing), **e.truth_kw)
    return RenderedCCD(e.ccdnum, raw, ccd_header(spec, e.ccdnum), truth, timings)


def _as_placement(spec: ExposureSpec, objects: ObjectTable | ObjectPlacement,
                  switches: SimSwitches) -> ObjectPlacement:
    return objects if isinstance(objects, ObjectPlacement) else place_objects(spec, objects, switches)


def render_ccd(spec: ExposureSpec, objects: ObjectTable | ObjectPlacement, ccdnum: int, *,
               switches: SimSwitches, rng: np.random.Generator, calib: DetectorCalib,
               satellite: SatelliteTrail | None = None,
               crosstalk_sources: dict[int, np.ndarray] | None = None) -> RenderedCCD:
    """Render one raw CCD with its truth.

    Parameters
    ----------
    spec : ExposureSpec
    objects : ObjectTable or ObjectPlacement
        The exposure's objects (all of them; those near the CCD are selected here).
    ccdnum : int
    switches : SimSwitches
    rng : numpy.random.Generator
        All randomness of this CCD (shot and read noise, cosmic rays, bias jitter and drift).
    calib : DetectorCalib
        Must hold ``ccdnum``.
    satellite : SatelliteTrail, optional
        The exposure's satellite trail (an exposure-level effect, see `render_exposure`); none
        is drawn when omitted.
    crosstalk_sources : dict[int, ndarray], optional
        Bias-free ADU images (trimmed) of other CCDs whose amplifiers leak into this one (see
        `render_exposure`). Without them only this CCD's own amplifier-to-amplifier crosstalk
        is added, and ``truth.crosstalk_missing`` names the skipped source CCDs (inter-CCD
        coefficients are ~3e-5, i.e. at most ~1.5 ADU ghosts of saturated stars).

    Returns
    -------
    RenderedCCD
    """
    placement = _as_placement(spec, objects, switches)
    e = _render_adu(spec, placement, ccdnum, switches, rng, calib, satellite)
    sources = dict(crosstalk_sources or {})
    sources[ccdnum] = e.adu
    return _finish(spec, e, switches, sources)


def _ccd_rng(seed: int, expnum: int, ccdnum: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(expnum), int(ccdnum), 1])


def render_exposure(spec: ExposureSpec, objects: ObjectTable, ccdnums: Sequence[int], *,
                    switches: SimSwitches, seed: int, calib: DetectorCalib,
                    crosstalk_neighbours: bool = True, workers: int = 1) -> list[RenderedCCD]:
    """Render the requested CCDs of one exposure, with crosstalk between them.

    All electron images are rendered first (the requested CCDs and, when
    ``crosstalk_neighbours``, the CCDs whose amplifiers leak into them), then crosstalk is
    computed for each requested CCD from the unmodified bias-free ADU images of its source CCDs,
    then each requested CCD is digitised. Peak memory is ~32 MB per rendered CCD (float32) plus
    ~26 MB per returned CCD (raw uint16 and truth mask): ~3.5 GB for all 62 CCDs.

    Parameters
    ----------
    spec : ExposureSpec
    objects : ObjectTable
        All objects of the exposure (positions at its epoch, magnitudes in its band).
    ccdnums : sequence of int
        CCDs to return, in this order.
    switches : SimSwitches
    seed : int
        Render seed. Each CCD's randomness comes from ``(seed, spec.expnum, ccdnum)`` and the
        satellite trail from ``(seed, spec.expnum)``, so a CCD renders identically whichever
        other CCDs are requested and however many workers run.
    calib : DetectorCalib
        Must hold every requested CCD (and the crosstalk neighbours, else those are skipped and
        recorded in ``truth.crosstalk_missing``).
    crosstalk_neighbours : bool
        Also render the source CCDs of crosstalk that are not requested (exact crosstalk); False
        skips their terms.
    workers : int
        Threads rendering CCDs in parallel (the numba kernels and numpy release the GIL).

    Returns
    -------
    list of RenderedCCD
    """
    ccdnums = [int(c) for c in ccdnums]
    if not switches.nonlinearity and any(any(calib.ccds[c].nonlinearity.values())
                                         for c in ccdnums if c in calib.ccds):
        log.warning("exposure %d: SimSwitches.nonlinearity is off but the DetectorCalib has "
                    "non-linear amplifiers: its linearity table does not describe these linear "
                    "data (make the camera with make_detector_calib(..., nonlinearity=False))",
                    spec.expnum)
    placement = place_objects(spec, objects, switches)
    sat = None
    if switches.satellite:
        sat = satellite_trail(np.random.default_rng([int(seed), int(spec.expnum), 2]), spec.zeropoint)
    needed = list(ccdnums)
    if switches.crosstalk and crosstalk_neighbours:
        extra = sorted({s for c in ccdnums for s in source_ccds(c)} - set(ccdnums))
        extra = [c for c in extra if c in calib.ccds]
        needed += extra

    def stage1(c: int) -> _Electrons:
        return _render_adu(spec, placement, c, switches, _ccd_rng(seed, spec.expnum, c), calib, sat)

    t0 = time.perf_counter()
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            stages = dict(zip(needed, pool.map(stage1, needed)))
    else:
        stages = {c: stage1(c) for c in needed}
    adu = {c: s.adu for c, s in stages.items()}
    t1 = time.perf_counter()

    def stage2(c: int) -> RenderedCCD:
        return _finish(spec, stages[c], switches, adu)

    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            out = list(pool.map(stage2, ccdnums))
    else:
        out = [stage2(c) for c in ccdnums]
    log.info("rendered exposure %d: %d CCDs (+%d for crosstalk) in %.1f s + %.1f s",
             spec.expnum, len(ccdnums), len(needed) - len(ccdnums), t1 - t0, time.perf_counter() - t1)
    return out
