"""Registration refinement: correct the WCS mapping of a template CCD with matched stars.

Two epochs' WCS solutions each carry their own astrometric error (tens of mas per CCD, more
for a poor solution or a stale template), and a relative offset of 0.1-0.3" between them is
enough to leave dipoles at every bright star and to lose flux of a transient in the difference
(a 0.14" = 0.53 px offset costs ~13 % of a PSF flux at 1" seeing). Before resampling, the
output -> template pixel mapping given by the two WCS (:class:`~desgw.diff.resample_mapping.
GridMapping`) is therefore refined with the stars both images measured:

1. bright, unflagged, point-like stars are taken from each catalog (:func:`select_stars`:
   ``FLAGS == 0``, no mask bit in ``IMAFLAGS_ISO``, PSF S/N >= ``min_snr``, ``|SPREAD_MODEL|``
   below ``max_spread_model`` when the column exists) and placed on their own CCD's pixels
   through that CCD's WCS (``ALPHAWIN_J2000``/``DELTAWIN_J2000`` were computed with it, so the
   positions are the measured centroids; the template's in the frame of the possibly cropped
   template);
2. each search star is mapped to the template through the WCS mapping (the prediction) and
   matched to the nearest template star, first within ``search_radius_px`` to find the
   median offset, then within ``match_radius_px`` of the prediction corrected by it;
3. the residuals ``observed - predicted`` (template pixels) are fitted by weighted least
   squares, as a shift when ``min_stars_shift <= n < min_stars_affine``, as an affine
   function of the predicted position when ``n >= min_stars_affine``, clipping matches more
   than ``clip_sigma`` from the fit (variables, blends, proper motions) and refitting;
4. the fit is applied to the mapping's nodes: ``x_in' = x_in + dx(x_in, y_in)`` and the pixel
   area ratio multiplied by the determinant of ``I + M`` (:meth:`Registration.apply`).

With fewer than ``min_stars_shift`` matches, or a fit whose shift exceeds ``max_shift_px``,
the WCS mapping is kept and the result says so (``method = "wcs"`` and a ``reason``): the
caller flags it.

Position errors: ``ERRAWIN_IMAGE`` (px) of both catalogs in quadrature when present, else
``0.6 FWHM / SNR`` with a FWHM of 4 px, with a floor of ``error_floor_px``; ``chi2_dof`` of
the final fit says whether these errors describe the residuals.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from astropy.table import Table
from scipy.spatial import cKDTree

from desgw.diff.resample_mapping import GridMapping

__all__ = [
    "Registration",
    "RegistrationConfig",
    "StarPositions",
    "refine_registration",
    "select_stars",
]

log = logging.getLogger(__name__)

#: ``Registration.method`` values.
METHODS: tuple[str, ...] = ("affine", "shift", "wcs")


@dataclass(frozen=True)
class RegistrationConfig:
    """Settings of :func:`refine_registration` and :func:`select_stars`.

    Attributes
    ----------
    enabled : bool
        Refine (False: the WCS mapping is used as it is, method ``"wcs"``).
    min_snr : float
        Least PSF S/N (``FLUX_PSF / FLUXERR_PSF``, else ``SNR_WIN``) of a star used.
    max_spread_model : float
        Largest ``|SPREAD_MODEL|`` of a star used (when the column exists).
    max_stars : int
        At most this many of the brightest selected stars of each catalog are used.
    search_radius_px : float
        Radius of the first match (template pixels), which finds the median offset: the
        largest WCS error the refinement recovers.
    match_radius_px : float
        Radius of the final match around the offset-corrected prediction (template pixels).
    min_stars_shift, min_stars_affine : int
        Least matched stars for a shift, for an affine fit.
    clip_sigma : float
        Matches whose normalised residual exceeds this are dropped and the fit redone.
    max_iter : int
        Rounds of clipping.
    max_shift_px : float
        A fitted shift larger than this (template pixels) is not trusted: WCS kept.
    error_floor_px : float
        Added in quadrature to each star's position error (px): PSF-model and distortion
        errors that the catalog errors do not hold.
    """

    enabled: bool = True
    min_snr: float = 20.0
    max_spread_model: float = 0.005
    max_stars: int = 2000
    search_radius_px: float = 6.0
    match_radius_px: float = 1.0
    min_stars_shift: int = 5
    min_stars_affine: int = 20
    clip_sigma: float = 4.0
    max_iter: int = 4
    max_shift_px: float = 5.0
    error_floor_px: float = 0.005

    def __post_init__(self) -> None:
        if not self.min_snr > 0:
            raise ValueError(f"RegistrationConfig.min_snr must be > 0, got {self.min_snr}")
        if not 0 < self.match_radius_px <= self.search_radius_px:
            raise ValueError("RegistrationConfig needs 0 < match_radius_px <= search_radius_px")
        if self.min_stars_shift < 2 or self.min_stars_affine < max(self.min_stars_shift, 4):
            raise ValueError("RegistrationConfig needs min_stars_shift >= 2 and "
                             "min_stars_affine >= max(min_stars_shift, 4)")
        if not self.clip_sigma > 1:
            raise ValueError("RegistrationConfig.clip_sigma must be > 1")


@dataclass(frozen=True)
class StarPositions:
    """Selected stars of one CCD on its own pixels.

    Attributes
    ----------
    x, y : numpy.ndarray
        0-based pixel positions (float64).
    err : numpy.ndarray
        1-D position error per axis (px).
    """

    x: np.ndarray
    y: np.ndarray
    err: np.ndarray

    def __len__(self) -> int:
        return int(self.x.size)


@dataclass(frozen=True)
class Registration:
    """The refinement of one template CCD's mapping (template pixels throughout).

    ``dx(x, y) = shift_x + m[0, 0] (x - x_ref) + m[0, 1] (y - y_ref)`` and likewise ``dy``
    with the second row: the correction added to the WCS-predicted template position
    ``(x, y)``.

    Attributes
    ----------
    method : {"affine", "shift", "wcs"}
        What was fitted; ``"wcs"``: nothing applied (see ``reason``).
    n_stars : int
        Matched stars kept in the fit (0 for ``"wcs"`` without matches).
    shift_x, shift_y : float
        Correction at the reference point (template pixels).
    matrix : tuple
        ((m00, m01), (m10, m11)) linear part (dimensionless; zeros for a shift).
    x_ref, y_ref : float
        Reference point (template pixels): the mean position of the matched stars.
    rms_before, rms_after : float
        RMS of the 2-D residual of the kept matches before and after the correction (px).
    chi2_dof : float
        Chi-squared per degree of freedom of the final fit with the stars' position errors.
    reason : str
        Why the WCS mapping was kept (empty when a fit was applied).
    """

    method: str
    n_stars: int = 0
    shift_x: float = 0.0
    shift_y: float = 0.0
    matrix: tuple[tuple[float, float], tuple[float, float]] = ((0.0, 0.0), (0.0, 0.0))
    x_ref: float = 0.0
    y_ref: float = 0.0
    rms_before: float = float("nan")
    rms_after: float = float("nan")
    chi2_dof: float = float("nan")
    reason: str = ""

    @property
    def applied(self) -> bool:
        """True when a correction is applied to the mapping."""
        return self.method != "wcs"

    def correction(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(dx, dy) to add to WCS-predicted template positions (template pixels)."""
        x = np.asarray(x, np.float64)
        y = np.asarray(y, np.float64)
        if not self.applied:
            return np.zeros_like(x), np.zeros_like(y)
        (a, b), (c, d) = self.matrix
        u, v = x - self.x_ref, y - self.y_ref
        return self.shift_x + a * u + b * v, self.shift_y + c * u + d * v

    def apply(self, mapping: GridMapping) -> GridMapping:
        """``mapping`` with the correction added to its input positions and its area ratios
        multiplied by ``det(I + M)`` (the mapping itself is not modified)."""
        if not self.applied:
            return mapping
        dx, dy = self.correction(mapping.xin, mapping.yin)
        (a, b), (c, d) = self.matrix
        det = abs((1.0 + a) * (1.0 + d) - b * c)
        return replace(mapping, xin=mapping.xin + dx, yin=mapping.yin + dy,
                       area=mapping.area * det)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready record (floats and strings)."""
        d = asdict(self)
        d["matrix"] = [list(map(float, row)) for row in self.matrix]
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                for k, v in d.items()}


def _col(cat: Table, *names: str) -> np.ndarray | None:
    for n in names:
        if n in cat.colnames:
            return np.asarray(cat[n], np.float64)
    return None


def select_stars(catalog: Table | None, wcs: Any, *, config: RegistrationConfig
                 = RegistrationConfig()) -> StarPositions:
    """Bright unflagged point sources of an SE catalog, on the pixels of ``wcs``.

    Parameters
    ----------
    catalog : astropy.table.Table or None
        SE catalog with ``ALPHAWIN_J2000``, ``DELTAWIN_J2000`` (deg) and ``FLUX_PSF``,
        ``FLUXERR_PSF`` (or ``SNR_WIN``); ``FLAGS``, ``IMAFLAGS_ISO``, ``SPREAD_MODEL`` and
        ``ERRAWIN_IMAGE`` (px) are used when present.
    wcs : astropy.wcs.WCS
        WCS of the image whose pixels the positions are wanted on (0-based).
    config : RegistrationConfig

    Returns
    -------
    StarPositions
        Possibly empty (no catalog, no sky columns, no star passing).
    """
    empty = StarPositions(np.zeros(0), np.zeros(0), np.zeros(0))
    if catalog is None or len(catalog) == 0 or wcs is None:
        return empty
    ra = _col(catalog, "ALPHAWIN_J2000")
    dec = _col(catalog, "DELTAWIN_J2000")
    if ra is None or dec is None:
        return empty
    flux, ferr = _col(catalog, "FLUX_PSF"), _col(catalog, "FLUXERR_PSF")
    if flux is not None and ferr is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            snr = np.where(ferr > 0, flux / ferr, 0.0)
    else:
        snr_win = _col(catalog, "SNR_WIN")
        if snr_win is None:
            return empty
        snr = snr_win
    ok = np.isfinite(ra) & np.isfinite(dec) & np.isfinite(snr) & (snr >= config.min_snr)
    for name in ("FLAGS", "IMAFLAGS_ISO"):
        v = _col(catalog, name)
        if v is not None:
            ok &= v == 0
    sm = _col(catalog, "SPREAD_MODEL")
    if sm is not None:
        ok &= np.abs(np.nan_to_num(sm, nan=1.0)) <= config.max_spread_model
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return empty
    idx = idx[np.argsort(-snr[idx], kind="stable")[:config.max_stars]]
    x, y = wcs.all_world2pix(ra[idx], dec[idx], 0, tolerance=1e-8, maxiter=50, quiet=True)
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    err = _col(catalog, "ERRAWIN_IMAGE")
    e = err[idx] if err is not None else 0.6 * 4.0 / snr[idx]
    e = np.where(np.isfinite(e) & (e > 0), e, 0.6 * 4.0 / snr[idx])
    fin = np.isfinite(x) & np.isfinite(y)
    return StarPositions(x[fin], y[fin], np.hypot(e[fin], config.error_floor_px))


def _fit(xp: np.ndarray, yp: np.ndarray, rx: np.ndarray, ry: np.ndarray, w: np.ndarray,
         affine: bool, x_ref: float, y_ref: float) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares of the residuals; returns the x and y coefficient vectors
    ``(shift, m_x, m_y)`` (m zero for a shift)."""
    if affine:
        design = np.c_[np.ones_like(xp), xp - x_ref, yp - y_ref]
    else:
        design = np.ones((xp.size, 1))
    sw = np.sqrt(w)[:, None]
    cx = np.linalg.lstsq(design * sw, rx * sw[:, 0], rcond=None)[0]
    cy = np.linalg.lstsq(design * sw, ry * sw[:, 0], rcond=None)[0]
    if not affine:
        cx, cy = np.r_[cx, 0.0, 0.0], np.r_[cy, 0.0, 0.0]
    return cx, cy


