"""Crowded synthetic CCD fields with known truth (galsim), for the crowded-field photometry tests.

Unlike :func:`test_psf_synth.make_field`, whose stars sit on a jittered grid >= 24 px apart,
objects here are placed at random (Poisson, with real blends), stars follow a rising luminosity
function ``dN/dm ~ 10**(slope m)`` and galaxies (exponential and de Vaucouleurs-like Sersic
profiles) are mixed in, so the sky between stars holds their wings, as in a low-latitude DECam
field. The PSF (Moffat of any beta or Kolmogorov) varies in FWHM and ellipticity across the
field. Every star is drawn on a 201 x 201 px stamp, so its light in the image is its total flux
to < 0.03 % (Kolmogorov, FWHM 4 px; < 0.005 % for Moffat beta >= 2.5).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import galsim
import numpy as np

#: Stamp half-size (pix) of every drawn object.
HALF = 100


@dataclass(frozen=True)
class CrowdedField:
    image: np.ndarray   # sky + objects + noise, float32, e-
    sky: np.ndarray     # the true sky level, float32, e-
    weight: np.ndarray  # inverse variance of sky + read noise, float32, e-**-2
    mask: np.ndarray    # int32, all zero
    stars: dict         # x, y (0-based), flux (total, e-), mag
    galaxies: dict      # x, y, flux
    fwhm: float         # central PSF FWHM (pix)
    kind: str = "moffat"  # PSF profile: "moffat" or "kolmogorov"
    beta: float = 2.5   # Moffat beta


def true_psf(f: CrowdedField, x: float, y: float) -> galsim.GSObject:
    """The field's PSF (unit flux) at 0-based pixel (x, y)."""
    ny, nx = f.image.shape
    u, v = x / nx - 0.5, y / ny - 0.5
    w = f.fwhm * (1 + 0.10 * u - 0.06 * v)
    prof = (galsim.Kolmogorov(fwhm=w) if f.kind == "kolmogorov"
            else galsim.Moffat(beta=f.beta, fwhm=w))
    return prof.shear(e1=0.02 + 0.05 * u, e2=-0.01 + 0.04 * v)


