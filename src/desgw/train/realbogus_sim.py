"""Labelled real/bogus candidates from synthetic difference images (training and validation).

Each *scene* is a background-subtracted search/template pair on a ``shape`` grid drawn with the
truth known pixel by pixel, run through the real difference-imaging code
(:func:`desgw.diff.subtract.subtract`, :func:`desgw.diff.detect.detect_transients`,
:func:`desgw.diff.measure.measure_candidates`, :func:`desgw.diff.stamps.cutout_stamps`), and every
detection is labelled from the truth.

Scene content (random per scene, from one seed):

* PSFs: elliptical Moffat (:class:`~desgw.diff.zogy_synth.MoffatPSFField`), search FWHM 3-7.5 px
  (0.8-2.0 arcsec at 0.263 arcsec/px), template FWHM 0.6-1.25 x that, beta 2.5-4.5. The PSFs
  handed to the subtraction are *models*: the true ones with FWHM, beta and ellipticity errors
  (a per-scene quality factor), so bright stars leave PSF-mismatch residuals.
* Stars (both images; power-law fluxes up to 3e7 e-), saturated at a full well of 1.3e5 e-
  with the excess charge bled along the column and the saturated pixels masked ``SAT``.
* Galaxies (both images): elliptical exponential / de Vaucouleurs-like profiles convolved with
  each PSF.
* A registration error of the template (none in half of the scenes, else 0.05-0.5 px).
* Cosmic rays (:func:`desgw.sim.detector.add_cosmic_rays`, 30-200 s of exposure) in both images;
  in half of the scenes they are masked by :func:`desgw.se.cosmics.find_cosmic_rays` as the SE
  step does, in the others left unmasked (the masking failing).
* Unmasked hot pixels and bad-column segments, a faint satellite trail in some scenes, a
  template coverage edge with a band of partially covered pixels in some scenes.

Reals (label 1): point sources injected with :func:`desgw.diff.fakes.inject_fakes` at a target
S/N log-uniform in 4-150, hostless or on galaxies (offset ~ the half-light radius), as
autoScan's fakes; 80 % brighten (injected in the search), 20 % fade (injected in the template).
Variable stars are not among the reals: flux changes on stars are left to the star vetoes.
A detection is real when it lies within
``max(1.5, 0.3 FWHM)`` px of an injected source of its sign; other detections within 2.5 FWHM of
an injected source are ambiguous (parts of its footprint) and left out; all other detections are
bogus (label 0), their ``kind`` named after the nearest artefact truth.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table
from scipy import signal
from scipy.spatial import cKDTree

from desgw.diff.detect import detect_transients
from desgw.diff.fakes import inject_fakes
from desgw.diff.measure import measure_candidates
from desgw.diff.stamps import Stamps, cutout_stamps
from desgw.diff.subtract import SubtractConfig, subtract
from desgw.diff.zogy_synth import MoffatPSFField, add_sources
from desgw.instrument.camera import CCD_SHAPE
from desgw.se import maskbits
import itertools

__all__ = [
    "CCD_AREA_PX",
    "KINDS",
    "REAL_KINDS",
    "SceneCandidates",
    "TrainingSet",
    "auc",
    "make_training_set",
    "roc_summary",
    "simulate_scene",
    "stack_scenes",
]

log = logging.getLogger(__name__)

#: Pixels of one DECam CCD (4096 x 2048), the unit of "per CCD" rates.
CCD_AREA_PX: int = CCD_SHAPE[0] * CCD_SHAPE[1]

#: Candidate kinds (index = code in :attr:`TrainingSet.kind`).
KINDS: tuple[str, ...] = (
    "real_hostless", "real_galaxy",                         # reals
    "cosmic_ray", "hot_pixel", "bad_column", "satellite", "saturated_star", "star_residual",
    "dipole", "galaxy_residual", "edge", "noise",            # bogus
)
#: Kinds with label 1.
REAL_KINDS: tuple[str, ...] = KINDS[:2]

_FULL_WELL = 1.3e5
_ZP_SEARCH = 30.0


@dataclass(frozen=True)
class SceneCandidates:
    """The labelled candidates of one scene.

    Attributes
    ----------
    candidates : astropy.table.Table
        :func:`desgw.diff.measure.measure_candidates` rows (ambiguous ones removed).
    stamps : Stamps
        Their 51 x 51 search/template/diff stamps.
    label : numpy.ndarray
        (n,) int8, 1 real, 0 bogus.
    kind : numpy.ndarray
        (n,) int8 index into :data:`KINDS`.
    true_snr : numpy.ndarray
        (n,) the injected target S/N of reals (NaN for bogus).
    area_px : int
        Pixels of the scene.
    meta : dict
        Scene parameters.
    """

    candidates: Table
    stamps: Stamps
    label: np.ndarray
    kind: np.ndarray
    true_snr: np.ndarray
    area_px: int
    meta: dict = field(default_factory=dict)


def _psf(rng: np.random.Generator, fwhm: float, shape: tuple[int, int]) -> MoffatPSFField:
    return MoffatPSFField(fwhm=float(fwhm), beta=float(rng.uniform(2.5, 4.5)),
                          e1=float(rng.normal(0, 0.04)), e2=float(rng.normal(0, 0.04)),
                          image_shape=shape, stamp=int(2 * np.ceil(4 * fwhm) + 1), oversample=3)


def _model_of(rng: np.random.Generator, p: MoffatPSFField, quality: float) -> MoffatPSFField:
    """A PSF *model* of ``p`` with errors scaled by ``quality`` (0 perfect, 1 poor)."""
    return MoffatPSFField(fwhm=p.fwhm * (1 + rng.normal(0, 0.025 * quality)),
                          beta=max(p.beta + rng.normal(0, 0.3 * quality), 1.8),
                          e1=p.e1 + rng.normal(0, 0.015 * quality),
                          e2=p.e2 + rng.normal(0, 0.015 * quality),
                          image_shape=p.image_shape, stamp=p.stamp, oversample=p.oversample)


def _galaxy_image(rng: np.random.Generator, shape: tuple[int, int], x: np.ndarray,
                  y: np.ndarray, flux: np.ndarray, hlr: np.ndarray, q: np.ndarray,
                  pa: np.ndarray, n_sersic: np.ndarray) -> np.ndarray:
    """Unconvolved galaxies (2 x 2 sub-sampled pixels), float64 (ny, nx)."""
    ny, nx = shape
    img = np.zeros(shape)
    sub = np.array([-0.25, 0.25])
    for xi, yi, fi, ri, qi, pi, ni in zip(x, y, flux, hlr, q, pa, n_sersic):
        h = int(np.ceil(5 * ri / np.sqrt(qi))) + 1
        cx, cy = int(round(xi)), int(round(yi))
        y0, y1, x0, x1 = max(cy - h, 0), min(cy + h + 1, ny), max(cx - h, 0), min(cx + h + 1, nx)
        if y1 <= y0 or x1 <= x0:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(float)
        u = (xx[..., None, None] + sub[None, None, None, :]) - xi
        v = (yy[..., None, None] + sub[None, None, :, None]) - yi
        c, s = np.cos(pi), np.sin(pi)
        a = (c * u + s * v) * np.sqrt(qi)
        b = (-s * u + c * v) / np.sqrt(qi)
        r = np.hypot(a, b) / ri
        bn = 1.678 if ni == 1 else 7.669
        prof = np.exp(-bn * (r ** (1.0 / ni))) * (r < 5)
        prof = prof.mean(axis=(2, 3))
        tot = prof.sum()
        if tot > 0:
            img[y0:y1, x0:x1] += fi * prof / tot
    return img


def _saturate(img: np.ndarray, mask: np.ndarray, full_well: float) -> None:
    """Clip at ``full_well``, bleed the excess along columns, mask SAT (in place)."""
    over = img > full_well
    if not over.any():
        return
    ny = img.shape[0]
    for col in np.unique(np.nonzero(over)[1]):
        c = img[:, col]
        rows = np.nonzero(c > full_well)[0]
        excess = float((c[rows] - full_well).sum())
        c[rows] = full_well
        lo, hi = rows.min(), rows.max()
        while excess > 0 and (lo > 0 or hi < ny - 1):
            for r in (lo - 1, hi + 1):
                if 0 <= r < ny and excess > 0:
                    room = max(full_well - c[r], 0.0)
                    add = min(room, excess / 2 if excess > 2 * room else excess)
                    c[r] += add
                    excess -= add
            lo, hi = max(lo - 1, 0), min(hi + 1, ny - 1)
        img[:, col] = c
    mask[img >= full_well * 0.999] |= maskbits.SAT


def _trail(shape: tuple[int, int], rng: np.random.Generator, fwhm: float,
           peak: float) -> np.ndarray:
    """A straight trail segment of Gaussian cross-section (float32 image)."""
    ny, nx = shape
    x0, y0 = rng.uniform(0, nx), rng.uniform(0, ny)
    phi = rng.uniform(0, np.pi)
    half_len = rng.uniform(100, max(nx, ny))
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    ux, uy = np.cos(phi), np.sin(phi)
    along = (xx - x0) * ux + (yy - y0) * uy
    across = -(xx - x0) * uy + (yy - y0) * ux
    sig = fwhm / 2.3548
    prof = peak * np.exp(-0.5 * (across / sig) ** 2) * (np.abs(along) < half_len)
    return prof.astype(np.float32)


def _target_flux(snr: np.ndarray, var_s: float, var_t_scaled: float, psf_s: np.ndarray,
                 psf_t: np.ndarray) -> np.ndarray:
    """Search-scale flux (e-) giving a point-source S/N ``snr`` (sky + source noise)."""
    sig2 = var_s / float((psf_s**2).sum()) + var_t_scaled / float((psf_t**2).sum())
    s2 = snr**2
    return 0.5 * (s2 + np.sqrt(s2 * s2 + 4 * s2 * sig2))


def simulate_scene(seed: int, shape: tuple[int, int] = (1024, 1024), *,
                   n_reals: int = 60, stamp_size: int = 51,
                   threshold_sigma: float = 5.0) -> SceneCandidates:
    """Draw one scene, subtract, detect, measure, cut stamps and label the detections.

    Parameters
    ----------
    seed : int
        Random seed (the scene is a pure function of ``seed``, ``shape`` and ``n_reals``).
    shape : tuple[int, int]
        (ny, nx) pixels.
    n_reals : int
        Injected real sources.
    stamp_size : int
        Stamp side (px).
    threshold_sigma : float
        Detection threshold on ``|S_corr|``.

    Returns
    -------
    SceneCandidates
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    area = ny * nx
    fwhm_s = rng.uniform(3.0, 7.5)
    fwhm_t = fwhm_s * rng.uniform(0.6, 1.25)
    psf_s, psf_t = _psf(rng, fwhm_s, shape), _psf(rng, fwhm_t, shape)
    quality = rng.uniform(0.0, 1.0)
    model_s, model_t = _model_of(rng, psf_s, quality), _model_of(rng, psf_t, quality)
    sky_s, sky_t = rng.uniform(300, 3000), rng.uniform(100, 2000)
    rn = 7.0
    ratio = rng.uniform(0.5, 2.0)  # template e- per search e-
    zp_t = _ZP_SEARCH + 2.5 * np.log10(ratio)
    offset = (0.0, 0.0)
    if rng.random() < 0.5:
        amp, ang = rng.uniform(0.05, 0.5), rng.uniform(0, 2 * np.pi)
        offset = (amp * np.cos(ang), amp * np.sin(ang))
    astro_sigma = 0.0 if rng.random() < 0.5 else rng.uniform(0.02, 0.1)

    # Stars: N(>F) ~ F^-0.6 between 2e3 and 3e7 e-.
    n_star = rng.poisson(rng.uniform(500, 4000) * area / CCD_AREA_PX)
    fmin, fmax, slope = 2e3, 3e7, 0.6
    u = rng.random(n_star)
    sflux = fmin * (1 - u * (1 - (fmax / fmin) ** -slope)) ** (-1 / slope)
    sx, sy = rng.uniform(-10, nx + 10, n_star), rng.uniform(-10, ny + 10, n_star)
    # Galaxies.
    n_gal = rng.poisson(rng.uniform(1500, 4000) * area / CCD_AREA_PX)
    gx, gy = rng.uniform(0, nx, n_gal), rng.uniform(0, ny, n_gal)
    gflux = np.exp(rng.uniform(np.log(2e3), np.log(3e5), n_gal))
    ghlr = np.exp(rng.normal(np.log(3.0), 0.5, n_gal)).clip(1.0, 15.0)
    gq = rng.uniform(0.3, 1.0, n_gal)
    gpa = rng.uniform(0, np.pi, n_gal)
    gn = np.where(rng.random(n_gal) < 0.7, 1, 4)
    gal = _galaxy_image(rng, shape, gx, gy, gflux, ghlr, gq, gpa, gn)

    kern_s = psf_s.render(nx / 2, ny / 2)
    kern_t = psf_t.render(nx / 2, ny / 2, dx=offset[0], dy=offset[1])
    search = signal.fftconvolve(gal, kern_s, mode="same").astype(np.float32)
    template = (ratio * signal.fftconvolve(gal, kern_t, mode="same")).astype(np.float32)
    add_sources(search, psf_s, sx, sy, sflux)
    add_sources(template, psf_t, sx + offset[0], sy + offset[1], sflux * ratio)

    # Reals.
    n_r = int(n_reals)
    which = rng.choice(2, n_r, p=[0.45, 0.55])  # hostless, on a galaxy
    rx, ry = rng.uniform(25, nx - 25, n_r), rng.uniform(25, ny - 25, n_r)
    on_gal = np.nonzero(which == 1)[0]
    if n_gal and on_gal.size:
        g = rng.integers(0, n_gal, on_gal.size)
        r_off = ghlr[g] * np.abs(rng.normal(0, 1, on_gal.size))
        a_off = rng.uniform(0, 2 * np.pi, on_gal.size)
        rx[on_gal] = gx[g] + r_off * np.cos(a_off)
        ry[on_gal] = gy[g] + r_off * np.sin(a_off)
    rx, ry = rx.clip(3, nx - 4), ry.clip(3, ny - 4)
    fading = rng.random(n_r) < 0.2
    snr = np.exp(rng.uniform(np.log(4.0), np.log(150.0), n_r))
    ps_c, pt_c = psf_s.render(nx / 2, ny / 2), psf_t.render(nx / 2, ny / 2)
    var_s = sky_s + rn**2
    var_t_scaled = (sky_t + rn**2) / ratio**2
    rflux = _target_flux(snr, var_s, var_t_scaled, ps_c, pt_c)
    for img_name, sel, psf, mult in (("s", ~fading, psf_s, 1.0), ("t", fading, psf_t, ratio)):
        if not sel.any():
            continue
        fk = Table({"x": rx[sel], "y": ry[sel],
                    "mag": -2.5 * np.log10(rflux[sel] * mult) + _ZP_SEARCH})
        if img_name == "s":
            search = inject_fakes(search, None, psf, fk, zp=_ZP_SEARCH, add_noise=False).image
        else:
            template = inject_fakes(template, None, psf, fk, zp=_ZP_SEARCH,
                                    add_noise=False).image

    # Saturation and noise.
    mask_s = np.zeros(shape, np.int32)
    mask_t = np.zeros(shape, np.int32)
    sat_s = search.astype(np.float64) + sky_s
    _saturate(sat_s, mask_s, _FULL_WELL)
    sat_t = template.astype(np.float64) + sky_t
    _saturate(sat_t, mask_t, _FULL_WELL)
    search = (rng.poisson(np.clip(sat_s, 0, None)) - sky_s + rng.normal(0, rn, shape)
              ).astype(np.float32)
    template = (rng.poisson(np.clip(sat_t, 0, None)) - sky_t + rng.normal(0, rn, shape)
                ).astype(np.float32)

    # Artefacts: cosmic rays, hot pixels, bad columns, a trail, a coverage edge.
    from desgw.sim.detector import add_cosmic_rays  # the simulator's cosmic-ray model

    art = {k: np.zeros(shape, bool) for k in ("cosmic_ray", "hot_pixel", "bad_column",
                                              "satellite", "edge")}
    mask_crs = rng.random() < 0.5
    for img, msk, sky, fw in ((search, mask_s, sky_s, fwhm_s), (template, mask_t, sky_t, fwhm_t)):
        truth = np.zeros(shape, np.uint8)
        add_cosmic_rays(img, rng, float(rng.uniform(30, 200)), truth)
        art["cosmic_ray"] |= truth > 0
        if mask_crs:
            from desgw.se.cosmics import find_cosmic_rays

            cr = find_cosmic_rays(img, msk & maskbits.UNUSABLE, read_noise_e=rn,
                                  sky_e=sky, psf_fwhm_px=float(fw))
            msk[cr] |= maskbits.CRAY
        nh = rng.poisson(15 * area / 1e6)
        hx, hy = rng.integers(0, nx, nh), rng.integers(0, ny, nh)
        img[hy, hx] += rng.uniform(100, 2e4, nh).astype(np.float32)
        art["hot_pixel"][hy, hx] = True
        for _ in range(rng.poisson(0.7 * area / 1e6)):
            c = rng.integers(0, nx)
            y0 = rng.integers(0, ny)
            y1 = min(ny, y0 + rng.integers(20, 600))
            img[y0:y1, c] += np.float32(rng.choice([-1, 1]) * rng.uniform(15, 300))
            art["bad_column"][y0:y1, c] = True
    if rng.random() < 0.3:
        tr = _trail(shape, rng, fwhm_s, rng.uniform(2, 15) * np.sqrt(var_s))
        search += tr
        art["satellite"] |= tr > 0.3 * np.sqrt(var_s)
    var_s_map = np.full(shape, var_s, np.float32)
    var_t_map = np.full(shape, sky_t + rn**2, np.float32)
    if rng.random() < 0.3:
        w = int(rng.integers(30, 200))
        side = int(rng.integers(4))
        edge = np.zeros(shape, bool)
        band = np.zeros(shape, bool)
        b = int(rng.integers(2, 5))
        if side == 0:
            edge[:, :w], band[:, w:w + b] = True, True
        elif side == 1:
            edge[:, nx - w:], band[:, nx - w - b:nx - w] = True, True
        elif side == 2:
            edge[:w, :], band[w:w + b, :] = True, True
        else:
            edge[ny - w:, :], band[ny - w - b:ny - w, :] = True, True
        template[edge] = np.nan
        var_t_map[edge] = 0.0
        template[band] = template[band] * np.float32(rng.uniform(0.3, 0.9)) \
            - np.float32(rng.uniform(0, 3) * np.sqrt(var_t_map[0, 0]))
        art["edge"] |= band | edge

    cfg = SubtractConfig(tile=512, border=64, astrometric_sigma=(astro_sigma, astro_sigma))
    sub = subtract(search, var_s_map, mask_s, model_s, template, var_t_map, mask_t, model_t,
                   zp_search=_ZP_SEARCH, zp_template=float(zp_t), config=cfg)
    det = detect_transients(sub, threshold_sigma=threshold_sigma)
    meas = measure_candidates(sub, det, search_image=search,
                              template_image=np.nan_to_num(template, nan=0.0))
    n = len(meas)
    x, y = np.asarray(meas["x"], float), np.asarray(meas["y"], float)
    neg = np.asarray(meas["negative"], bool)
    label = np.zeros(n, np.int8)
    kind = np.full(n, KINDS.index("noise"), np.int8)
    tsnr = np.full(n, np.nan)
    keep = np.ones(n, bool)
    fwhm_d = np.asarray(meas["fwhm_psf"], float)
    if n:
        tree = cKDTree(np.c_[rx, ry])
        d, j = tree.query(np.c_[x, y])
        match = (d <= np.maximum(1.5, 0.3 * fwhm_d)) & (neg == fading[j])
        label[match] = 1
        kind[match] = which[j[match]]
        tsnr[match] = snr[j[match]]
        near_any = tree.query_ball_point(np.c_[x, y], 2.5 * fwhm_d)
        for i in np.nonzero(~match)[0]:
            if near_any[i]:
                keep[i] = False
        _bogus_kinds(kind, label, x, y, fwhm_d, art, mask_s | mask_t, sx, sy, sflux, gx, gy,
                     ghlr, offset, shape)
    stamps = cutout_stamps({"search": search, "template": np.nan_to_num(template, nan=0.0),
                            "diff": sub.diff}, x, y, size=stamp_size)
    idx = np.nonzero(keep)[0]
    stamps = Stamps(data=stamps.data[idx], valid=stamps.valid[idx], kinds=stamps.kinds,
                    x0=stamps.x0[idx], y0=stamps.y0[idx], fill=stamps.fill)
    meta = {"seed": seed, "fwhm_search": fwhm_s, "fwhm_template": fwhm_t, "quality": quality,
            "offset": offset, "astrometric_sigma": astro_sigma, "crs_masked": mask_crs,
            "n_stars": int(n_star), "n_galaxies": int(n_gal)}
    return SceneCandidates(candidates=meas[idx], stamps=stamps, label=label[idx],
                           kind=kind[idx], true_snr=tsnr[idx], area_px=area, meta=meta)


