"""Observing plan of a simulated GW follow-up: template epochs and the search night.

`plan_night` returns one `ExposureSpec` per exposure, templates first (earlier nights, weeks to
years before the event), then the search exposures on the night after the event. Conditions
follow DECam (numbers in the constants below):

* exposure time 90 s (search and templates), expnums DES-like (~880000 on the event night in
  August 2019, about 300 exposures per day earlier), strictly increasing in time;
* seeing (FWHM at the field centre) 0.8"-2.0"; with two or more templates, one is better and one
  worse than the search exposure; Moffat beta 2.5-3.5;
* PSF field variation: FWHM grows by 2-6 % per deg^2 of r^2, tilt up to 2 %/deg, ellipticity
  ~0.02 at the centre plus an astigmatism-like pattern of amplitude 0.02-0.04 at 1 deg;
* sky brightness: DECam dark sky (g 22.0, r 21.2, i 20.5, z 19.6, Y 18.0 mag/arcsec^2) brightened
  by the moon (up to g 2.3, r 1.5, i 1.0, z 0.6, Y 0.3 mag at full moon), +-0.1 mag;
* zeropoint (1 e-/s, AB): g 26.5, r 26.6, i 26.4, z 26.0, Y 24.8 at airmass 1 (observed DES
  values; the 2012 design prediction of H. Lin was ~0.3-0.7 mag higher), minus extinction
  k = 0.20, 0.10, 0.08, 0.08, 0.07 mag/airmass (g..Y) times (airmass - 1), minus a
  transparency loss (15 % of exposures lose 0.05-0.4 mag to cloud, the rest 0-0.03);
* airmass 1.0-1.6;
* pointings: the first search exposure at the field centre, further search exposures dithered
  by 1-4 arcmin, templates by 10-25 arcmin (so a CCD overlaps its counterpart only partially);
  true sky rotation ~N(0, 0.005) deg; the header pointing is off by 2-10 arcsec and 0.005-0.05
  deg (none when ``SimSwitches.wcs_error`` is off);
* the optical distortion of each exposure is `DECAM_DISTORTION` with k2 and k4 perturbed by 1 %
  (rms) and the plate scale by 2e-5.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ..instrument import CCD_SHAPE, DECAM_DISTORTION, DEFAULT_CCDNUMS, Distortion, Pointing, sky_to_pixel
from ..instrument.optics import ccd_corners_sky, pixel_to_sky, tangent_to_sky
from ..util.sphere import angular_separation_deg
from .model import ExposureSpec, PSFField, SimSwitches
from .scene import DEFAULT_SEARCH_MJD

__all__ = [
    "DARK_SKY_MAG",
    "MOON_BRIGHTENING_MAG",
    "ZEROPOINT_AIRMASS1",
    "EXTINCTION_PER_AIRMASS",
    "SurveyConfig",
    "plan_night",
    "CCDFootprint",
    "field_radius_deg",
    "overlapping_ccds",
    "ccd_overlap_fraction",
]

#: Dark-sky brightness at zenith (mag/arcsec^2, AB).
DARK_SKY_MAG: dict[str, float] = {"g": 22.0, "r": 21.2, "i": 20.5, "z": 19.6, "Y": 18.0}
#: Sky brightening at full moon (mag).
MOON_BRIGHTENING_MAG: dict[str, float] = {"g": 2.3, "r": 1.5, "i": 1.0, "z": 0.6, "Y": 0.3}
#: Zeropoint for 1 e-/s at airmass 1 (AB mag).
ZEROPOINT_AIRMASS1: dict[str, float] = {"g": 26.5, "r": 26.6, "i": 26.4, "z": 26.0, "Y": 24.8}
#: Atmospheric extinction (mag per airmass).
EXTINCTION_PER_AIRMASS: dict[str, float] = {"g": 0.20, "r": 0.10, "i": 0.08, "z": 0.08, "Y": 0.07}


@dataclass(frozen=True)
class SurveyConfig:
    """Observing parameters of `plan_night` (units in the names).

    Attributes
    ----------
    search_mjd : float
        Start of the first search exposure (MJD).
    exptime_s, template_exptime_s : float
        Exposure times (s).
    overhead_s : float
        Readout + slew between consecutive search exposures (s).
    template_age_days : (float, float)
        Range of template epochs before the search night (days).
    template_dither_arcmin, search_dither_arcmin : (float, float)
        Range of the pointing offsets from the field centre (arcmin).
    seeing_arcsec : (float, float)
        FWHM range at the field centre (arcsec).
    airmass : (float, float)
    header_offset_arcsec : (float, float)
        Range of the header pointing error (arcsec).
    header_rotation_deg : (float, float)
        Range of the magnitude of the header rotation error (deg).
    cloud_probability : float
        Probability that an exposure loses 0.05-0.4 mag to cloud.
    expnum_at_search : int
        Expnum of the first search exposure.
    exposures_per_day : float
        Rate at which expnums advanced in earlier years.
    psf_profile : {"moffat", "kolmogorov"}
        Radial profile of every exposure's PSF (`desgw.sim.model.PSFField.profile`).
    psf_beta : (float, float)
        Range of the Moffat index (drawn per exposure).
    psf_fwhm_r2 : (float, float)
        Range of the fractional FWHM change per deg**2 of field radius squared.
    psf_fwhm_tilt : float
        Largest fractional FWHM change per degree along each axis (focus tilt); 0.2 makes the
        FWHM vary by up to ~6 % across a CCD (0.3 deg long).
    psf_e_astig : (float, float)
        Range of the magnitude of the astigmatism-like ellipticity pattern (at 1 deg).
    """

    search_mjd: float = DEFAULT_SEARCH_MJD
    exptime_s: float = 90.0
    template_exptime_s: float = 90.0
    overhead_s: float = 30.0
    template_age_days: tuple[float, float] = (30.0, 1000.0)
    template_dither_arcmin: tuple[float, float] = (10.0, 25.0)
    search_dither_arcmin: tuple[float, float] = (1.0, 4.0)
    seeing_arcsec: tuple[float, float] = (0.8, 2.0)
    airmass: tuple[float, float] = (1.0, 1.6)
    header_offset_arcsec: tuple[float, float] = (2.0, 10.0)
    header_rotation_deg: tuple[float, float] = (0.005, 0.05)
    cloud_probability: float = 0.15
    expnum_at_search: int = 880_001
    exposures_per_day: float = 300.0
    psf_profile: str = "moffat"
    psf_beta: tuple[float, float] = (2.5, 3.5)
    psf_fwhm_r2: tuple[float, float] = (0.02, 0.06)
    psf_fwhm_tilt: float = 0.02
    psf_e_astig: tuple[float, float] = (0.02, 0.04)


def _offset_pointing(center: Pointing, r_arcmin: float, angle_rad: float, rotation_deg: float) -> Pointing:
    xi = r_arcmin / 60.0 * np.sin(angle_rad)
    eta = r_arcmin / 60.0 * np.cos(angle_rad)
    ra, dec = tangent_to_sky(np.array([xi]), np.array([eta]), Pointing(center.ra_deg, center.dec_deg))
    return Pointing(float(ra[0]), float(dec[0]), float(rotation_deg))


def _seeings(rng: np.random.Generator, n_templates: int, n_search: int, lo: float, hi: float
             ) -> tuple[list[float], list[float]]:
    s0 = float(rng.uniform(max(lo + 0.15, 0.95), min(hi - 0.3, 1.4)))
    search = [s0] + [float(np.clip(s0 * rng.uniform(0.93, 1.07), lo, hi)) for _ in range(n_search - 1)]
    temps: list[float] = []
    for k in range(n_templates):
        if k == 0:
            temps.append(float(rng.uniform(lo, s0 - 0.05)))
        elif k == 1:
            temps.append(float(rng.uniform(s0 + 0.1, hi)))
        else:
            temps.append(float(rng.uniform(lo, hi)))
    order = rng.permutation(n_templates)
    return [temps[i] for i in order], search


def _psf(rng: np.random.Generator, fwhm: float, vary: bool, cfg: SurveyConfig) -> PSFField:
    e1, e2 = np.clip(rng.normal(0.0, 0.02, 2), -0.05, 0.05)
    if not vary:
        return PSFField(fwhm_arcsec=fwhm, beta=float(rng.uniform(*cfg.psf_beta)), e1=float(e1),
                        e2=float(e2), profile=cfg.psf_profile)
    t = cfg.psf_fwhm_tilt
    return PSFField(
        fwhm_arcsec=fwhm, beta=float(rng.uniform(*cfg.psf_beta)),
        fwhm_r2=float(rng.uniform(*cfg.psf_fwhm_r2)),
        fwhm_tilt=(float(rng.uniform(-t, t)), float(rng.uniform(-t, t))),
        e1=float(e1), e2=float(e2),
        e_astig=float(rng.uniform(*cfg.psf_e_astig) * rng.choice([-1.0, 1.0])),
        profile=cfg.psf_profile,
    )


def plan_night(*, seed: int, band: str = "r", n_templates: int = 2, n_search: int = 1,
               center: tuple[float, float] = (30.0, -30.0), switches: SimSwitches = SimSwitches(),
               config: SurveyConfig = SurveyConfig()) -> list[ExposureSpec]:
    """Plan the template and search exposures of one simulated GW follow-up.

    Parameters
    ----------
    seed : int
        Random seed (same arguments, same plan).
    band : str
        g, r, i, z or Y (all exposures in one band, as the difference imaging needs).
    n_templates : int
        Template exposures, each on a different earlier night (>= 0).
    n_search : int
        Search exposures on the event night (>= 1).
    center : (float, float)
        Field centre (ra, dec) in degrees.
    switches : SimSwitches
        ``dither``, ``wcs_error``, ``psf_variation`` and ``sky_gradient`` are used.
    config : SurveyConfig

    Returns
    -------
    list of ExposureSpec
        Templates in time order, then the search exposures; expnums strictly increasing.
    """
    if band not in DARK_SKY_MAG:
        raise ValueError(f"unknown band {band!r}; expected one of {tuple(DARK_SKY_MAG)}")
    if n_templates < 0 or n_search < 1:
        raise ValueError(f"need n_templates >= 0 and n_search >= 1, got {n_templates}, {n_search}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 4242]))
    cfg = config
    c = Pointing(float(center[0]), float(center[1]), 0.0)

    # epochs: templates on distinct earlier nights, search exposures back to back
    lo_age, hi_age = cfg.template_age_days
    night0 = np.floor(cfg.search_mjd)
    ages = np.sort(rng.choice(np.arange(int(np.ceil(lo_age)), int(hi_age) + 1), size=n_templates,
                              replace=False))[::-1] if n_templates else np.zeros(0, dtype=int)
    t_mjd = [float(night0 - a + rng.uniform(0.02, 0.35)) for a in ages]
    step = (cfg.exptime_s + cfg.overhead_s) / 86400.0
    s_mjd = [cfg.search_mjd + k * step for k in range(n_search)]

    t_seeing, s_seeing = _seeings(rng, n_templates, n_search, *cfg.seeing_arcsec)

    # one moon state per night (templates: own nights; search: shared)
    def moon(r: np.random.Generator) -> float:
        return float(r.uniform(0.0, 1.0) ** 2 if r.uniform() < 0.6 else 0.0)

    search_moon = moon(rng)
    specs: list[ExposureSpec] = []
    search_rot = float(rng.normal(0.0, 0.005))
    expnums_t = [int(round(cfg.expnum_at_search - (cfg.search_mjd - m) * cfg.exposures_per_day
                           + rng.integers(-50, 50))) for m in t_mjd]
    for k in range(1, len(expnums_t)):  # templates are time-ordered and >= 30 days apart
        expnums_t[k] = max(expnums_t[k], expnums_t[k - 1] + 1)

    rows = [(True, m, s, e) for m, s, e in zip(t_mjd, t_seeing, expnums_t)] + \
        [(False, m, s, cfg.expnum_at_search + k) for k, (m, s) in enumerate(zip(s_mjd, s_seeing))]
    for idx, (is_t, mjd, fwhm, expnum) in enumerate(rows):
        k_search = idx - n_templates
        if not switches.dither or (not is_t and k_search == 0):
            pointing = Pointing(c.ra_deg, c.dec_deg, search_rot)
        else:
            rng_d = cfg.template_dither_arcmin if is_t else cfg.search_dither_arcmin
            pointing = _offset_pointing(c, float(rng.uniform(*rng_d)), float(rng.uniform(0, 2 * np.pi)),
                                        float(rng.normal(0.0, 0.005)))
        if switches.wcs_error:
            h_off = float(rng.uniform(*cfg.header_offset_arcsec)) / 60.0
            h_rot = float(rng.uniform(*cfg.header_rotation_deg) * rng.choice([-1.0, 1.0]))
            header = _offset_pointing(pointing, h_off, float(rng.uniform(0, 2 * np.pi)),
                                      pointing.rotation_deg + h_rot)
        else:
            header = pointing
        airmass = float(rng.uniform(*cfg.airmass))
        moon_f = moon(rng) if is_t else search_moon
        sky = DARK_SKY_MAG[band] - MOON_BRIGHTENING_MAG[band] * moon_f + float(rng.normal(0.0, 0.1))
        cloud = float(rng.uniform(0.05, 0.4)) if rng.uniform() < cfg.cloud_probability \
            else float(rng.uniform(0.0, 0.03))
        zp = ZEROPOINT_AIRMASS1[band] - EXTINCTION_PER_AIRMASS[band] * (airmass - 1.0) - cloud
        grad = (float(rng.uniform(-0.03, 0.03)), float(rng.uniform(-0.03, 0.03))) if switches.sky_gradient \
            else (0.0, 0.0)
        d = DECAM_DISTORTION
        dist = Distortion(scale_deg_per_mm=d.scale_deg_per_mm * (1.0 + float(rng.normal(0.0, 2e-5))),
                          k2=d.k2 * (1.0 + float(rng.normal(0.0, 0.01))),
                          k4=d.k4 * (1.0 + float(rng.normal(0.0, 0.01))))
        specs.append(ExposureSpec(
            expnum=int(expnum), band=band, mjd=float(mjd),
            exptime=cfg.template_exptime_s if is_t else cfg.exptime_s, airmass=airmass,
            pointing=pointing, header_pointing=header, psf=_psf(rng, fwhm, switches.psf_variation, cfg),
            sky_mag_arcsec2=float(sky), sky_gradient=grad, zeropoint=float(zp), distortion=dist,
            is_template=is_t,
            object_name=f"DESGW sim {'template' if is_t else 'search'} {center[0]:.3f} {center[1]:+.3f}",
        ))
    return specs


@dataclass(frozen=True)
class CCDFootprint:
    """Where a set of exposures sees the sky: a picklable ``(ra, dec) -> bool`` predicate.

    A position is inside when, for EVERY exposure, it falls on at least one of ``ccdnums`` at
    least ``margin_pix`` pixels from the CCD edges.
    """

    specs: tuple[ExposureSpec, ...]
    ccdnums: tuple[int, ...]
    margin_pix: float = 64.0

    def __call__(self, ra: NDArray[np.float64], dec: NDArray[np.float64]) -> NDArray[np.bool_]:
        ra = np.asarray(ra, dtype=np.float64)
        dec = np.asarray(dec, dtype=np.float64)
        ok = np.ones(ra.shape, dtype=bool)
        ny, nx = CCD_SHAPE
        m = self.margin_pix
        for spec in self.specs:
            on_any = np.zeros(ra.shape, dtype=bool)
            for ccd in self.ccdnums:
                x, y = sky_to_pixel(ccd, ra, dec, spec.pointing, spec.distortion)
                on_any |= (x >= m) & (x <= nx - 1 - m) & (y >= m) & (y <= ny - 1 - m)
            ok &= on_any
        return ok


def field_radius_deg(specs: Sequence[ExposureSpec], ccds_per_spec: Sequence[Sequence[int]],
                     center: tuple[float, float], margin_deg: float = 0.03) -> float:
    """Radius (deg) about ``center`` of a circle that holds every listed CCD of every exposure.

    ``ccds_per_spec[k]`` are the CCDs rendered for ``specs[k]``; ``margin_deg`` is added.
    """
    r = 0.0
    for spec, ccds in zip(specs, ccds_per_spec):
        for ccd in ccds:
            ra, dec = ccd_corners_sky(ccd, spec.pointing, spec.distortion)
            r = max(r, float(np.max(angular_separation_deg(ra, dec, center[0], center[1]))))
    return r + margin_deg


def _ccd_samples(ccdnum: int, spec: ExposureSpec, n: int = 9
                 ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    ny, nx = CCD_SHAPE
    xs, ys = np.meshgrid(np.linspace(0, nx - 1, n), np.linspace(0, ny - 1, 2 * n))
    return pixel_to_sky(ccdnum, xs.ravel(), ys.ravel(), spec.pointing, spec.distortion)


def ccd_overlap_fraction(spec_a: ExposureSpec, ccd_a: int, spec_b: ExposureSpec, ccds_b: Sequence[int],
                         n: int = 40) -> float:
    """Fraction of CCD ``ccd_a`` of exposure A that CCDs ``ccds_b`` of exposure B cover (0-1).

    Estimated on an ``n x 2n`` grid of points over CCD A.
    """
    ra, dec = _ccd_samples(ccd_a, spec_a, n)
    ny, nx = CCD_SHAPE
    hit = np.zeros(ra.shape, dtype=bool)
    for ccd in ccds_b:
        x, y = sky_to_pixel(ccd, ra, dec, spec_b.pointing, spec_b.distortion)
        hit |= (x >= -0.5) & (x <= nx - 0.5) & (y >= -0.5) & (y <= ny - 0.5)
    return float(hit.mean())


def overlapping_ccds(target: ExposureSpec, target_ccds: Sequence[int], other: ExposureSpec,
                     candidates: Sequence[int] = DEFAULT_CCDNUMS) -> list[int]:
    """CCDs of exposure ``other`` (among ``candidates``) that overlap any of ``target_ccds``.

    Tested on a 12 x 24 grid of points over each CCD, both ways (a point of one CCD on the
    other), so overlaps narrower than ~170 pixels at a corner can be missed.
    """
    ny, nx = CCD_SHAPE

    def inside(ccd: int, spec: ExposureSpec, ra: np.ndarray, dec: np.ndarray) -> bool:
        x, y = sky_to_pixel(ccd, ra, dec, spec.pointing, spec.distortion)
        return bool(np.any((x >= -0.5) & (x <= nx - 0.5) & (y >= -0.5) & (y <= ny - 0.5)))

    tgt = [_ccd_samples(ccd, target, 12) for ccd in target_ccds]
    ra_a = np.concatenate([t[0] for t in tgt])
    dec_a = np.concatenate([t[1] for t in tgt])
    out = []
    for ccd in candidates:
        if inside(ccd, other, ra_a, dec_a):
            out.append(int(ccd))
            continue
        ra_b, dec_b = _ccd_samples(ccd, other, 12)
        if any(inside(t, target, ra_b, dec_b) for t in target_ccds):
            out.append(int(ccd))
    return out