def psf_model_truth(f: CrowdedField, psf) -> dict:
    """A fitted PSF model against the field's PSF at the centre and four points halfway to
    the corners: ``psf_peak_ratio`` mean model peak / exact peak (both normalised over the
    model's stamp; < 1: the model is too broad, and its PSF fluxes too high), each rendered
    at the sub-pixel offsets (0, 0), (0.5, 0), (0, 0.5) and (0.5, 0.5) as the photometry
    renders it (the centred model alone is ~0.2 % sharper by design: it is fitted through
    the rendering); and ``apcor_exact`` the exact aperture correction (total / stamp flux)
    at the centre."""
    n = psf.stamp_size
    h = n // 2
    ny, nx = f.image.shape
    peaks = []
    apx = float("nan")
    for fx, fy in ((0.5, 0.5), (0.25, 0.25), (0.75, 0.75), (0.25, 0.75), (0.75, 0.25)):
        x, y = fx * nx, fy * ny
        for dx, dy in ((0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (0.5, 0.5)):
            big = true_psf(f, x, y).drawImage(nx=401, ny=401, scale=1.0,
                                              offset=(dx, dy)).array.astype(np.float64)
            st = big[200 - h:201 + h, 200 - h:201 + h]
            if (fx, fy, dx, dy) == (0.5, 0.5, 0.0, 0.0):
                apx = 1.0 / float(st.sum())
            peaks.append(psf.render(x, y, dx=dx, dy=dy)[h, h] / (st[h, h] / st.sum()))
    return {"psf_peak_ratio": float(np.mean(peaks)), "apcor_exact": apx}


def _add(img: np.ndarray, st: np.ndarray, ix: int, iy: int) -> None:
    ny, nx = img.shape
    n = st.shape[0]
    h = n // 2
    y0, x0 = iy - h, ix - h
    sy0, sx0 = max(0, -y0), max(0, -x0)
    sy1, sx1 = n - max(0, y0 + n - ny), n - max(0, x0 + n - nx)
    img[y0 + sy0:y0 + sy1, x0 + sx0:x0 + sx1] += st[sy0:sy1, sx0:sx1]


@functools.lru_cache(maxsize=6)
def crowded_field(n_stars: int, n_gal: int, *, shape: tuple[int, int] = (2048, 1024),
                  kind: str = "moffat", beta: float = 2.5, fwhm: float = 4.0,
                  mag_range: tuple[float, float] = (16.0, 24.5), slope: float = 0.25,
                  sky: float = 1500.0, read_noise: float = 7.0, seed: int = 3) -> CrowdedField:
    """A crowded field (cached; treat the arrays as read-only). Fluxes: zeropoint 30 (e-)."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    # luminosity function dN/dm ~ 10**(slope m) by inverse transform
    lo, hi = 10 ** (slope * mag_range[0]), 10 ** (slope * mag_range[1])
    mags = np.log10(lo + rng.uniform(size=n_stars) * (hi - lo)) / slope
    sflux = 10 ** (-0.4 * (mags - 30.0))
    sx = rng.uniform(-0.5, nx - 0.5, n_stars)
    sy = rng.uniform(-0.5, ny - 0.5, n_stars)

    geometry = CrowdedField(image=np.zeros(shape, dtype=np.float32), sky=np.zeros(0),
                            weight=np.zeros(0), mask=np.zeros(0), stars={}, galaxies={},
                            fwhm=fwhm, kind=kind, beta=beta)

    def profile(x: float, y: float) -> galsim.GSObject:
        return true_psf(geometry, x, y)

    noiseless = np.zeros(shape, dtype=np.float64)
    n = 2 * HALF + 1
    for i in range(n_stars):
        ix, iy = round(sx[i]), round(sy[i])
        st = profile(sx[i], sy[i]).withFlux(float(sflux[i])).drawImage(
            nx=n, ny=n, scale=1.0, offset=(sx[i] - ix, sy[i] - iy)).array
        _add(noiseless, st, ix, iy)
    gx = rng.uniform(-0.5, nx - 0.5, n_gal)
    gy = rng.uniform(-0.5, ny - 0.5, n_gal)
    gflux = 10 ** (-0.4 * (rng.uniform(18.0, 23.0, n_gal) - 30.0))
    gsp = galsim.GSParams(maximum_fft_size=8192)
    for i in range(n_gal):
        nser = float(rng.choice([1.0, 2.5, 4.0]))
        hlr = float(rng.uniform(0.4, 1.5) / 0.263)
        gal = galsim.Sersic(n=nser, half_light_radius=hlr, flux=float(gflux[i]),
                            trunc=8 * hlr, gsparams=gsp)
        gal = gal.shear(q=float(rng.uniform(0.4, 1.0)), beta=float(rng.uniform(0, np.pi)) * galsim.radians)
        conv = galsim.Convolve(gal, profile(gx[i], gy[i]), gsparams=gsp)
        ix, iy = round(gx[i]), round(gy[i])
        st = conv.drawImage(nx=n, ny=n, scale=1.0, offset=(gx[i] - ix, gy[i] - iy)).array
        _add(noiseless, st, ix, iy)
    yy, xx = np.mgrid[:ny, :nx]
    skyimg = sky * (1 + 0.04 * (xx / nx - 0.5) + 0.03 * (yy / ny - 0.5) ** 2)
    var = skyimg + read_noise ** 2 + np.maximum(noiseless, 0)
    image = skyimg + noiseless + rng.normal(size=shape) * np.sqrt(var)
    weight = 1.0 / (skyimg + read_noise ** 2)
    return CrowdedField(image=image.astype(np.float32), sky=skyimg.astype(np.float32),
                        weight=weight.astype(np.float32), mask=np.zeros(shape, dtype=np.int32),
                        stars=dict(x=sx, y=sy, flux=sflux, mag=mags),
                        galaxies=dict(x=gx, y=gy, flux=gflux), fwhm=fwhm, kind=kind,
                        beta=beta)


def run_photometry(f: CrowdedField, *, true_sky: bool = False, add_undetected: bool = False,
                   refine: bool = False,
                   neighbour_iter: int = 2, wings: bool = True,
                   true_positions: bool = False, refit_psf: bool = False,
                   psf_kw: dict | None = None) -> dict:
    """The single-epoch sequence of :func:`desgw.se.process.process_ccd` on a crowded field and
    its figures against truth.

    Two-pass background (sources masked), detection for the seeing, PSF fit, measurement,
    aperture correction, calibration-star selection and the weighted zeropoint against the total
    fluxes of the stars brighter than 21 mag (the Gaia-like reference), matched within 1".
    ``wings`` masks each first-pass detection's wing for the second background as
    :func:`desgw.se.process.process_ccd` does (:class:`desgw.se.background.ObjectWings`; False:
    the segments grown by 4 px only, the masks before);
    ``true_sky`` replaces the estimated background by the true sky, and ``add_undetected`` adds
    to it the mean light of the undetected objects (:func:`undetected_light`: the sky that a
    star placed at random has under it); ``psf_kw`` overrides
    :class:`desgw.se.psf.PSFConfig` fields (e.g. ``companion_snr=0``).

    Returns
    -------
    dict
        ``n_det`` detections (and per CCD: x 4), ``dzp_mmag`` (measured - true zeropoint),
        ``n_zp`` stars in it, ``undetected_light_e`` (:func:`undetected_light`, e-/px),
        ``bright_ratio`` median FLUX_PSF / true flux (stamp-normalised:
        divided by the aperture correction's inverse) of isolated-ish bright stars, ``apcor``
        and ``apcor_exact``, ``psf_peak_ratio`` and ``n_psf_stars`` (:func:`psf_model_truth`),
        ``measure_cpu_ms_per_object``; per calibration star matched to the reference:
        ``delta`` (reference - instrumental magnitude), ``used`` (in the zeropoint), ``mag``
        and ``star_index`` (its row in ``f.stars``).
    """
    import time

    from scipy.spatial import cKDTree

    from desgw.se.background import ObjectWings, estimate_background
    from desgw.se.detect import DetectConfig, detect_sources
    from desgw.se.measure import MeasureConfig, measure_sources
    from desgw.se.process_steps import (detect_config_for_seeing, mean_sky_background,
                                        psf_aperture_correction, psf_config_for_seeing)
    from desgw.se.psf import PSFConfig, fit_psf, select_psf_candidates

    image, mask, weight = f.image, f.mask, f.weight
    bkg1 = estimate_background(image, mask)
    det1 = detect_sources(image - bkg1.level, bkg1.rms, mask, config=DetectConfig())
    c1 = det1.catalog
    ow = ObjectWings(x=np.asarray(c1["x"], float), y=np.asarray(c1["y"], float),
                     peak=np.asarray(c1["peak"], float), fwhm_px=f.fwhm,
                     noise=bkg1.global_rms) if wings else None
    bkg = estimate_background(image, mask, objects=det1.segmap, wings=ow)
    level = f.sky if true_sky else bkg.level
    sub = image - level
    det_cfg = detect_config_for_seeing(DetectConfig(), f.fwhm, snr=5.0, minarea=3)
    det = detect_sources(sub, 1.0 / weight, mask, noise_type="variance", config=det_cfg)
    c = det.catalog
    undetected = undetected_light(f, np.asarray(c["xwin"], float), np.asarray(c["ywin"], float))
    if true_sky and add_undetected:
        level = f.sky + np.float32(undetected)
        sub = image - level
        det = detect_sources(sub, 1.0 / weight, mask, noise_type="variance", config=det_cfg)
        c = det.catalog
    if true_positions:
        tx = np.concatenate([f.stars["x"], f.galaxies["x"]])
        ty = np.concatenate([f.stars["y"], f.galaxies["y"]])
        dd, jj = cKDTree(np.column_stack([tx, ty])).query(np.column_stack([c["x"], c["y"]]))
        c["xwin"] = np.where(dd < 1.5, tx[jj], c["xwin"])
        c["ywin"] = np.where(dd < 1.5, ty[jj], c["ywin"])
    xy = np.column_stack([np.asarray(c["xwin"], float), np.asarray(c["ywin"], float)])
    cand = select_psf_candidates(det)
    psf_cfg = psf_config_for_seeing(PSFConfig(**(psf_kw or {})), f.fwhm, stamp_fwhm=6.0)
    psf = fit_psf(sub, weight, mask, xy[cand, 0], xy[cand, 1], segmap=det.segmap,
                  neighbour_xy=xy, config=psf_cfg)
    mcfg = MeasureConfig(neighbour_iter=neighbour_iter)
    t0 = time.process_time()
    cat = measure_sources(image, weight, mask, level, det, psf, config=mcfg)
    t_meas = time.process_time() - t0
    if refine:
        # the pipeline's step (process_ccd with SEConfig.mean_sky)
        bkg = mean_sky_background(image, weight, mask, bkg, det, psf, config=mcfg)
        level = bkg.level
        if refit_psf:
            psf = fit_psf(image - level, weight, mask, xy[cand, 0], xy[cand, 1],
                          segmap=det.segmap, neighbour_xy=xy, config=psf_cfg)
        cat = measure_sources(image, weight, mask, level, det, psf, config=mcfg)
    apcor = psf_aperture_correction(psf)
    flux = np.asarray(cat["FLUX_PSF"], float) * apcor
    cal = calibrate(f, cat, apcor)
    zp = cal["zp"]
    s = f.stars
    # bright stars with no other star brighter than 1 % of their flux within 3 FWHM
    allxy = np.column_stack([s["x"], s["y"]])
    t_all = cKDTree(allxy)
    brights = []
    d2, j2 = cKDTree(xy).query(allxy)
    for i in np.flatnonzero((s["mag"] < 19.0) & (d2 < 1.0)):
        nb = [k for k in t_all.query_ball_point(allxy[i], 3 * f.fwhm) if k != i]
        if all(s["flux"][k] < 0.01 * s["flux"][i] for k in nb):
            brights.append((j2[i], i))
    bi = np.array(brights, dtype=int).reshape(-1, 2)
    ratio = float(np.median(flux[bi[:, 0]] / s["flux"][bi[:, 1]])) if len(bi) else float("nan")
    return {"n_det": len(c), "n_det_per_ccd": len(c) * (2048 * 4096) / image.size,
            "dzp_mmag": 1e3 * zp.zp, "zp_err_mmag": 1e3 * zp.zp_err, "n_zp": zp.n_used,
            "bright_ratio": ratio, "n_bright": int(len(bi)), "apcor": apcor,
            **psf_model_truth(f, psf), "n_psf_stars": psf.n_stars,
            "sky_bias_e": float(np.median(level - f.sky)), "undetected_light_e": undetected,
            "measure_cpu_ms_per_object": 1e3 * t_meas / max(len(c), 1),
            "delta": zp.delta, "used": zp.used, "mag": cal["mag"],
            "star_index": cal["star_index"], "catalog": cat}


def undetected_light(f: CrowdedField, x: np.ndarray, y: np.ndarray, radius: float = 3.0
                     ) -> float:
    """Mean light (e-/px) of the field's objects that no detection stands for: the sky a star
    placed at random has under it, beyond the true sky. An object counts as detected when it
    is the brightest within ``radius`` px of a detection at 0-based ``(x, y)``."""
    from scipy.spatial import cKDTree

    tx = np.concatenate([f.stars["x"], f.galaxies["x"]])
    ty = np.concatenate([f.stars["y"], f.galaxies["y"]])
    tf = np.concatenate([f.stars["flux"], f.galaxies["flux"]])
    detected = np.zeros(tx.size, dtype=bool)
    if len(x):
        near = cKDTree(np.column_stack([tx, ty])).query_ball_point(np.column_stack([x, y]), radius)
        for js in near:
            if js:
                detected[js[int(np.argmax(tf[js]))]] = True
    return float(tf[~detected].sum()) / float(f.image.size)


def calibrate(f: CrowdedField, cat, apcor: float, **select_kw) -> dict:
    """The calibration step of :func:`run_photometry`: calibration-star selection
    (:func:`desgw.se.photocal.select_calibration_stars` with ``select_kw``) and the weighted
    zeropoint against the total fluxes of the stars brighter than 21 mag (the Gaia-like
    reference), matched within 1". Returns ``zp`` (a ZeropointResult), and per matched star
    ``mag`` and ``star_index`` (its row in ``f.stars``)."""
    from scipy.spatial import cKDTree

    from desgw.se.photocal import select_calibration_stars, zeropoint

    flux = np.asarray(cat["FLUX_PSF"], float) * apcor
    ferr = np.asarray(cat["FLUXERR_PSF"], float) * apcor
    xy = np.column_stack([np.asarray(cat["XWIN_IMAGE"], float) - 1.0,
                          np.asarray(cat["YWIN_IMAGE"], float) - 1.0])
    sel = select_calibration_stars(cat, **select_kw)
    s = f.stars
    ref = s["mag"] < 21.0
    tree = cKDTree(np.column_stack([s["x"][ref], s["y"][ref]]))
    d, j = tree.query(xy[sel])
    ok = d < 1.0 / 0.263
    rows = np.flatnonzero(sel)[ok]
    true = s["flux"][ref][j[ok]]
    zp = zeropoint(-2.5 * np.log10(flux[rows]), -2.5 * np.log10(true),
                   mag_err=1.0857 * ferr[rows] / flux[rows], method="weighted", error_floor=0.01)
    return {"zp": zp, "mag": s["mag"][ref][j[ok]], "star_index": np.flatnonzero(ref)[j[ok]]}


@functools.lru_cache(maxsize=8)
def companion_field(kind: str = "moffat", beta: float = 2.5, fwhm: float = 4.0, *,
                    n_primary: int = 324, companion_fraction: float = 0.15,
                    mag_range: tuple[float, float] = (16.0, 18.5),
                    shape: tuple[int, int] = (1152, 1152), sky: float = 1500.0,
                    read_noise: float = 7.0, seed: int = 5) -> CrowdedField:
    """Calibration-range stars (``mag_range``, zeropoint 30) on a jittered grid, a fraction of
    them with a faint companion (1.5-2.5 mag fainter, 1.6-2.4 FWHM away, random direction):
    the close pairs that a matched-filter detection does not split (cached; read-only).

    ``stars`` holds the primaries first, then the companions, with ``companion_of`` (index of
    the primary, -1 for a primary) besides x, y, flux, mag. The PSF varies as
    :func:`true_psf`; every star is drawn on a 201 x 201 px stamp.
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    side = int(np.ceil(np.sqrt(n_primary)))
    step = min(nx, ny) / side
    gx, gy = np.meshgrid((np.arange(side) + 0.5) * step, (np.arange(side) + 0.5) * step)
    px = gx.ravel()[:n_primary] + rng.uniform(-0.2, 0.2, n_primary) * step
    py = gy.ravel()[:n_primary] + rng.uniform(-0.2, 0.2, n_primary) * step
    pmag = rng.uniform(mag_range[0], mag_range[1], n_primary)
    has = np.flatnonzero(rng.uniform(size=n_primary) < companion_fraction)
    sep_px = rng.uniform(1.6, 2.4, has.size) * fwhm
    ang = rng.uniform(0.0, 2.0 * np.pi, has.size)
    cx = px[has] + sep_px * np.cos(ang)
    cy = py[has] + sep_px * np.sin(ang)
    cmag = pmag[has] + rng.uniform(1.5, 2.5, has.size)
    x = np.concatenate([px, cx])
    y = np.concatenate([py, cy])
    mag = np.concatenate([pmag, cmag])
    flux = 10 ** (-0.4 * (mag - 30.0))
    comp = np.concatenate([np.full(n_primary, -1), has])
    geometry = CrowdedField(image=np.zeros(shape, dtype=np.float32), sky=np.zeros(0),
                            weight=np.zeros(0), mask=np.zeros(0), stars={}, galaxies={},
                            fwhm=fwhm, kind=kind, beta=beta)
    noiseless = np.zeros(shape, dtype=np.float64)
    n = 2 * HALF + 1
    for i in range(x.size):
        ix, iy = round(x[i]), round(y[i])
        st = true_psf(geometry, x[i], y[i]).withFlux(float(flux[i])).drawImage(
            nx=n, ny=n, scale=1.0, offset=(x[i] - ix, y[i] - iy)).array
        _add(noiseless, st, ix, iy)
    skyimg = np.full(shape, sky, dtype=np.float64)
    var = skyimg + read_noise ** 2 + np.maximum(noiseless, 0)
    image = skyimg + noiseless + rng.normal(size=shape) * np.sqrt(var)
    weight = 1.0 / (skyimg + read_noise ** 2)
    return CrowdedField(image=image.astype(np.float32), sky=skyimg.astype(np.float32),
                        weight=weight.astype(np.float32), mask=np.zeros(shape, dtype=np.int32),
                        stars=dict(x=x, y=y, flux=flux, mag=mag, companion_of=comp),
                        galaxies=dict(x=np.zeros(0), y=np.zeros(0), flux=np.zeros(0)),
                        fwhm=fwhm, kind=kind, beta=beta)
