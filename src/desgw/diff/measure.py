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
``flux``, ``flux_err``    ZOGY PSF flux ``S / F_S`` interpolated to the peak (log-quadratic
                          fit on 3 x 3 pixels) and its error at the peak pixel (e-, signed)
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
from astropy.table import Table
from scipy.spatial import cKDTree

from desgw.diff.detect import quadratic_peak
from desgw.diff.subtract import Subtraction
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


def _window(arr: np.ndarray, yc: int, xc: int, half: int, fill: float) -> np.ndarray:
    """(2 half + 1)^2 cut-out centred on (yc, xc), ``fill`` outside the array."""
    ny, nx = arr.shape
    out = np.full((2 * half + 1, 2 * half + 1), fill, dtype=np.float64)
    y0, y1 = max(yc - half, 0), min(yc + half + 1, ny)
    x0, x1 = max(xc - half, 0), min(xc + half + 1, nx)
    if y1 > y0 and x1 > x0:
        out[y0 - (yc - half):y1 - (yc - half), x0 - (xc - half):x1 - (xc - half)] = \
            arr[y0:y1, x0:x1]
    return out


def _windowed_moments(img: np.ndarray, w: np.ndarray, dx: np.ndarray,
                      dy: np.ndarray) -> tuple[float, float, float]:
    """(Mxx, Myy, Mxy) of ``img`` with window ``w`` about offsets (dx, dy); NaN if flux <= 0."""
    t = float((w * img).sum())
    if t <= 0:
        return np.nan, np.nan, np.nan
    return (float((w * img * dx**2).sum() / t), float((w * img * dy**2).sum() / t),
            float((w * img * dx * dy).sum() / t))


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
    diff = subtraction.diff
    dvar = subtraction.diff_var
    score = subtraction.score
    fimg, ferr = subtraction.flux_image, subtraction.flux_err_image
    mask = subtraction.mask
    scale = float(subtraction.meta.get("scale", 1.0))
    shape = diff.shape
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
    cfg = config
    for k in range(n):
        sign = -1.0 if neg[k] else 1.0
        xi, yi = int(xp[k]), int(yp[k])
        xr, yr = int(round(x[k])), int(round(y[k]))
        ddx, ddy = x[k] - xr, y[k] - yr
        fwhm = subtraction.psf_diff.fwhm_at(x[k], y[k])
        cols["fwhm_psf"][k] = fwhm
        # ZOGY flux: interpolated peak of S / F_S.
        patch = sign * _window(fimg, yi, xi, 1, 0.0)
        _, _, fpk = quadratic_peak(patch) if patch[1, 1] > 0 else (0.0, 0.0, patch[1, 1])
        cols["flux"][k] = sign * fpk
        cols["flux_err"][k] = float(ferr[yi, xi])
        # Direct PSF fit on diff.
        half = int(np.ceil(max(cfg.fit_radius_fwhm, cfg.dipole_radius_fwhm,
                               cfg.mask_radius_fwhm, cfg.aperture_fwhm) * fwhm)) + 1
        size = 2 * half + 1
        # Full stamp (sum 1), cropped without renormalising: the fit gives the total flux.
        full = subtraction.psf_diff.render(x[k], y[k], dx=ddx, dy=ddy).astype(float)
        hp = full.shape[0] // 2
        if hp >= half:
            psf = full[hp - half:hp + half + 1, hp - half:hp + half + 1]
        else:
            psf = np.zeros((size, size))
            psf[half - hp:half + hp + 1, half - hp:half + hp + 1] = full
        d = _window(diff, yr, xr, half, 0.0)
        v = _window(dvar, yr, xr, half, np.inf)
        s = _window(score, yr, xr, half, 0.0)
        m = _window(mask, yr, xr, half, float(maskbits.EDGE)).astype(np.int64)
        c = np.arange(-half, half + 1)
        rr2 = (c[None, :] - ddx) ** 2 + (c[:, None] - ddy) ** 2
        good = np.isfinite(v) & (v > 0)
        fit = good & (rr2 <= (cfg.fit_radius_fwhm * fwhm) ** 2)
        # Unweighted fit (D's noise is white in blank sky by construction): weights from the
        # variance map would carry the source's own, data-estimated Poisson term and bias the
        # flux; the error propagates the full variance.
        pf = np.where(fit, psf, 0.0)
        spp = float((pf * pf).sum())
        if spp > 0 and fit.sum() > 1:
            f = float((pf * d).sum()) / spp
            vv = np.where(fit, v, 0.0)
            cols["flux_psf"][k] = f
            cols["flux_psf_err"][k] = float(np.sqrt((pf * pf * vv).sum())) / spp
            chi = np.where(fit, (d - f * psf) ** 2 / np.where(fit, v, 1.0), 0.0)
            cols["psf_chi2"][k] = float(chi.sum()) / (fit.sum() - 1)
        # Shape: Gaussian-windowed moments of sign * diff and of P_D.
        sw = fwhm / 2.3548
        gw = np.exp(-0.5 * rr2 / sw**2) * good
        dxs = (c[None, :] - ddx) * np.ones((size, 1))
        dys = (c[:, None] - ddy) * np.ones((1, size))

        mxx, myy, mxy = _windowed_moments(sign * d, gw, dxs, dys)
        pxx, pyy, _ = _windowed_moments(psf, gw, dxs, dys)
        cols["mxx"][k], cols["myy"][k], cols["mxy"][k] = mxx, myy, mxy
        ratio2 = (mxx + myy) / (pxx + pyy) if np.isfinite(mxx) else np.nan
        cols["fwhm_ratio"][k] = np.sqrt(ratio2) if ratio2 > 0 else np.nan
        # Dipole metrics.
        rd = rr2 <= (cfg.dipole_radius_fwhm * fwhm) ** 2
        sig = np.sqrt(np.where(good, v, np.inf))
        sd = sign * d
        same = (rd & good & (sd > cfg.dipole_pixel_sigma * sig))
        opp = (rd & good & (sd < -cfg.dipole_pixel_sigma * sig))
        pos_sum = float(sd[same].sum())
        neg_sum = float(-sd[opp].sum())
        cols["dipole_ratio"][k] = neg_sum / pos_sum if pos_sum > 0 else np.nan
        ss = np.where(rd, sign * s, 0.0)
        jo = np.unravel_index(int(np.argmin(ss)), ss.shape)
        js = np.unravel_index(int(np.argmax(ss)), ss.shape)
        lobe = float(ss[jo])
        cols["dipole_lobe_score"][k] = sign * lobe
        if -lobe >= cfg.dipole_sigma:
            cols["dipole_sep"][k] = float(np.hypot(jo[0] - js[0], jo[1] - js[1]))
        cols["is_dipole"][k] = bool(-lobe >= cfg.dipole_sigma
                                    and cols["dipole_ratio"][k] >= cfg.dipole_ratio_min)
        # Masked fraction.
        rm = rr2 <= (cfg.mask_radius_fwhm * fwhm) ** 2
        cols["masked_frac"][k] = float(((m & cfg.mask_bits) != 0)[rm].mean())
        # Aperture fluxes.
        ap = aperture_weights(ddx, ddy, cfg.aperture_fwhm * fwhm, half)
        cols["search_flux_aper"][k] = float((ap * _window(search_image, yr, xr, half, 0.0)).sum())
        cols["template_flux_aper"][k] = scale * float(
            (ap * _window(template_image, yr, xr, half, 0.0)).sum())
        cols["diff_flux_aper"][k] = float((ap * d).sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        cols["snr"] = cols["flux"] / cols["flux_err"]
    for prefix, cat in (("search", search_catalog), ("template", template_catalog)):
        sd_, gd_ = _nearest(cat, wcs, x, y, cfg)
        cols[f"{prefix}_star_dist"], cols[f"{prefix}_galaxy_dist"] = sd_, gd_
    t = Table()
    for name in MEASURE_COLUMNS:
        t[name] = cols[name]
    t.meta["aperture_radius_fwhm"] = cfg.aperture_fwhm
    return t
