"""Astrometric solution of one DECam CCD against Gaia (the SCAMP step of the original pipeline).

:func:`solve_wcs` takes detected source positions (0-based trimmed pixels), Gaia positions at
the exposure epoch and the raw header WCS, and returns a TAN-SIP `astropy.wcs.WCS` with the
matches, residuals and the correction it applied to the header WCS.

Algorithm
---------
1. **Frame.** All sky positions are projected (gnomonic) about a tangent point, first the
   header WCS's position of the CCD centre, then the fitted one; offsets are in arcsec
   (xi towards East = along RA cos(dec), eta towards North), so RA = 0/360 and the poles need
   no special case. Detections are put on that plane through the header WCS.
2. **Offset vote.** Pairwise offsets reference - detection of the brightest sources (by
   ``flux`` / ``ref_mag`` when given) within ``max_offset_arcsec`` are binned on a 2-D grid
   (``vote_bin_arcsec``); the peak of the 3x3-smoothed histogram is the offset. This is
   repeated for a few trial rotations of the detections about the CCD centre (steps small
   enough that the rotation moves the CCD corners by less than one bin) and the strongest,
   significant peak wins. Nothing assumes that the header is right to a pixel; galaxies,
   artefacts and missing Gaia stars only add a flat background to the histogram. When no
   peak is significant and magnitudes are given, the vote is repeated with fainter
   references (``vote_ref_depth``): in a dense field the brightest Gaia stars are saturated
   in the image, so the brightest usable detections are fainter ones.
3. **Match, fit, re-match.** Mutual-nearest matches within a radius that starts at
   ``initial_match_radius_arcsec`` and shrinks to ``match_radius_nsigma`` times the fit rms
   (never below ``final_match_radius_arcsec``); first an affine fit (order 1), then order 3
   (or the highest order the number of stars supports), each with iterative clipping, until
   the match set is stable.
4. **Order.** The fitted model is a polynomial of the detections' tangent-plane coordinates
   *as predicted by the header WCS* (scaled to ~[-1, 1]). For a linear header this is the same
   as a polynomial of pixel coordinates; for a header that already holds the distortion (e.g.
   built from `desgw.instrument.optics`, as the original fed SCAMP the ``fNN.head`` files) an
   affine correction is enough, so a CCD with a dozen stars still gets the distortion right.
   Its order (1 = affine, up to ``max_sip_order``) is the one with the lowest BIC on the stars kept
   by the most flexible feasible fit
   (``BIC = n ln(chi2 / n) + k ln n`` with ``n = 2 N_stars`` residuals and ``k = 2 N_terms``
   coefficients). On the DECam mapping, the best affine fit leaves up to 0.2 arcsec at the
   field edge and 0.02 arcsec at the centre, order 2 leaves ~0.01 arcsec everywhere and order
   3 leaves < 0.1 mas, so with good centroids BIC picks 3 on every CCD.
5. **WCS.** The model is solved by weighted linear least squares. The tangent point is then
   moved to the sky position of the CCD centre (the CRPIX) and the fit repeated (twice) so
   that the constant term vanishes. The model is re-expanded on a grid over the image as
   ``(xi, eta) = sum_pq c_pq u^p v^q`` of the pixel offsets ``(u, v)`` from the CRPIX, with
   the lowest order that reproduces it to ``wcs_tolerance_arcsec`` (0.5 mas; the same order
   for a linear header); its linear terms are the CD matrix, the higher ones times ``CD^-1``
   the SIP ``A``/``B`` coefficients. The inverse SIP ``AP``/``BP`` (order ``sip_order + 1``,
   with linear terms) is fitted on a dense grid over the image (plus a margin) to the exact
   inverse of the forward polynomial; its worst error on that grid is reported
   (``inverse_max_error_pix``; ~1e-5 px on DECam CCDs). ``wcs.world_to_pixel`` in astropy
   iterates on the forward SIP anyway (to 1e-4 px) and only uses AP/BP in ``sip_foc2pix``;
   AP/BP are there for other readers of the header (SWarp, ds9, ...).

Why not `astropy.wcs.utils.fit_wcs_from_points`
-----------------------------------------------
It fits the same TAN-SIP model with a non-linear least-squares solver (CRVAL free), without
weights or clipping. Measured on the 132 clipped matches of the synthetic edge CCD (CCD 1) of
the tests: 166 ms per fit with ``sip_degree=3`` (43 ms for TAN only), for the same error
against truth (2.26 mas rms) as this module's whole solution, which takes ~7 ms for 300
detections x 200 references including the vote, a few dozen clipped fits, the order selection
and the AP/BP fit. The fit here is linear because the tangent point is fixed during each
solve and then moved onto the CRPIX (two iterations absorb the move exactly). The normal
equations are solved on coordinates scaled to [-1, 1] (SVD least squares as a fallback when
they are ill-conditioned), ~6x faster than ``numpy.linalg.lstsq`` at these sizes.

Limits
------
* The vote searches rotations within ``max_rotation_deg`` and offsets within
  ``max_offset_arcsec``; a pixel-scale error of the header beyond ~1 % (2.7 arcsec at the CCD
  ends, where the rotation vote cannot help) starts to spread the vote peak.
* One polynomial per CCD: small-scale atmospheric turbulence (10-20 mas on real DECam
  exposures) is not modelled and shows up in ``rms_arcsec``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.wcs import WCS, Sip
from numpy.typing import ArrayLike, NDArray
from scipy.spatial import cKDTree

from desgw.errors import AlgorithmError, DesgwInputError
from desgw.instrument.camera import CCD_SHAPE
from desgw.se.sip import sip_design, sip_terms
from desgw.util.sphere import gnomonic_forward, gnomonic_inverse

__all__ = [
    "AstrometryConfig",
    "AstrometryResult",
    "AstrometryError",
    "solve_wcs",
]

logger = logging.getLogger(__name__)

_DEG2AS = 3600.0
_MEDIAN_CHI2_2DOF = 2.0 * math.log(2.0)  # median of a chi-square with 2 degrees of freedom


# ---------------------------------------------------------------------------------------------
# configuration, result, error
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AstrometryConfig:
    """Settings of :func:`solve_wcs` (angles in arcsec unless the name says deg).

    Attributes
    ----------
    min_matches : int
        Fewest matched stars (after clipping) accepted; fewer raise `AstrometryError`.
    max_offset_arcsec : float
        Largest header offset searched by the vote (half-width of the offset window).
    max_rotation_deg : float
        Largest header rotation searched by the vote (a grid of trial rotations).
    vote_bin_arcsec : float
        Bin size of the offset histogram.
    min_vote_significance : float
        The vote peak must exceed the background by this many Poisson sigma.
    n_vote_detections, n_vote_refs : int
        How many of the brightest detections (by ``flux``) and references (by ``ref_mag``)
        take part in the vote; all of them when no flux / magnitude is given.
    max_vote_pairs : int
        Cap on detections x references in the vote (per trial rotation): beyond it the side
        without a brightness ordering is thinned evenly (crowded fields without fluxes).
    vote_ref_depth : int
        When the vote of the brightest references fails and magnitudes are given, it is
        repeated with references of fainter ranks (windows of ``n_vote_refs``, half
        overlapping) down to rank ``vote_ref_depth * n_vote_refs``: in dense fields the
        brightest Gaia stars are saturated and absent from the usable detections.
    initial_match_radius_arcsec : float
        Match radius after the vote (must hold the header's scale and distortion errors).
    final_match_radius_arcsec : float
        Smallest match radius.
    match_radius_nsigma : float
        Match radius as a multiple of the current total rms.
    clip_sigma : float
        Clipping threshold on the 2-D normalised residual: a star is rejected when
        ``(dx^2 + dy^2) / sigma^2 > clip_sigma^2`` (sigma per axis, from the median residual).
    max_clip_iter : int
        Most clipping iterations per fit.
    max_iter : int
        Most match-fit iterations per stage.
    max_sip_order : int
        Highest order tried for the fitted correction (1 = affine).
    sip_order : int or None
        Force this fit order instead of choosing by BIC (still capped by the number of stars).
    stars_per_coefficient : float
        An order ``o`` is feasible when ``N_stars >= stars_per_coefficient * N_terms(o) + 2``.
    error_floor_arcsec : float
        Added in quadrature to ``xy_err`` (reference errors, seeing); unused without ``xy_err``.
    inverse_margin_pix : float
        The pixel SIP and its AP/BP inverse are fitted over the image plus this margin.
    max_wcs_order : int
        Highest SIP order of the output WCS (see ``wcs_tolerance_arcsec``).
    wcs_tolerance_arcsec : float
        The output TAN-SIP takes the lowest order that reproduces the fitted model to this
        accuracy over the image (it equals ``fit_order`` when the header WCS is linear).
    """

    min_matches: int = 8
    max_offset_arcsec: float = 40.0
    max_rotation_deg: float = 0.3
    vote_bin_arcsec: float = 2.0
    min_vote_significance: float = 5.0
    n_vote_detections: int = 150
    n_vote_refs: int = 150
    max_vote_pairs: int = 500_000
    vote_ref_depth: int = 4
    initial_match_radius_arcsec: float = 6.0
    final_match_radius_arcsec: float = 0.5
    match_radius_nsigma: float = 5.0
    clip_sigma: float = 3.0
    max_clip_iter: int = 10
    max_iter: int = 10
    max_sip_order: int = 4
    sip_order: int | None = None
    stars_per_coefficient: float = 2.0
    error_floor_arcsec: float = 0.005
    inverse_margin_pix: float = 50.0
    max_wcs_order: int = 6
    wcs_tolerance_arcsec: float = 0.0005

    def __post_init__(self) -> None:
        def bad(what: str) -> DesgwInputError:
            return DesgwInputError(None, None, f"AstrometryConfig: {what}")

        if self.min_matches < 4:
            raise bad(f"min_matches must be >= 4, got {self.min_matches}")
        for name in ("max_offset_arcsec", "vote_bin_arcsec", "initial_match_radius_arcsec",
                     "final_match_radius_arcsec", "match_radius_nsigma", "clip_sigma",
                     "stars_per_coefficient"):
            if not getattr(self, name) > 0:
                raise bad(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_rotation_deg < 0 or self.error_floor_arcsec < 0 or self.inverse_margin_pix < 0:
            raise bad("max_rotation_deg, error_floor_arcsec and inverse_margin_pix must be >= 0")
        if self.vote_bin_arcsec * 3 > self.max_offset_arcsec:
            raise bad("max_offset_arcsec must be at least 3 vote bins")
        if self.final_match_radius_arcsec > self.initial_match_radius_arcsec:
            raise bad("final_match_radius_arcsec exceeds initial_match_radius_arcsec")
        if not 1 <= self.max_sip_order <= 7:
            raise bad(f"max_sip_order must be in 1..7, got {self.max_sip_order}")
        if not 1 <= self.max_wcs_order <= 9:
            raise bad(f"max_wcs_order must be in 1..9, got {self.max_wcs_order}")
        if not self.wcs_tolerance_arcsec > 0:
            raise bad("wcs_tolerance_arcsec must be > 0")
        if self.sip_order is not None and not 1 <= self.sip_order <= self.max_sip_order:
            raise bad(f"sip_order must be in 1..max_sip_order, got {self.sip_order}")
        for name in ("n_vote_detections", "n_vote_refs", "max_clip_iter", "max_iter",
                     "max_vote_pairs", "vote_ref_depth"):
            if getattr(self, name) < 1:
                raise bad(f"{name} must be >= 1")


@dataclass(frozen=True, eq=False)
class AstrometryResult:
    """Astrometric solution of one CCD.

    Attributes
    ----------
    wcs : astropy.wcs.WCS
        TAN (``sip_order == 1``) or TAN-SIP WCS with forward A/B and inverse AP/BP; CRPIX at the
        CCD centre, ``pixel_shape`` set from ``image_shape``. Use ``origin=0`` pixel coordinates.
    n_detections, n_refs : int
        Finite detections and references given.
    n_matched : int
        Matched pairs within the final radius.
    n_used : int
        Matches kept by the clipping (those in the fit).
    rms_ra_arcsec, rms_dec_arcsec : float
        rms of the used matches' residuals (reference minus WCS of detection) along RA cos(dec)
        and Dec (arcsec).
    rms_arcsec : float
        Total rms, ``hypot(rms_ra_arcsec, rms_dec_arcsec)`` (arcsec).
    sip_order : int
        Polynomial order of the output WCS (1 = linear TAN, no SIP).
    fit_order : int
        Order of the polynomial fitted to the stars (chosen by BIC unless forced); it is a
        polynomial of the header WCS's tangent-plane coordinates, so it equals ``sip_order``
        for a linear header WCS and can be 1 when the header already holds the distortion.
    wcs_max_error_arcsec : float
        Largest difference between the output WCS and the fitted model over the image (arcsec).
    src_index, ref_index : ndarray of int, shape (n_matched,)
        Indices into the given detection / reference arrays of each match.
    used : ndarray of bool, shape (n_matched,)
        True for the matches kept in the fit.
    offset_ra_arcsec, offset_dec_arcsec : float
        Sky position of the CCD centre pixel, fitted minus header WCS (arcsec; RA along
        RA cos(dec)).
    rotation_deg : float
        Rotation of the fitted mapping relative to the header's, in the tangent plane from
        East (+RA) towards North (+Dec) (deg; similarity fit over the CCD).
    scale_ratio : float
        Fitted over header pixel scale (similarity fit over the CCD).
    bic : dict of int to float
        BIC of each feasible order that was compared (empty when ``config.sip_order`` forced it).
    inverse_max_error_pix : float
        Largest error of the AP/BP inverse on its fitting grid (pixels; 0 for order 1).
    """

    wcs: WCS
    n_detections: int
    n_refs: int
    n_matched: int
    n_used: int
    rms_ra_arcsec: float
    rms_dec_arcsec: float
    rms_arcsec: float
    sip_order: int
    fit_order: int
    wcs_max_error_arcsec: float
    src_index: NDArray[np.intp]
    ref_index: NDArray[np.intp]
    used: NDArray[np.bool_]
    offset_ra_arcsec: float
    offset_dec_arcsec: float
    rotation_deg: float
    scale_ratio: float
    bic: dict[int, float]
    inverse_max_error_pix: float


class AstrometryError(AlgorithmError):
    """No acceptable astrometric solution; carries the numbers that explain why.

    Attributes
    ----------
    reason : str
        What failed, in words.
    n_detections, n_refs, n_matched : int
        Detections and references given, stars matched at the point of failure.
    rms_arcsec : float
        Total rms of the last fit (arcsec; NaN if none was made).
    """

    def __init__(self, reason: str, *, n_detections: int = 0, n_refs: int = 0,
                 n_matched: int = 0, rms_arcsec: float = float("nan")) -> None:
        self.reason = str(reason)
        self.n_detections = int(n_detections)
        self.n_refs = int(n_refs)
        self.n_matched = int(n_matched)
        self.rms_arcsec = float(rms_arcsec)
        super().__init__(
            f"astrometry failed: {self.reason} (n_detections={self.n_detections}, "
            f"n_refs={self.n_refs}, n_matched={self.n_matched}, rms={self.rms_arcsec:.3g} arcsec)"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_error,
                (self.reason, self.n_detections, self.n_refs, self.n_matched, self.rms_arcsec))


def _rebuild_error(reason: str, n_detections: int, n_refs: int, n_matched: int,
                   rms_arcsec: float) -> AstrometryError:
    return AstrometryError(reason, n_detections=n_detections, n_refs=n_refs,
                           n_matched=n_matched, rms_arcsec=rms_arcsec)


# ---------------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------------
def _project(ra: NDArray, dec: NDArray, ra0: float, dec0: float) -> NDArray:
    """Gnomonic projection about (ra0, dec0) -> (n, 2) offsets (xi, eta) in arcsec."""
    xi, eta, _ = gnomonic_forward(ra, dec, ra0, dec0, min_cos=-np.inf)
    out = np.empty((np.size(ra), 2))
    out[:, 0] = np.ravel(xi) * _DEG2AS
    out[:, 1] = np.ravel(eta) * _DEG2AS
    return out


def _deproject(xi_as: float, eta_as: float, ra0: float, dec0: float) -> tuple[float, float]:
    """Inverse of `_project` for one point -> (ra, dec) deg."""
    ra, dec = gnomonic_inverse(xi_as / _DEG2AS, eta_as / _DEG2AS, ra0, dec0)
    return float(ra), float(dec)


def _rotate(p: NDArray, theta_deg: float) -> NDArray:
    t = math.radians(theta_deg)
    c, s = math.cos(t), math.sin(t)
    return np.column_stack([c * p[:, 0] - s * p[:, 1], s * p[:, 0] + c * p[:, 1]])


# ---------------------------------------------------------------------------------------------
# polynomial model (xi, eta) = sum c_pq bu^p bv^q of the header WCS's scaled tangent coords
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class _Fit:
    order: int
    coeff: NDArray  # (n_terms, 2), arcsec, for scaled coordinates
    mask: NDArray  # bool over the fitted matches: kept by clipping
    chi2: float  # weighted, on the kept matches
    rms: float  # total rms of the kept matches (arcsec, unweighted)


class _Solver:
    """State shared by the steps of one `solve_wcs` call."""

    def __init__(self, bu: NDArray, bv: NDArray, w: NDArray, shape: tuple[int, int],
                 config: AstrometryConfig, n_refs: int) -> None:
        self.cfg = config
        self.n_det = bu.size
        self.n_refs = n_refs
        ny, nx = shape
        self.cx = (nx - 1) / 2.0
        self.cy = (ny - 1) / 2.0
        self.su = nx / 2.0
        self.sv = ny / 2.0
        self.us = bu  # fit basis: header-WCS tangent coordinates, scaled to ~[-1, 1]
        self.vs = bv
        self.w = w
        self._design_cache: dict[int, NDArray] = {}

    def error(self, reason: str, n_matched: int = 0, rms: float = float("nan")) -> AstrometryError:
        return AstrometryError(reason, n_detections=self.n_det, n_refs=self.n_refs,
                               n_matched=n_matched, rms_arcsec=rms)

    def design(self, order: int) -> NDArray:
        """Design matrix of all detections for ``order`` (cached)."""
        if order not in self._design_cache:
            self._design_cache[order] = sip_design(self.us, self.vs, sip_terms(order))
        return self._design_cache[order]

    def predict(self, coeff: NDArray, order: int) -> NDArray:
        return self.design(order) @ coeff

    def feasible_order(self, n: int) -> int:
        best = 0
        for o in range(1, self.cfg.max_sip_order + 1):
            if n >= self.cfg.stars_per_coefficient * len(sip_terms(o)) + 2:
                best = o
        return best

    def fit(self, src: NDArray, target: NDArray, order: int, clip: bool = True,
            mask: NDArray | None = None) -> _Fit:
        """Weighted least squares of ``target`` (n, 2) arcsec at detections ``src``, clipped."""
        a_all = self.design(order)[src]
        w = self.w[src]
        keep = np.ones(src.size, bool) if mask is None else mask.copy()
        n_terms = a_all.shape[1]
        for _ in range(self.cfg.max_clip_iter if clip else 1):
            if keep.sum() < n_terms + 1:
                raise self.error(f"too few stars left to fit order {order}", int(keep.sum()))
            coeff = _weighted_lsq(a_all[keep], target[keep], w[keep])
            res = target - a_all @ coeff
            z2 = w * np.einsum("ij,ij->i", res, res)
            if not clip:
                break
            s2 = np.median(z2[keep]) / _MEDIAN_CHI2_2DOF
            new = z2 <= self.cfg.clip_sigma**2 * max(s2, 1e-30)
            if np.array_equal(new, keep):
                break
            keep = new
        res_k = res[keep]
        chi2 = float(np.sum(z2[keep]))
        rms = float(np.sqrt(np.mean(np.einsum("ij,ij->i", res_k, res_k))))
        return _Fit(order, coeff, keep, chi2, rms)


def _weighted_lsq(a: NDArray, t: NDArray, w: NDArray) -> NDArray:
    """Weighted linear least squares ``min sum w (t - a c)^2`` for ``t`` of shape (n, 2).

    Normal equations (the columns are monomials of coordinates scaled to [-1, 1], so their
    condition number stays small for orders <= 5); SVD least squares if they are
    ill-conditioned (stars nearly collinear). The normal equations are ~6x faster here.
    """
    aw = a * w[:, None]
    n = aw.T @ a
    rhs = aw.T @ t
    if np.linalg.cond(n) < 1e10:
        return np.linalg.solve(n, rhs)
    sw = np.sqrt(w)[:, None]
    return np.linalg.lstsq(a * sw, t * sw, rcond=None)[0]


def _match(pred: NDArray, tree: cKDTree, radius: float) -> tuple[NDArray, NDArray]:
    """Mutual nearest matches of predicted detections to references within ``radius``."""
    dist, j = tree.query(pred, k=1, distance_upper_bound=radius)
    ok = np.isfinite(dist)
    i = np.nonzero(ok)[0]
    j = j[ok]
    dist = dist[ok]
    order = np.lexsort((dist, j))
    js = j[order]
    first = np.ones(js.size, bool)
    first[1:] = js[1:] != js[:-1]
    keep = np.sort(order[first])
    return i[keep], j[keep]


# ---------------------------------------------------------------------------------------------
# offset vote
# ---------------------------------------------------------------------------------------------
def _vote(det: NDArray, ref: NDArray, config: AstrometryConfig,
          half_diag_arcsec: float) -> tuple[float, NDArray, float, int]:
    """Rotation (deg), offset (2,) arcsec, significance and peak count of the best vote."""
    b = config.vote_bin_arcsec
    nb = int(math.ceil(config.max_offset_arcsec / b))
    width = nb * b
    n_side = 2 * nb
    step = math.degrees(2.0 * b / max(half_diag_arcsec, 1.0))
    n_rot = int(math.ceil(config.max_rotation_deg / step)) if config.max_rotation_deg > 0 else 0
    rotations = np.linspace(-config.max_rotation_deg, config.max_rotation_deg, 2 * n_rot + 1)
    rotations = rotations[np.argsort(np.abs(rotations))]  # 0 first: ties go to no rotation
    best: tuple[float, float, NDArray, float, int] | None = None
    for theta in rotations:
        p = _rotate(det, float(theta)) if theta != 0 else det
        dx = ref[None, :, 0] - p[:, None, 0]
        dy = ref[None, :, 1] - p[:, None, 1]
        sel = (np.abs(dx) < width) & (np.abs(dy) < width)
        dxs, dys = dx[sel], dy[sel]
        ix = np.minimum(((dxs + width) / b).astype(np.intp), n_side - 1)
        iy = np.minimum(((dys + width) / b).astype(np.intp), n_side - 1)
        hist = np.bincount(iy * n_side + ix, minlength=n_side * n_side).reshape(n_side, n_side)
        pad = np.pad(hist, 1)
        smooth = np.sum([pad[1 + a:1 + a + n_side, 1 + c:1 + c + n_side]
                         for a in (-1, 0, 1) for c in (-1, 0, 1)], axis=0)
        k = int(np.argmax(smooth))
        ky, kx = divmod(k, n_side)
        peak = float(smooth[ky, kx])
        bg = 9.0 * dxs.size / (n_side * n_side)
        signif = (peak - bg) / math.sqrt(bg + 1.0)
        centre = np.array([(kx + 0.5) * b - width, (ky + 0.5) * b - width])
        near = (np.abs(dxs - centre[0]) < 1.5 * b) & (np.abs(dys - centre[1]) < 1.5 * b)
        offset = np.array([np.median(dxs[near]), np.median(dys[near])]) if near.any() else centre
        logger.debug("vote rot %.3f deg: peak %d over bg %.1f (%.1f sigma) at %s", theta, peak,
                     bg, signif, offset)
        if best is None or signif > best[1] + 1e-9:
            best = (float(theta), signif, offset, peak, int(near.sum()))
    assert best is not None
    return best[0], best[2], best[1], best[4]


# ---------------------------------------------------------------------------------------------
# WCS construction
# ---------------------------------------------------------------------------------------------
def _unscaled(coeff: NDArray, order: int, su: float, sv: float) -> dict[tuple[int, int], NDArray]:
    """Coefficients per (p, q) for unscaled pixel offsets, in degrees."""
    return {(p, q): coeff[k] / (su**p * sv**q) / _DEG2AS for k, (p, q) in enumerate(sip_terms(order))}


def _build_wcs(coeff: NDArray, order: int, solver: _Solver, ra0: float, dec0: float,
               shape: tuple[int, int]) -> tuple[WCS, float]:
    """TAN(-SIP) WCS for the fitted polynomial; returns it and the AP/BP worst error (px)."""
    poly = _unscaled(coeff, order, solver.su, solver.sv)
    cd = np.array([[poly[(1, 0)][0], poly[(0, 1)][0]],
                   [poly[(1, 0)][1], poly[(0, 1)][1]]])
    w = WCS(naxis=2)
    w.wcs.crpix = [solver.cx + 1.0, solver.cy + 1.0]
    w.wcs.crval = [ra0, dec0]
    w.wcs.cd = cd
    w.wcs.cunit = ["deg", "deg"]
    w.pixel_shape = (shape[1], shape[0])
    inv_err = 0.0
    if order == 1:
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    else:
        w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
        cdinv = np.linalg.inv(cd)
        a = np.zeros((order + 1, order + 1))
        bm = np.zeros((order + 1, order + 1))
        for (p, q), c in poly.items():
            if p + q >= 2:
                f = cdinv @ c
                a[p, q], bm[p, q] = f
        ap, bp, inv_err = _fit_inverse(a, bm, order + 1, solver, shape)
        w.sip = Sip(a, bm, ap, bp, w.wcs.crpix)
    w.wcs.set()
    return w, inv_err


def _grid(solver: _Solver, shape: tuple[int, int]) -> tuple[NDArray, NDArray]:
    """Pixel offsets (u, v) from the CRPIX of a 33 x 65 grid over the image plus the margin."""
    ny, nx = shape
    m = solver.cfg.inverse_margin_pix
    gx = np.linspace(-m, nx - 1 + m, 33) - solver.cx
    gy = np.linspace(-m, ny - 1 + m, 65) - solver.cy
    u, v = np.meshgrid(gx, gy)
    return u.ravel(), v.ravel()


def _pixel_polynomial(coeff: NDArray, order: int, solver: _Solver, initial_wcs: WCS,
                      basis: tuple[float, float, float],
                      shape: tuple[int, int]) -> tuple[NDArray, int, float]:
    """Re-expand the fitted model (a polynomial of the header WCS's tangent coordinates) as a
    polynomial of pixel offsets, of the lowest order that reproduces it to
    ``config.wcs_tolerance_arcsec`` on a grid over the image (at most ``max_wcs_order``).

    Returns the scaled-pixel coefficients (n_terms, 2) in arcsec, their order and the largest
    deviation from the fitted model on the grid (arcsec).
    """
    ra_i0, dec_i0, bscale = basis
    u, v = _grid(solver, shape)
    gr, gd = initial_wcs.all_pix2world(u + solver.cx, v + solver.cy, 0)
    gt = _project(gr, gd, ra_i0, dec_i0) / bscale
    target = sip_design(gt[:, 0], gt[:, 1], sip_terms(order)) @ coeff
    us, vs = u / solver.su, v / solver.sv
    ones = np.ones(u.size)
    best: tuple[NDArray, int, float] | None = None
    for k in range(1, solver.cfg.max_wcs_order + 1):
        d = sip_design(us, vs, sip_terms(k))
        c = _weighted_lsq(d, target, ones)
        err = float(np.max(np.hypot(*(target - d @ c).T)))
        best = (c, k, err)
        if err <= solver.cfg.wcs_tolerance_arcsec:
            break
    assert best is not None
    if best[2] > solver.cfg.wcs_tolerance_arcsec:
        logger.warning("TAN-SIP of order %d reproduces the fitted model only to %.2g arcsec",
                       best[1], best[2])
    return best


def _fit_inverse(a: NDArray, b: NDArray, inv_order: int, solver: _Solver,
                 shape: tuple[int, int]) -> tuple[NDArray, NDArray, float]:
    """Fit AP/BP (terms 1 <= p+q <= inv_order) to the exact inverse of the forward SIP."""
    u, v = _grid(solver, shape)
    order = a.shape[0] - 1
    fwd = sip_design(u, v, sip_terms(order, 2))
    t2 = sip_terms(order, 2)
    av = np.array([a[p, q] for p, q in t2])
    bv = np.array([b[p, q] for p, q in t2])
    uu = u + fwd @ av
    vv = v + fwd @ bv
    tinv = sip_terms(inv_order, 1)
    su, sv = solver.su, solver.sv
    d = sip_design(uu / su, vv / sv, tinv)
    coef = _weighted_lsq(d, np.column_stack([u - uu, v - vv]), np.ones(u.size))
    err = float(np.max(np.hypot(*(np.column_stack([u - uu, v - vv]) - d @ coef).T)))
    ap = np.zeros((inv_order + 1, inv_order + 1))
    bp = np.zeros((inv_order + 1, inv_order + 1))
    for k, (p, q) in enumerate(tinv):
        scale = su**p * sv**q
        ap[p, q] = coef[k, 0] / scale
        bp[p, q] = coef[k, 1] / scale
    return ap, bp, err


def _similarity(initial_wcs: WCS, final: WCS, ra0: float, dec0: float,
                shape: tuple[int, int]) -> tuple[NDArray, float, float]:
    """Offset of the centre (arcsec), rotation (deg) and scale of final vs initial WCS."""
    ny, nx = shape
    gx, gy = (g.ravel() for g in np.meshgrid(np.linspace(0, nx - 1, 5), np.linspace(0, ny - 1, 9)))
    ri, di = initial_wcs.all_pix2world(gx, gy, 0)
    rf, df = final.all_pix2world(gx, gy, 0)
    zi = _project(ri, di, ra0, dec0) @ np.array([1.0, 1j])
    zf = _project(rf, df, ra0, dec0) @ np.array([1.0, 1j])
    mat = np.column_stack([zi - zi.mean(), np.ones_like(zi)])
    (amp, _), *_ = np.linalg.lstsq(mat, zf - zf.mean(), rcond=None)
    rc, dc = initial_wcs.all_pix2world([(nx - 1) / 2.0], [(ny - 1) / 2.0], 0)
    off = -_project(np.asarray(rc), np.asarray(dc), ra0, dec0)[0]
    return off, math.degrees(math.atan2(amp.imag, amp.real)), abs(amp)


# ---------------------------------------------------------------------------------------------
# public entry point
# ---------------------------------------------------------------------------------------------
def solve_wcs(
    x: ArrayLike,
    y: ArrayLike,
    ref_ra: ArrayLike,
    ref_dec: ArrayLike,
    initial_wcs: WCS,
    *,
    flux: ArrayLike | None = None,
    ref_mag: ArrayLike | None = None,
    xy_err: ArrayLike | None = None,
    image_shape: tuple[int, int] = CCD_SHAPE,
    config: AstrometryConfig = AstrometryConfig(),
) -> AstrometryResult:
    """Fit the TAN-SIP WCS of one CCD by matching its detections to Gaia.

    Parameters
    ----------
    x, y : array_like, shape (n,)
        Detection centroids in 0-based trimmed pixels (x = column, y = row), float64. Rows with
        a non-finite value are ignored (their indices never appear in the result).
    ref_ra, ref_dec : array_like, shape (m,)
        Reference (Gaia) positions at the exposure epoch, degrees. Non-finite rows are ignored.
    initial_wcs : astropy.wcs.WCS
        The header WCS for 0-based trimmed pixels (any projection astropy evaluates); it may be
        off by tens of arcsec, a few tenths of a degree in rotation, ~1 % in scale, and lack
        the optical distortion. If it holds the distortion, the fit corrects it (see the
        module notes), which matters for CCDs with few stars.
    flux : array_like, shape (n,), optional
        Detection fluxes (any unit); when given, the brightest ``config.n_vote_detections``
        vote for the offset.
    ref_mag : array_like, shape (m,), optional
        Reference magnitudes; when given, the brightest ``config.n_vote_refs`` vote.
    xy_err : array_like, shape (n,), optional
        1-sigma centroid errors (pixels, per axis); the fit weights are
        ``1 / ((xy_err * pixscale)^2 + error_floor^2)``. Without it all matches weigh the same.
    image_shape : tuple of int
        ``(rows, columns)`` of the trimmed CCD image; the CRPIX is its centre.
    config : AstrometryConfig
        Algorithm settings.

    Returns
    -------
    AstrometryResult

    Raises
    ------
    DesgwInputError
        Arrays of mismatched lengths or an unusable ``image_shape``.
    AstrometryError
        Too few detections, references or matched stars (``config.min_matches``), no
        significant offset in the vote, or a degenerate fit.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    ra = np.asarray(ref_ra, dtype=np.float64).ravel()
    dec = np.asarray(ref_dec, dtype=np.float64).ravel()
    if x.size != y.size:
        raise DesgwInputError(None, None, f"solve_wcs: x has {x.size} values, y has {y.size}")
    if ra.size != dec.size:
        raise DesgwInputError(None, None,
                              f"solve_wcs: ref_ra has {ra.size} values, ref_dec has {dec.size}")
    extras = {}
    for name, arr, n in (("flux", flux, x.size), ("xy_err", xy_err, x.size),
                         ("ref_mag", ref_mag, ra.size)):
        if arr is not None:
            a = np.asarray(arr, dtype=np.float64).ravel()
            if a.size != n:
                raise DesgwInputError(None, None, f"solve_wcs: {name} has {a.size} values, "
                                                  f"expected {n}")
            extras[name] = a
    if len(image_shape) != 2 or min(image_shape) < 2:
        raise DesgwInputError(None, None, f"solve_wcs: bad image_shape {image_shape}")
    shape = (int(image_shape[0]), int(image_shape[1]))
    cfg = config

    det_ok = np.isfinite(x) & np.isfinite(y)
    if "xy_err" in extras:
        det_ok &= np.isfinite(extras["xy_err"]) & (extras["xy_err"] >= 0)
    ref_ok = np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90)
    det_idx = np.nonzero(det_ok)[0]
    ref_idx = np.nonzero(ref_ok)[0]
    xd, yd = x[det_idx], y[det_idx]
    ra_r, dec_r = ra[ref_idx], dec[ref_idx]

    # tangent point and pixel scale of the header WCS at the CCD centre
    cxy = ((shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0)
    c3 = initial_wcs.all_pix2world([cxy[0], cxy[0] + 1, cxy[0]], [cxy[1], cxy[1], cxy[1] + 1], 0)
    ra0, dec0 = float(c3[0][0]), float(c3[1][0])
    jac = _project(np.asarray(c3[0]), np.asarray(c3[1]), ra0, dec0)
    pixscale = math.sqrt(abs(np.linalg.det(jac[1:] - jac[0])))  # arcsec / pixel

    if xy_err is not None:
        sig2 = (extras["xy_err"][det_idx] * pixscale) ** 2 + cfg.error_floor_arcsec**2
        weights = 1.0 / np.maximum(sig2, 1e-12)
        weights /= np.median(weights)
    else:
        weights = np.ones(xd.size)
    if xd.size < cfg.min_matches or ra_r.size < cfg.min_matches:
        raise AstrometryError(f"fewer than min_matches={cfg.min_matches} detections or references",
                              n_detections=xd.size, n_refs=ra_r.size)

    # detections through the header WCS, references projected; keep refs near the CCD
    ra_i0, dec_i0 = ra0, dec0
    rd, dd = initial_wcs.all_pix2world(xd, yd, 0)
    det_t = _project(rd, dd, ra0, dec0)
    ref_t = _project(ra_r, dec_r, ra0, dec0)
    half = np.array([shape[1], shape[0]]) * pixscale / 2.0
    half_diag = float(np.hypot(*half))
    bscale = float(half.max())
    solver = _Solver(det_t[:, 0] / bscale, det_t[:, 1] / bscale, weights, shape, cfg,
                     int(ref_idx.size))
    reach = half_diag + cfg.max_offset_arcsec + cfg.initial_match_radius_arcsec
    near = np.hypot(ref_t[:, 0], ref_t[:, 1]) < reach
    ref_idx, ref_t = ref_idx[near], ref_t[near]
    ra_r, dec_r = ra_r[near], dec_r[near]
    if ref_idx.size < cfg.min_matches:
        raise solver.error(f"fewer than min_matches={cfg.min_matches} references near the CCD")

    # 1. vote for the offset (and rotation)
    vd = np.arange(xd.size)
    if "flux" in extras and xd.size > cfg.n_vote_detections:
        f = np.nan_to_num(extras["flux"][det_idx], nan=-np.inf)
        vd = np.argsort(-f, kind="stable")[: cfg.n_vote_detections]
    vr = np.arange(ref_t.shape[0])
    if "ref_mag" in extras and vr.size > cfg.n_vote_refs:
        mg = np.nan_to_num(extras["ref_mag"][ref_idx], nan=np.inf)
        vr = np.argsort(mg, kind="stable")[: cfg.n_vote_refs]
    if vd.size * vr.size > cfg.max_vote_pairs:
        # thin (evenly, deterministically) the side that has no brightness ordering
        if "ref_mag" not in extras or "flux" in extras:
            vr = vr[:: int(math.ceil(vd.size * vr.size / cfg.max_vote_pairs))]
        else:
            vd = vd[:: int(math.ceil(vd.size * vr.size / cfg.max_vote_pairs))]
    theta, offset, signif, n_peak = _vote(det_t[vd], ref_t[vr], cfg, half_diag)
    logger.debug("vote: rotation %.3f deg, offset %s arcsec, %.1f sigma, %d pairs",
                 theta, offset, signif, n_peak)
    if signif < cfg.min_vote_significance and "ref_mag" in extras and vr.size < ref_t.shape[0]:
        # In a dense (low-latitude) field the brightest references are saturated or blended
        # in the image, so they are missing from the brightest detections: vote again with
        # the references of the next brightness ranks (windows of the same size, half
        # overlapping, down to ``vote_ref_depth`` times the first), the first that passes.
        rank = np.argsort(np.nan_to_num(extras["ref_mag"][ref_idx], nan=np.inf), kind="stable")
        n_w = vr.size
        last = min((cfg.vote_ref_depth - 1) * n_w, rank.size - n_w // 2 - 1)
        for start in range(n_w // 2, last + 1, max(n_w // 2, 1)):
            vr2 = rank[start:start + n_w]
            th_w, off_w, sig_w, np_w = _vote(det_t[vd], ref_t[vr2], cfg, half_diag)
            logger.debug("vote, references of ranks %d-%d: %.1f sigma", start,
                         start + vr2.size, sig_w)
            if sig_w > signif:
                theta, offset, signif, n_peak = th_w, off_w, sig_w, np_w
            if signif >= cfg.min_vote_significance:
                break
    if signif < cfg.min_vote_significance:
        raise solver.error(f"no significant offset peak in the vote ({signif:.1f} sigma)", n_peak)

    # 2. match, fit, re-match with a shrinking radius: affine, then order 3 (if feasible)
    tree = cKDTree(ref_t)
    pred = _rotate(det_t, theta) + offset
    radius = cfg.initial_match_radius_arcsec
    fit: _Fit | None = None
    src = ref = np.zeros(0, np.intp)
    for stage_order in (1, 3):
        prev: tuple[NDArray, NDArray] | None = None
        for _ in range(cfg.max_iter):
            src, ref = _match(pred, tree, radius)
            if src.size < cfg.min_matches:
                raise solver.error(f"fewer than min_matches={cfg.min_matches} matches within "
                                   f"{radius:.2f} arcsec", src.size,
                                   fit.rms if fit else float("nan"))
            order = min(stage_order, max(1, solver.feasible_order(src.size)))
            while True:
                try:
                    fit = solver.fit(src, ref_t[ref], order)
                    break
                except AstrometryError:
                    # clipping left too few stars for this order (a sparse CCD whose stars
                    # barely make order 3 feasible): one order lower
                    if order <= 1:
                        raise
                    order -= 1
            pred = solver.predict(fit.coeff, order)
            new_radius = min(radius, max(cfg.final_match_radius_arcsec,
                                         cfg.match_radius_nsigma * fit.rms))
            same = prev is not None and np.array_equal(prev[0], src) and np.array_equal(prev[1], ref)
            prev = (src, ref)
            if same and new_radius >= radius * 0.99:
                break
            radius = new_radius
        assert fit is not None
        logger.debug("stage order %d: %d matches, rms %.4f arcsec, radius %.3f", fit.order,
                     src.size, fit.rms, radius)

    # 3. choose the order on the stars kept by the most flexible feasible fit
    assert fit is not None
    n_keep = int(fit.mask.sum())
    top = solver.feasible_order(n_keep)
    if top < 1:
        raise solver.error(f"fewer than min_matches={cfg.min_matches} stars after clipping",
                           n_keep, fit.rms)
    bic: dict[int, float] = {}
    if cfg.sip_order is not None:
        order = min(cfg.sip_order, top)
    else:
        flex = None
        while flex is None:
            try:
                flex = solver.fit(src, ref_t[ref], top)
            except AstrometryError:
                # the clipping of the most flexible fit left too few stars: one order lower
                if top <= 1:
                    raise
                top -= 1
        sel = src[flex.mask]
        n_obs = 2 * sel.size
        for o in range(1, top + 1):
            f_o = solver.fit(sel, ref_t[ref][flex.mask], o, clip=False)
            bic[o] = n_obs * math.log(max(f_o.chi2, 1e-300) / n_obs) + 2 * len(sip_terms(o)) * math.log(n_obs)
        order = min(bic, key=bic.__getitem__)
    fit = solver.fit(src, ref_t[ref], order)
    for _ in range(3):  # re-match with the chosen order
        pred = solver.predict(fit.coeff, order)
        radius = max(cfg.final_match_radius_arcsec, cfg.match_radius_nsigma * fit.rms)
        s2, r2 = _match(pred, tree, radius)
        if np.array_equal(s2, src) and np.array_equal(r2, ref):
            break
        src, ref = s2, r2
        if src.size < cfg.min_matches:
            raise solver.error(f"fewer than min_matches={cfg.min_matches} final matches",
                               src.size, fit.rms)
        fit = solver.fit(src, ref_t[ref], order)
    if int(fit.mask.sum()) < cfg.min_matches:
        raise solver.error(f"fewer than min_matches={cfg.min_matches} stars after clipping",
                           int(fit.mask.sum()), fit.rms)

    # 4. move the tangent point onto the CRPIX (the constant term -> 0) and refit
    for _ in range(3):
        c0 = fit.coeff[0]
        ra0, dec0 = _deproject(float(c0[0]), float(c0[1]), ra0, dec0)
        ref_t = _project(ra_r, dec_r, ra0, dec0)
        fit = solver.fit(src, ref_t[ref], order, clip=False, mask=fit.mask)
    c0 = fit.coeff[0]
    ra0, dec0 = _deproject(float(c0[0]), float(c0[1]), ra0, dec0)

    pix_coeff, wcs_order, wcs_err = _pixel_polynomial(
        fit.coeff, order, solver, initial_wcs, (ra_i0, dec_i0, bscale), shape)
    ra0, dec0 = _deproject(float(pix_coeff[0, 0]), float(pix_coeff[0, 1]), ra0, dec0)
    wcs, inv_err = _build_wcs(pix_coeff, wcs_order, solver, ra0, dec0, shape)

    # residuals of the used matches through the final WCS
    used = fit.mask
    su_, ru_ = src[used], ref[used]
    rw, dw = wcs.all_pix2world(xd[su_], yd[su_], 0)
    res = _project(ra_r[ru_], dec_r[ru_], ra0, dec0) - _project(rw, dw, ra0, dec0)
    rms_ra, rms_dec = (float(v) for v in np.sqrt(np.mean(res**2, axis=0)))
    off, rot, scl = _similarity(initial_wcs, wcs, ra0, dec0, shape)
    result = AstrometryResult(
        wcs=wcs,
        n_detections=int(det_idx.size),
        n_refs=int(np.count_nonzero(ref_ok)),
        n_matched=int(src.size),
        n_used=int(used.sum()),
        rms_ra_arcsec=rms_ra,
        rms_dec_arcsec=rms_dec,
        rms_arcsec=float(math.hypot(rms_ra, rms_dec)),
        sip_order=wcs_order,
        fit_order=order,
        wcs_max_error_arcsec=wcs_err,
        src_index=det_idx[src],
        ref_index=ref_idx[ref],
        used=used.copy(),
        offset_ra_arcsec=float(off[0]),
        offset_dec_arcsec=float(off[1]),
        rotation_deg=rot,
        scale_ratio=float(scl),
        bic=bic,
        inverse_max_error_pix=inv_err,
    )
    logger.info("astrometry: %d/%d matches used, order %d, rms %.4f arcsec, offset (%.2f, %.2f) "
                "arcsec, rotation %.4f deg", result.n_used, result.n_matched, order,
                result.rms_arcsec, result.offset_ra_arcsec, result.offset_dec_arcsec, rot)
    return result