def _bogus_kinds(kind: np.ndarray, label: np.ndarray, x: np.ndarray, y: np.ndarray,
                 fwhm: np.ndarray, art: dict[str, np.ndarray], mask: np.ndarray,
                 sx: np.ndarray, sy: np.ndarray, sflux: np.ndarray, gx: np.ndarray,
                 gy: np.ndarray, ghlr: np.ndarray, offset: tuple[float, float],
                 shape: tuple[int, int]) -> None:
    """Name the bogus detections after the nearest artefact truth (in place, first match)."""
    ny, nx = shape
    bog = np.nonzero(label == 0)[0]
    if bog.size == 0:
        return
    star_tree = cKDTree(np.c_[sx, sy]) if sx.size else None
    gal_tree = cKDTree(np.c_[gx, gy]) if gx.size else None
    sat = (mask & maskbits.SAT) != 0
    for i in bog:
        r = int(np.ceil(1.5 * fwhm[i]))
        xi, yi = int(round(x[i])), int(round(y[i]))
        sl = (slice(max(yi - r, 0), min(yi + r + 1, ny)), slice(max(xi - r, 0),
                                                                min(xi + r + 1, nx)))
        name = None
        for k in ("cosmic_ray", "hot_pixel", "bad_column", "satellite", "edge"):
            if art[k][sl].any():
                name = k
                break
        if name is None and star_tree is not None:
            big = (slice(max(yi - 6 * r, 0), min(yi + 6 * r + 1, ny)),
                   slice(max(xi - 6 * r, 0), min(xi + 6 * r + 1, nx)))
            if sat[big].any():
                name = "saturated_star"
            else:
                d, j = star_tree.query([x[i], y[i]])
                if d < 3 * fwhm[i] + 2 * np.log10(max(sflux[j], 1.0)):
                    name = "dipole" if np.hypot(*offset) >= 0.05 else "star_residual"
        if name is None and gal_tree is not None:
            d, j = gal_tree.query([x[i], y[i]])
            if d < 3 * ghlr[j] + 2 * fwhm[i]:
                name = "galaxy_residual"
        kind[i] = KINDS.index(name or "noise")


