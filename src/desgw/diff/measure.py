"""Measurement of difference-image detections: flux, position, shape, dipole and context.

:func:`measure_candidates` takes a :class:`~desgw.diff.subtract.Subtraction`, the detections of
:func:`~desgw.diff.detect.detect_transients` and the two input images, and returns one row per
detection. ``FWHM`` below is the FWHM of the difference-image PSF ``P_D`` at the detection
(pixels). Fluxes are in search electrons (the subtraction's photometric scale); images are
background subtracted. Columns:

========================  ==================================================================
``id``                    detection id
``x``, ``y``              0-based sub-pixel position (from the detection)
``ra``, ``dec``           degrees (ICRS) from ``wcs`` (NaN without one)
``negative``              True for a flux decrease
``score``                 ``S_corr`` at the peak (signed, sigma)
``flux``, ``flux_err``    ZOGY PSF flux ``S / F_S`` interpolated to its peak (log-quadratic
                          fit on the 3 x 3 pixels around (x, y), the peak of ``S``) and its
                          error at that pixel (e-, signed)
``snr``                   ``flux / flux_err``
``flux_psf``,             direct PSF fit of ``P_D`` (shifted to (x, y)) to ``diff`` within
``flux_psf_err``          2 FWHM, fixed position, uniform weights, error from ``diff_var``
                          (e-, signed) - a check of ``flux``
``psf_chi2``              chi2 / dof of that fit
``mxx``, ``myy``, ``mxy``  Gaussian-windowed (sigma = FWHM / 2.355) second moments of the
                          sign-corrected ``diff`` about (x, y) (pixel^2)
``fwhm_psf``              FWHM of ``P_D`` (pixels)
``fwhm_ratio``            sqrt of the ratio of the windowed moment traces, source / ``P_D``
                          (1 for a point source; NaN when the windowed flux is <= 0)
``dipole_ratio``          within 2 FWHM, the summed |diff| of opposite-sign pixels below
                          -2 sigma over that of same-sign pixels above 2 sigma (0 for a clean
                          point source, ~1 for a dipole)
``dipole_sep``            distance (pixels) between the ``S_corr`` maximum and minimum within
                          2 FWHM when the opposite lobe reaches ``dipole_sigma``, else NaN
``dipole_lobe_score``     ``S_corr`` of the opposite-sign extremum within 2 FWHM (signed)
``is_dipole``             ``dipole_ratio >= dipole_ratio_min`` and the opposite lobe reaches
                          ``dipole_sigma``
``masked_frac``           fraction of pixels within 2 FWHM with any ``mask_bits`` set
``search_star_dist``,     distance (pixels) to the nearest star / galaxy of the search
``search_galaxy_dist``    catalog (inf without one)
``template_star_dist``,   the same in the template catalog
``template_galaxy_dist``
``search_flux_aper``,     aperture flux (radius ``aperture_fwhm`` x FWHM, no aperture
``template_flux_aper``    correction) at (x, y) on the search image and on the template
                          scaled to the search zero point (e-)
``diff_flux_aper``        the same aperture on ``diff``
========================  ==================================================================

Catalog stars and galaxies: with a ``SPREAD_MODEL`` column an object is a star when
``|SPREAD_MODEL| < star_spread_model`` (DES: 0.003); else with ``CLASS_STAR`` when
``CLASS_STAR >= star_class_star``; without either all objects count as stars (conservative for
vetoes). Catalog positions: ``ALPHAWIN_J2000``/``DELTAWIN_J2000`` (or ``ra``/``dec``) through
``wcs`` when both are available, else ``XWIN_IMAGE``/``YWIN_IMAGE`` (1-based, SExtractor) or
``x``/``y`` (0-based), taken to be on the search grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.fft as sfft
from astropy.table import Table
from scipy.spatial import cKDTree

from desgw.diff.detect import quadratic_peaks
from desgw.diff.subtract import Subtraction
from desgw.diff.zogy_psf import TiledPSF
from desgw.se import maskbits

__all__ = [
    "MEASURE_COLUMNS",
    "DiffMeasureConfig",
    "aperture_weights",
    "catalog_positions",
    "measure_candidates",
]

MEASURE_COLUMNS = (
    "id", "x", "y", "ra", "dec", "negative", "score", "flux", "flux_err", "snr", "flux_psf",
    "flux_psf_err", "psf_chi2", "mxx", "myy", "mxy", "fwhm_psf", "fwhm_ratio", "dipole_ratio",
    "dipole_sep", "dipole_lobe_score", "is_dipole", "masked_frac", "search_star_dist",
    "search_galaxy_dist", "template_star_dist", "template_galaxy_dist", "search_flux_aper",
    "template_flux_aper", "diff_flux_aper",
)


@dataclass(frozen=True)
class DiffMeasureConfig:
    """Configuration of :func:`measure_candidates` (radii in units of the P_D FWHM)."""

    fit_radius_fwhm: float = 2.0
    dipole_radius_fwhm: float = 2.0
    dipole_pixel_sigma: float = 2.0
    dipole_sigma: float = 3.0
    dipole_ratio_min: float = 0.3
    mask_radius_fwhm: float = 2.0
    aperture_fwhm: float = 1.5
    mask_bits: int = maskbits.UNUSABLE | maskbits.EDGE
    star_spread_model: float = 0.003
    star_class_star: float = 0.8


def aperture_weights(dx: float, dy: float, radius: float, half: int,
                     sub: int = 5) -> np.ndarray:
    """(2 half + 1)^2 fractions of pixel area inside a circle (``sub`` x ``sub`` sub-sampling).

    The circle of ``radius`` pixels is centred ``(dx, dy)`` from the central pixel's centre.
    """
    g = (np.arange(sub) + 0.5) / sub - 0.5
    c = np.arange(-half, half + 1)
    xs = (c[None, :, None] + g[None, None, :]) - dx  # (1, n, sub)
    ys = (c[:, None, None] + g[None, None, :]) - dy  # (n, 1, sub)
    inside = (xs[:, :, None, :] ** 2 + ys[:, :, :, None] ** 2) <= radius**2
    return inside.mean(axis=(2, 3))


def _star_flags(cat: Table, cfg: DiffMeasureConfig) -> np.ndarray:
    if "SPREAD_MODEL" in cat.colnames:
        return np.abs(np.asarray(cat["SPREAD_MODEL"], float)) < cfg.star_spread_model
    if "CLASS_STAR" in cat.colnames:
        return np.asarray(cat["CLASS_STAR"], float) >= cfg.star_class_star
    return np.ones(len(cat), bool)


def catalog_positions(cat: Table, wcs: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """0-based search-grid pixel positions of catalog objects (see the module docstring)."""
    names = cat.colnames
    for ra, dec in (("ALPHAWIN_J2000", "DELTAWIN_J2000"), ("ra", "dec")):
        if wcs is not None and ra in names and dec in names:
            x, y = wcs.world_to_pixel_values(np.asarray(cat[ra], float),
                                             np.asarray(cat[dec], float))
            return np.asarray(x, float), np.asarray(y, float)
    if "XWIN_IMAGE" in names:
        return (np.asarray(cat["XWIN_IMAGE"], float) - 1.0,
                np.asarray(cat["YWIN_IMAGE"], float) - 1.0)
    if "x" in names and "y" in names:
        return np.asarray(cat["x"], float), np.asarray(cat["y"], float)
    raise ValueError("catalog has no usable position columns (ALPHAWIN_J2000/DELTAWIN_J2000 "
                     "with a wcs, XWIN_IMAGE/YWIN_IMAGE or x/y)")


def _nearest(cat: Table | None, wcs: Any, x: np.ndarray, y: np.ndarray,
             cfg: DiffMeasureConfig) -> tuple[np.ndarray, np.ndarray]:
    n = len(x)
    star_d, gal_d = np.full(n, np.inf), np.full(n, np.inf)
    if cat is None or len(cat) == 0 or n == 0:
        return star_d, gal_d
    cx, cy = catalog_positions(cat, wcs)
    is_star = _star_flags(cat, cfg)
    pts = np.stack([x, y], axis=1)
    for sel, out in ((is_star, star_d), (~is_star, gal_d)):
        ok = sel & np.isfinite(cx) & np.isfinite(cy)
        if ok.any():
            d, _ = cKDTree(np.stack([cx[ok], cy[ok]], axis=1)).query(pts)
            out[:] = d
    return star_d, gal_d


# detections measured together (windows of (_BLOCK, 2 half + 1, 2 half + 1) float64 each)
_BLOCK = 256


def _windows(arr: np.ndarray, yc: np.ndarray, xc: np.ndarray, own: np.ndarray, half: int,
             fill: float) -> np.ndarray:
    """(n, 2 half + 1, 2 half + 1) float64 cut-outs centred on (yc, xc); ``fill`` outside the
    array and beyond each detection's own half-size ``own`` (so that every detection sees
    what a cut-out of its own size would hold)."""
    ny, nx = arr.shape
    c = np.arange(-half, half + 1)
    rows = yc[:, None] + c[None, :]
    cols = xc[:, None] + c[None, :]
    inside = np.abs(c)[None, :] <= own[:, None]
    vr = inside & (rows >= 0) & (rows < ny)
    vc = inside & (cols >= 0) & (cols < nx)
    out = arr[np.clip(rows, 0, ny - 1)[:, :, None], np.clip(cols, 0, nx - 1)[:, None, :]]
    return np.where(vr[:, :, None] & vc[:, None, :], out.astype(np.float64), fill)


def _windowed_moments_all(img: np.ndarray, w: np.ndarray, dx: np.ndarray, dy: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Mxx, Myy, Mxy) per cut-out (n,) of ``img`` with window ``w`` about offsets (dx, dy),
    all (n, m, m); NaN where the windowed flux is <= 0."""
    wi = w * img
    t = wi.sum(axis=(1, 2))
    pos = t > 0
    tt = np.where(pos, t, 1.0)
    mxx = np.where(pos, (wi * dx ** 2).sum(axis=(1, 2)) / tt, np.nan)
    myy = np.where(pos, (wi * dy ** 2).sum(axis=(1, 2)) / tt, np.nan)
    mxy = np.where(pos, (wi * dx * dy).sum(axis=(1, 2)) / tt, np.nan)
    return mxx, myy, mxy