def refine_registration(search_stars: StarPositions, template_stars: StarPositions,
                        mapping: GridMapping, *, config: RegistrationConfig
                        = RegistrationConfig()) -> Registration:
    """Fit the correction of a template mapping from stars matched between the two images.

    Parameters
    ----------
    search_stars : StarPositions
        Stars of the search CCD on the search (output) pixels.
    template_stars : StarPositions
        Stars of the template CCD on the template (input) pixels of ``mapping``.
    mapping : GridMapping
        Output (search) -> input (template) pixel mapping from the two WCS.
    config : RegistrationConfig

    Returns
    -------
    Registration
        The fit (module docstring), or method ``"wcs"`` with the reason when too few stars
        match or the fit is not trusted.
    """
    if not config.enabled:
        return Registration(method="wcs", reason="registration refinement disabled")
    ny, nx = mapping.shape_out
    on = ((search_stars.x >= 0) & (search_stars.x <= nx - 1) & (search_stars.y >= 0)
          & (search_stars.y <= ny - 1))
    if on.sum() < config.min_stars_shift or len(template_stars) < config.min_stars_shift:
        return Registration(method="wcs", reason=f"too few stars ({int(on.sum())} search, "
                            f"{len(template_stars)} template; need {config.min_stars_shift})")
    xp, yp, _ = mapping.evaluate(search_stars.x[on], search_stars.y[on])
    es = search_stars.err[on]
    fin = np.isfinite(xp) & np.isfinite(yp)
    xp, yp, es = xp[fin], yp[fin], es[fin]
    tree = cKDTree(np.c_[template_stars.x, template_stars.y])
    # first pass: median offset of nearest neighbours within the search radius
    d, j = tree.query(np.c_[xp, yp], distance_upper_bound=config.search_radius_px)
    hit = np.isfinite(d)
    if hit.sum() < config.min_stars_shift:
        return Registration(method="wcs", n_stars=int(hit.sum()),
                            reason=f"{int(hit.sum())} stars matched within "
                                   f"{config.search_radius_px:g} px (need "
                                   f"{config.min_stars_shift})")
    off_x = float(np.median(template_stars.x[j[hit]] - xp[hit]))
    off_y = float(np.median(template_stars.y[j[hit]] - yp[hit]))
    # second pass: close matches around the offset-corrected prediction
    d, j = tree.query(np.c_[xp + off_x, yp + off_y], distance_upper_bound=config.match_radius_px)
    hit = np.isfinite(d)
    # one search star per template star: keep the closest
    order = np.argsort(d[hit])
    _, first = np.unique(j[hit][order], return_index=True)
    sel = np.flatnonzero(hit)[order[first]]
    if sel.size < config.min_stars_shift:
        return Registration(method="wcs", n_stars=int(sel.size),
                            reason=f"{sel.size} stars matched within "
                                   f"{config.match_radius_px:g} px (need "
                                   f"{config.min_stars_shift})")
    xp, yp = xp[sel], yp[sel]
    rx = template_stars.x[j[sel]] - xp
    ry = template_stars.y[j[sel]] - yp
    var = es[sel] ** 2 + template_stars.err[j[sel]] ** 2
    keep = np.ones(sel.size, bool)
    rms_before = float(np.sqrt(np.mean(rx ** 2 + ry ** 2)))
    cx = cy = np.zeros(3)
    affine = False
    x_ref = y_ref = 0.0
    for _ in range(config.max_iter + 1):
        n = int(keep.sum())
        if n < config.min_stars_shift:
            return Registration(method="wcs", n_stars=n, rms_before=rms_before,
                                reason=f"{n} stars left after clipping (need "
                                       f"{config.min_stars_shift})")
        affine = n >= config.min_stars_affine
        x_ref, y_ref = float(xp[keep].mean()), float(yp[keep].mean())
        cx, cy = _fit(xp[keep], yp[keep], rx[keep], ry[keep], 1.0 / var[keep], affine,
                      x_ref, y_ref)
        mx = cx[0] + cx[1] * (xp - x_ref) + cx[2] * (yp - y_ref)
        my = cy[0] + cy[1] * (xp - x_ref) + cy[2] * (yp - y_ref)
        chi = np.hypot(rx - mx, ry - my) / np.sqrt(var)
        # robust scale of the normalised residuals (2-D: median of a chi with 2 dof ~ 1.18)
        scale = max(float(np.median(chi[keep])) / 1.1774, 1.0)
        new = chi <= config.clip_sigma * scale
        if np.array_equal(new, keep):
            break
        keep = new
    n = int(keep.sum())
    npar = 3 if affine else 1
    resid2 = (rx - mx) ** 2 + (ry - my) ** 2
    dof = max(2 * (n - npar), 1)
    chi2_dof = float(np.sum(resid2[keep] / var[keep]) / dof)
    shift = float(np.hypot(cx[0], cy[0]))
    rms_before = float(np.sqrt(np.mean(rx[keep] ** 2 + ry[keep] ** 2)))
    rms_after = float(np.sqrt(np.mean(resid2[keep])))
    if shift > config.max_shift_px:
        return Registration(method="wcs", n_stars=n, rms_before=rms_before,
                            reason=f"fitted shift {shift:.2f} px exceeds "
                                   f"{config.max_shift_px:g} px")
    reg = Registration(method="affine" if affine else "shift", n_stars=n,
                       shift_x=float(cx[0]), shift_y=float(cy[0]),
                       matrix=((float(cx[1]), float(cx[2])), (float(cy[1]), float(cy[2]))),
                       x_ref=x_ref, y_ref=y_ref, rms_before=rms_before, rms_after=rms_after,
                       chi2_dof=chi2_dof)
    log.debug("registration: %s from %d stars, shift (%.3f, %.3f) px, rms %.3f -> %.3f px, "
              "chi2/dof %.2f", reg.method, n, reg.shift_x, reg.shift_y, rms_before, rms_after,
              chi2_dof)
    return reg