@dataclass(frozen=True)
class TrainingSet:
    """Features and labels of many scenes.

    Attributes
    ----------
    features : numpy.ndarray
        (n, k) float32 from :func:`desgw.diff.realbogus.features`.
    label, kind : numpy.ndarray
        (n,) int8 (see :class:`SceneCandidates`).
    snr : numpy.ndarray
        (n,) measured ``|snr|`` of the candidates.
    scene : numpy.ndarray
        (n,) int32 scene index.
    area_px : int
        Total simulated pixels.
    candidates : astropy.table.Table
        The stacked candidate rows.
    stamps : Stamps
        The stacked stamps.
    """

    features: np.ndarray
    label: np.ndarray
    kind: np.ndarray
    snr: np.ndarray
    scene: np.ndarray
    area_px: int
    candidates: Table
    stamps: Stamps

    @property
    def ccd_equivalents(self) -> float:
        """Simulated area in units of a 4096 x 2048 CCD."""
        return self.area_px / CCD_AREA_PX


def _scene_job(args: tuple[int, tuple[int, int], int]) -> SceneCandidates:
    seed, shape, n_reals = args
    return simulate_scene(seed, shape, n_reals=n_reals)


def make_training_set(seed: int, n_scenes: int, shape: tuple[int, int] = (1024, 1024), *,
                      n_reals: int = 60, workers: int = 1) -> TrainingSet:
    """Simulate ``n_scenes`` scenes (seeds ``seed * 100003 + i``) and stack their features.

    Parameters
    ----------
    seed : int
        Base seed; training and validation sets must use different ones.
    n_scenes : int
        Number of scenes.
    shape : tuple[int, int]
        Scene (ny, nx).
    n_reals : int
        Injected reals per scene.
    workers : int
        Processes (scenes are independent; the result does not depend on ``workers``).

    Returns
    -------
    TrainingSet
    """
    jobs = [(seed * 100003 + i, (int(shape[0]), int(shape[1])), n_reals) for i in range(n_scenes)]
    if workers > 1 and n_scenes > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(min(workers, n_scenes)) as pool:
            scenes = pool.map(_scene_job, jobs, chunksize=1)
    else:
        scenes = [_scene_job(j) for j in jobs]
    for i, sc in enumerate(scenes):
        log.info("scene %d: %d candidates (%d real)", i, len(sc.label), int(sc.label.sum()))
    return stack_scenes(scenes)