def _aperture_weights_all(dx: np.ndarray, dy: np.ndarray, radius: np.ndarray, half: int,
                          sub: int = 5) -> np.ndarray:
    """:func:`aperture_weights` for many circles: (n, 2 half + 1, 2 half + 1)."""
    g = (np.arange(sub) + 0.5) / sub - 0.5
    c = np.arange(-half, half + 1)
    xs = (c[None, :, None] + g[None, None, :]) - dx[:, None, None]  # (n, m, sub)
    ys = (c[None, :, None] + g[None, None, :]) - dy[:, None, None]  # (n, m, sub)
    r2 = (radius ** 2)[:, None, None, None]
    inside = np.zeros((len(dx), 2 * half + 1, 2 * half + 1), dtype=np.int64)
    for sy in range(sub):
        inside += ((xs[:, None, :, :] ** 2 + ys[:, :, None, sy, None] ** 2) <= r2).sum(axis=3)
    return inside / float(sub * sub)


def _rendered(psf_d: Any, x: np.ndarray, y: np.ndarray, dx: np.ndarray, dy: np.ndarray
              ) -> list[np.ndarray] | np.ndarray:
    """``psf_d.render(x, y, dx=dx, dy=dy)`` for every detection (float32 stamps, sum 1).

    A :class:`~desgw.diff.zogy_psf.TiledPSF` is rendered in one batch with the same numbers
    (:func:`~desgw.diff.zogy_psf.fourier_shift` of its tile's stamp, normalised): each tile's
    transform is taken once, and the shifted stamps come from one inverse transform.
    """
    n = len(x)
    if not isinstance(psf_d, TiledPSF) or n == 0:
        return [psf_d.render(float(x[k]), float(y[k]), dx=float(dx[k]), dy=float(dy[k]))
                for k in range(n)]
    stamps = psf_d.stamps
    tj, ti, m, _ = stamps.shape
    j = np.clip(np.floor(y).astype(np.int64) // psf_d.tile, 0, tj - 1)
    i = np.clip(np.floor(x).astype(np.int64) // psf_d.tile, 0, ti - 1)
    tiles, which = np.unique(j * ti + i, return_inverse=True)
    p = sfft.next_fast_len(m, real=True)
    hats = sfft.rfft2(stamps.reshape(tj * ti, m, m)[tiles].astype(np.float64), s=(p, p),
                      workers=1)
    ramp = np.exp(-2j * np.pi * dy[:, None] * np.fft.fftfreq(p)[None, :])[:, :, None] \
        * np.exp(-2j * np.pi * dx[:, None] * np.fft.rfftfreq(p)[None, :])[:, None, :]
    img = sfft.irfft2(hats[which.ravel()] * ramp, s=(p, p), workers=1,
                      overwrite_x=True)[:, :m, :m]
    still = (dx == 0.0) & (dy == 0.0)
    if still.any():
        img[still] = stamps.reshape(tj * ti, m, m)[tiles][which.ravel()[still]]
    return (img / img.sum(axis=(1, 2))[:, None, None]).astype(np.float32)


def _measure_block(cols: dict[str, np.ndarray], sl: slice, subtraction: Subtraction,
                   x_all: np.ndarray, y_all: np.ndarray, xp_all: np.ndarray,
                   yp_all: np.ndarray, neg_all: np.ndarray, search_image: np.ndarray,
                   template_image: np.ndarray, scale: float, cfg: DiffMeasureConfig) -> None:
    """The per-detection columns of :func:`measure_candidates` for detections ``sl``, all at
    once on cut-outs of the block's largest size (each detection's pixels beyond its own
    size hold the fill values, so the numbers are those of a cut-out of its own size)."""
    x, y, neg = x_all[sl], y_all[sl], neg_all[sl]
    n = len(x)
    sign = np.where(neg, -1.0, 1.0)
    xr = np.round(x).astype(np.int64)
    yr = np.round(y).astype(np.int64)
    ddx, ddy = x - xr, y - yr
    psf_d = subtraction.psf_diff
    fwhm = np.array([psf_d.fwhm_at(float(x[k]), float(y[k])) for k in range(n)], dtype=float)
    cols["fwhm_psf"][sl] = fwhm
    # ZOGY flux: interpolated peak of S / F_S (at its pixel: the detection's position is the
    # peak of S, which differs from the S_corr peak pixel next to a brighter source)
    ny, nx = subtraction.flux_image.shape
    fy, fx = np.clip(yr, 0, ny - 1), np.clip(xr, 0, nx - 1)
    patches = sign[:, None, None] * _windows(subtraction.flux_image, fy, fx, np.ones(n, int),
                                             1, 0.0)
    cols["flux"][sl] = sign * np.where(patches[:, 1, 1] > 0, quadratic_peaks(patches)[2],
                                        patches[:, 1, 1])
    cols["flux_err"][sl] = np.asarray(subtraction.flux_err_image[fy, fx], dtype=float)
    own = np.ceil(max(cfg.fit_radius_fwhm, cfg.dipole_radius_fwhm, cfg.mask_radius_fwhm,
                      cfg.aperture_fwhm) * fwhm).astype(np.int64) + 1
    half = int(own.max())
    size = 2 * half + 1
    # The full PSF stamp (sum 1) at each position, cropped without renormalising: the fit
    # gives the total flux.
    psf = np.zeros((n, size, size))
    fulls = _rendered(psf_d, x, y, ddx, ddy)
    for k in range(n):
        full = fulls[k]
        hp = full.shape[0] // 2
        if hp >= half:
            psf[k] = full[hp - half:hp + half + 1, hp - half:hp + half + 1]
        else:
            psf[k, half - hp:half + hp + 1, half - hp:half + hp + 1] = full
    d = _windows(subtraction.diff, yr, xr, own, half, 0.0)
    v = _windows(subtraction.diff_var, yr, xr, own, half, np.inf)
    s = _windows(subtraction.score, yr, xr, own, half, 0.0)
    m = _windows(subtraction.mask, yr, xr, own, half, float(maskbits.EDGE)).astype(np.int64)
    c = np.arange(-half, half + 1)
    dxs = c[None, None, :] - ddx[:, None, None]
    dys = c[None, :, None] - ddy[:, None, None]
    rr2 = dxs ** 2 + dys ** 2
    good = np.isfinite(v) & (v > 0)

    def disk(r_fwhm: float) -> np.ndarray:
        return rr2 <= ((r_fwhm * fwhm) ** 2)[:, None, None]

    fit = good & disk(cfg.fit_radius_fwhm)
    # Unweighted fit (D's noise is white in blank sky by construction): weights from the
    # variance map would carry the source's own, data-estimated Poisson term and bias the
    # flux; the error propagates the full variance.
    pf = np.where(fit, psf, 0.0)
    spp = (pf * pf).sum(axis=(1, 2))
    nfit = fit.sum(axis=(1, 2))
    ok = (spp > 0) & (nfit > 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(ok, (pf * d).sum(axis=(1, 2)) / np.where(ok, spp, 1.0), np.nan)
        cols["flux_psf"][sl] = f
        cols["flux_psf_err"][sl] = np.where(
            ok, np.sqrt((pf * pf * np.where(fit, v, 0.0)).sum(axis=(1, 2))) / np.where(ok, spp, 1.0),
            np.nan)
        chi = np.where(fit, (d - f[:, None, None] * psf) ** 2 / np.where(fit, v, 1.0), 0.0)
        cols["psf_chi2"][sl] = np.where(ok, chi.sum(axis=(1, 2)) / (nfit - 1), np.nan)
        # Shape: Gaussian-windowed moments of sign * diff and of P_D.
        sw = fwhm / 2.3548
        gw = np.exp(-0.5 * rr2 / (sw ** 2)[:, None, None]) * good
        sd = sign[:, None, None] * d
        mxx, myy, mxy = _windowed_moments_all(sd, gw, dxs, dys)
        pxx, pyy, _ = _windowed_moments_all(psf, gw, dxs, dys)
        cols["mxx"][sl], cols["myy"][sl], cols["mxy"][sl] = mxx, myy, mxy
        ratio2 = np.where(np.isfinite(mxx), (mxx + myy) / (pxx + pyy), np.nan)
        cols["fwhm_ratio"][sl] = np.where(ratio2 > 0, np.sqrt(ratio2), np.nan)
        # Dipole metrics.
        rd = disk(cfg.dipole_radius_fwhm)
        sig = np.sqrt(np.where(good, v, np.inf))
        same = rd & good & (sd > cfg.dipole_pixel_sigma * sig)
        opp = rd & good & (sd < -cfg.dipole_pixel_sigma * sig)
        pos_sum = np.where(same, sd, 0.0).sum(axis=(1, 2))
        neg_sum = -np.where(opp, sd, 0.0).sum(axis=(1, 2))
        ratio = np.where(pos_sum > 0, neg_sum / np.where(pos_sum > 0, pos_sum, 1.0), np.nan)
    cols["dipole_ratio"][sl] = ratio
    # extrema of the signed score within the dipole disk (0 elsewhere in the detection's own
    # cut-out; the first in row order on ties, as in a cut-out of its own size)
    ss = np.where(rd, sign[:, None, None] * s, 0.0)
    inbox = (np.abs(c)[None, :] <= own[:, None])
    inbox2 = inbox[:, :, None] & inbox[:, None, :]
    jo = np.argmin(np.where(inbox2, ss, np.inf).reshape(n, -1), axis=1)
    js = np.argmax(np.where(inbox2, ss, -np.inf).reshape(n, -1), axis=1)
    lobe = ss.reshape(n, -1)[np.arange(n), jo]
    cols["dipole_lobe_score"][sl] = sign * lobe
    strong = -lobe >= cfg.dipole_sigma
    sep = np.hypot(jo // size - js // size, jo % size - js % size).astype(float)
    cols["dipole_sep"][sl] = np.where(strong, sep, np.nan)
    cols["is_dipole"][sl] = strong & (ratio >= cfg.dipole_ratio_min)
    # Masked fraction.
    rm = disk(cfg.mask_radius_fwhm)
    cols["masked_frac"][sl] = (((m & cfg.mask_bits) != 0) & rm).sum(axis=(1, 2)) \
        / rm.sum(axis=(1, 2))
    # Aperture fluxes.
    ap = _aperture_weights_all(ddx, ddy, cfg.aperture_fwhm * fwhm, half)
    cols["search_flux_aper"][sl] = (ap * _windows(search_image, yr, xr, own, half, 0.0)
                                    ).sum(axis=(1, 2))
    cols["template_flux_aper"][sl] = scale * (
        ap * _windows(template_image, yr, xr, own, half, 0.0)).sum(axis=(1, 2))
    cols["diff_flux_aper"][sl] = (ap * d).sum(axis=(1, 2))


def measure_candidates(subtraction: Subtraction, detections: Table, *,
                       search_image: np.ndarray, template_image: np.ndarray,
                       search_catalog: Table | None = None,
                       template_catalog: Table | None = None, wcs: Any = None,
                       config: DiffMeasureConfig = DiffMeasureConfig()) -> Table:
    """Measure every detection on the difference image and its context.

    Parameters
    ----------
    subtraction : Subtraction
        Result of :func:`desgw.diff.subtract.subtract`.
    detections : astropy.table.Table
        Result of :func:`desgw.diff.detect.detect_transients` (``id``, ``x``, ``y``,
        ``x_peak``, ``y_peak``, ``score``, ``negative``).
    search_image : numpy.ndarray
        (ny, nx) background-subtracted search image (e-).
    template_image : numpy.ndarray
        (ny, nx) background-subtracted template on the search grid in its own units (scaled
        here by ``subtraction.meta["scale"]``).
    search_catalog, template_catalog : astropy.table.Table or None
        SE catalogs (see the module docstring for the columns used).
    wcs : astropy.wcs.WCS or None
        WCS of the search grid (for ``ra``/``dec`` and sky catalog positions).
    config : DiffMeasureConfig

    Returns
    -------
    astropy.table.Table
        Columns :data:`MEASURE_COLUMNS` (see the module docstring).
    """
    scale = float(subtraction.meta.get("scale", 1.0))
    shape = subtraction.diff.shape
    for name, a in (("search_image", search_image), ("template_image", template_image)):
        if np.shape(a) != shape:
            raise ValueError(f"{name} has shape {np.shape(a)}, expected {shape}")
    n = len(detections)
    cols: dict[str, np.ndarray] = {c: np.full(n, np.nan) for c in MEASURE_COLUMNS}
    x = np.asarray(detections["x"], float)
    y = np.asarray(detections["y"], float)
    xp = np.asarray(detections["x_peak"], int)
    yp = np.asarray(detections["y_peak"], int)
    neg = np.asarray(detections["negative"], bool)
    cols["id"] = np.asarray(detections["id"], np.int64)
    cols["x"], cols["y"], cols["negative"] = x, y, neg
    cols["score"] = np.asarray(detections["score"], float)
    cols["is_dipole"] = np.zeros(n, bool)
    if wcs is not None and n:
        ra, dec = wcs.pixel_to_world_values(x, y)
        cols["ra"], cols["dec"] = np.asarray(ra, float), np.asarray(dec, float)
    for b0 in range(0, n, _BLOCK):
        _measure_block(cols, slice(b0, min(b0 + _BLOCK, n)), subtraction, x, y, xp, yp, neg,
                       search_image, template_image, scale, config)
    with np.errstate(divide="ignore", invalid="ignore"):
        cols["snr"] = cols["flux"] / cols["flux_err"]
    for prefix, cat in (("search", search_catalog), ("template", template_catalog)):
        sd_, gd_ = _nearest(cat, wcs, x, y, config)
        cols[f"{prefix}_star_dist"], cols[f"{prefix}_galaxy_dist"] = sd_, gd_
    t = Table()
    for name in MEASURE_COLUMNS:
        t[name] = cols[name]
    t.meta["aperture_radius_fwhm"] = config.aperture_fwhm
    return t