def stack_scenes(scenes: list[SceneCandidates]) -> TrainingSet:
    """Stack scenes into a :class:`TrainingSet` (computing the features).

    Features are computed scene by scene: a scene stands for one CCD's candidate set, whose
    members the context features (``ctx_*``, :mod:`desgw.diff.realbogus_features`) compare.
    """
    from astropy.table import vstack

    from desgw.diff.realbogus import features

    if not scenes:
        raise ValueError("no scenes")
    cands = vstack([s.candidates for s in scenes], metadata_conflicts="silent")
    st = [s.stamps for s in scenes]
    stamps = Stamps(data=np.concatenate([s.data for s in st]),
                    valid=np.concatenate([s.valid for s in st]), kinds=st[0].kinds,
                    x0=np.concatenate([s.x0 for s in st]), y0=np.concatenate([s.y0 for s in st]),
                    fill=st[0].fill)
    feats = np.concatenate([features(s.candidates, s.stamps) for s in scenes])
    return TrainingSet(
        features=feats, label=np.concatenate([s.label for s in scenes]),
        kind=np.concatenate([s.kind for s in scenes]),
        snr=np.abs(np.asarray(cands["snr"], float)),
        scene=np.concatenate([np.full(len(s.label), i, np.int32) for i, s in enumerate(scenes)]),
        area_px=int(sum(s.area_px for s in scenes)), candidates=cands, stamps=stamps)


def auc(scores: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney statistic, ties counted half)."""
    from scipy.stats import rankdata

    s = np.asarray(scores, float)
    y = np.asarray(label).astype(bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        raise ValueError("AUC needs both classes")
    r = rankdata(s)
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def roc_summary(scores: np.ndarray, ts: TrainingSet, *, keep: float = 0.99,
                snr_min: float = 10.0, threshold: float | None = None) -> dict:
    """Bench-like summary of scores on a labelled set.

    Parameters
    ----------
    scores : numpy.ndarray
        (n,) scores of ``ts``'s candidates.
    ts : TrainingSet
    keep : float
        Fraction of reals with ``|snr| > snr_min`` the threshold keeps.
    snr_min : float
    threshold : float or None
        Use this threshold instead of deriving it (the derived one is still reported).

    Returns
    -------
    dict
        ``auc``, ``threshold_derived`` (score keeping ``keep`` of the reals with S/N >
        ``snr_min``), ``threshold`` (used), ``real_kept`` (fraction of those reals, and of all
        reals, at the threshold), ``bogus_surviving`` (count), ``bogus_per_ccd`` (count scaled
        to a 4096 x 2048 CCD by area), ``ccd_equivalents``, per-kind counts and survivors,
        reals kept per S/N bin, and a coarse ROC (false/true positive rates).
    """
    s = np.asarray(scores, float)
    real = ts.label == 1
    bright = real & (ts.snr > snr_min)
    if not bright.any():
        raise ValueError(f"no reals with S/N > {snr_min}")
    thr_d = float(np.quantile(s[bright], 1.0 - keep, method="lower"))
    thr = thr_d if threshold is None else float(threshold)
    passed = s >= thr
    bog = ~real
    out: dict = {
        "n_real": int(real.sum()), "n_bogus": int(bog.sum()),
        "n_real_snr_gt_min": int(bright.sum()), "snr_min": snr_min, "keep": keep,
        "auc": auc(s, real), "threshold_derived": thr_d, "threshold": thr,
        "real_kept_snr_gt_min": float(passed[bright].mean()),
        "real_kept_all": float(passed[real].mean()),
        "bogus_surviving": int((passed & bog).sum()),
        "ccd_equivalents": ts.ccd_equivalents,
        "bogus_per_ccd": float((passed & bog).sum() / ts.ccd_equivalents),
        "bogus_detections_per_ccd": float(bog.sum() / ts.ccd_equivalents),
    }
    out["by_kind"] = {KINDS[k]: {"n": int((ts.kind == k).sum()),
                                 "pass": int((passed & (ts.kind == k)).sum())}
                      for k in range(len(KINDS)) if (ts.kind == k).any()}
    bins = [5, 7, 10, 15, 25, 50, 100, np.inf]
    out["real_kept_by_snr"] = {
        f"{lo:g}-{hi:g}": float(passed[real & (ts.snr >= lo) & (ts.snr < hi)].mean())
        for lo, hi in itertools.pairwise(bins) if (real & (ts.snr >= lo) & (ts.snr < hi)).any()}
    grid = np.linspace(0, 1, 21)
    out["roc"] = {"threshold": grid.tolist(),
                  "tpr": [float((s[real] >= g).mean()) for g in grid],
                  "fpr": [float((s[bog] >= g).mean()) for g in grid]}
    return out
