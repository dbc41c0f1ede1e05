"""A PSFEx-like PSF model: a pixel basis whose pixels vary as polynomials of (x, y) on the CCD.

Model
-----
The PSF at CCD position (x, y) is a ``stamp x stamp`` image sampled at the CCD pixels
(``PSF_SAMP = 1``), centred on the stamp's central pixel and normalised to sum 1 over the stamp::

    P(x, y)[j, i] = sum_k C_k[j, i] * T_k(u, v),   u = (x - x_zero) / x_scale,
                                                   v = (y - y_zero) / y_scale

with the polynomial terms ``T_k`` of total degree <= ``poly_degree`` in PSFEx's order
(1, u, u**2, ..., v, u v, ..., v**2, ...). This is what PSFEx stores in ``PSF_MASK``.
:meth:`PSFModel.render` places the model at a sub-pixel position by a Lanczos shift.

Sampling (``oversampling = 1``): DECam PSFs have FWHM >= 3 pix (0.8") and the pixel-convolved
PSF is then sampled close to Nyquist, so the CCD grid itself is a sufficient basis and no
super-resolution is needed. Measured on synthetic galsim Moffat stars (beta 3, FWHM and
ellipticity varying over the CCD; tests/se/test_psf_model.py): FWHM within 0.5 % of the truth
at FWHM 3, 4.5 and 7.6 pix, ellipticity within 0.01, and PSF fluxes of bright stars unbiased
to 0.1 % at FWHM 3 pix, the hardest case. An oversampled basis would quadruple the unknowns
per pixel and need ~4x more stars for the same noise.

The stamp is also the normalisation box: a Moffat (beta 3) of FWHM 7.6 pix has ~5 % of its
flux outside 25 x 25 pix, so for seeing worse than ~5 pix use ``stamp >= 6 FWHM`` (41 at 2").

Fitting (:func:`fit_psf`)
-------------------------
1. Candidates (positions given by the caller, e.g. bright point-like detections) are
   dropped if their padded stamp leaves the image, contains a masked or zero-weight pixel, or
   has a box signal-to-noise below ``min_snr``; at most ``max_stars`` are kept, spread over
   the CCD (the brightest of each cell of a grid first: :func:`spread_selection`).
   With a segmentation map, the pixels of *other* detections (grown by
   ``neighbour_grow`` pixels) are unusable in a star's stamp, and a star with such pixels in
   its core is dropped: a neighbour's light in the stamp's outskirts would otherwise enter the
   model's wings, and since the model sums to 1 over the stamp, its core would be too faint
   and every PSF flux too high (measured on galsim Moffat fields with stars >= 24 px apart and
   a 41 px stamp: bright-star FLUX_PSF / true +0.29 % (beta 3) and +0.44 % (beta 2.5) without
   this, <= 0.05 % with it). The excess grows with the density of the field.
2. Each star is re-centred (iterated Gaussian-windowed centroid, window sigma = FWHM / 2.35,
   as SExtractor's XWIN) and resampled onto a stamp centred on it (Lanczos shift), then
   divided by its flux. From the second fit on (``forward_model``), the model is fitted to
   the stars as the photometry renders it: each star's target becomes its resampled stamp
   plus ``M - K M``, where ``M`` is the current model at the star and ``K`` the round trip of
   rendering it at the star's sub-pixel offset and resampling it back (two Lanczos
   interpolations, each of which smooths: the peak of a 4 px FWHM star drops by 0.2-0.4 %
   per shift). At the fixed point the rendered model matches the stars where they are, so
   the smoothing of both interpolations is undone. Without it the model came out too broad
   and bright-star PSF fluxes 0.05-0.16 % high (more at small FWHM; galsim Moffat beta 2.5
   and 4.5 and Kolmogorov stars, FWHM 3-5 px, no neighbours); with it within 0.02 %
   (tests/se/test_psf_flux_bias.py). On crowded galsim fields (bench/bench_crowded.py,
   ~1k/5k/10k objects per CCD, Moffat beta 2.5 and 4.5, Kolmogorov, 2 seeds each;
   bench/bench_crowded_forward.json) every zeropoint moved by -1.0 to -1.7 mmag, the mean
   over the nine cells from +1.7 to +0.4 mmag. Its fixed cost is nil (0.49 vs 0.50 CPU-s
   for 469 stars on a full CCD). The model's centred peak is no longer the PSF's: it is
   ~0.2 % sharper, so that it matches once rendered off-centre.
3. For every stamp pixel, a weighted linear least-squares fit over the stars gives the
   polynomial coefficients; the variance of a normalised pixel is
   ``(1 / weight + F m / gain) / F**2`` (background, read noise and the star's photon noise).
4. Star fluxes are re-fitted with the model, chi2 per star computed, and stars with
   chi2/dof above ``median + chi2_clip * 1.4826 MAD`` are rejected (binaries, neighbours,
   cosmic rays, galaxies that slipped in); steps 3-4 are repeated ``n_iter`` times.
5. Between iterations, point sources hidden in the stamps are found in the residuals and their
   light subtracted (``companion_snr``; :func:`_hidden_companions`). In crowded fields a faint
   star on a bright star's wing is often not deblended: it lies inside the star's own segment,
   so step 1 can neither mask nor subtract it, and the stamps' weights (the star's flux
   squared in the sky-limited wing) let a few such stars set the model's wing. Measured on
   crowded galsim fields (bench/bench_crowded.py, ~10,000 objects per CCD, 53-72 PSF stars,
   Moffat beta 2.5 and 4.5 and Kolmogorov, 2 seeds each): without it zeropoints were +0.8 ...
   +15.8 mmag (mean +9.4), the model up to 1 % too broad and the aperture correction up to
   0.64 % high; with it -2.7 ... +3.6 mmag (mean +1.1), aperture corrections within 0.2 % of
   the exact value. With 2-8 % companions at 1.8-2.9 FWHM from every star, the aperture
   correction went from 1.6-2.0 % high to within 0.1 % (tests/se/test_psf_hidden_neighbours.py).
   Clean fields find no companions and give the same model.
6. With ``fit_pedestal``, a level ``p`` common to all stamps (the sky under the stars less the
   background the image was given with) is fitted jointly with the model in each iteration:
   in a star's normalised stamp it is ``p / F`` while the star's light does not depend on F,
   so the stars' spread in flux separates it from the model's wings (over the stamp pixels
   beyond 2 FWHM: in the core each star's flux error, in both the normalised stamp and
   ``1 / F``, would bias it). Without it, since the model sums to 1 over the stamp, ``p``
   enters the model's wings as the flux-weighted mean of ``p / F``, its core drops and every
   PSF flux rises by about ``p`` times the stamp area over the PSF stars' typical flux
   (tests/se/test_psf_pedestal.py: +0.45 % for 3 e-/px on 1e5-1e6 e- stars in a 27 px
   stamp; the fit gives the pedestal to ~0.3-0.5 e-/px from 225 stars and fluxes within
   0.1 %). It is kept only beyond :data:`PEDESTAL_SIGMA` times its formal error (sparse
   CCDs with few PSF stars: none). In crowded fields in bad seeing the sky under the PSF
   stars, after their neighbours' models are subtracted, lies 1-2 e-/px below the mode sky
   between the masked detections (simulated audit CCDs, Moffat beta 2.5, ~11,600 objects:
   -2.05 e-/px at 1.57", -1.2 at 1.10-1.37").
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
import scipy.fft as sfft
from astropy.io import fits
from scipy import ndimage
from scipy.spatial import cKDTree

from desgw.errors import AlgorithmError, DataTypeError
from desgw.se.detect import DetectionResult
from desgw.se.maskbits import UNUSABLE
from desgw.se.measure_kernels import (add_psf_sources, psf_fit_stamps, render_psf_stamps,
                                      winpos_stamps)
from desgw.se.psf_lanczos import shift_matrix
from desgw.util.lanczos import interpolation_matrix
from desgw.se.psf_shape import MoffatFit, adaptive_moments, fit_moffat

__all__ = ["PSFConfig", "PSFModel", "PSFFitError", "fit_psf", "poly_terms", "select_psf_candidates"]

log = logging.getLogger(__name__)


class PSFFitError(AlgorithmError):
    """The PSF could not be fitted (too few usable stars); carries the numbers.

    Attributes
    ----------
    n_candidates, n_usable : int
        Candidate positions given, and stars left after the cuts.
    n_required : int
        Stars needed for the requested polynomial degree.
    """

    def __init__(self, message: str, n_candidates: int, n_usable: int, n_required: int) -> None:
        super().__init__(message)
        self.message = message
        self.n_candidates = n_candidates
        self.n_usable = n_usable
        self.n_required = n_required

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.n_candidates, self.n_usable, self.n_required))


@dataclass(frozen=True)
class PSFConfig:
    """Settings of :func:`fit_psf`.

    Attributes
    ----------
    stamp : int
        Side of the PSF stamp (pixels, odd). The model is normalised over this box, so PSF
        fluxes measure the flux inside it (as PSFEx's PSF_SIZE).
    poly_degree : int
        Degree of the polynomial variation over the CCD (PSFVAR_DEGREES).
    min_snr : float
        Minimum signal-to-noise of a star (flux in the stamp box over its noise).
    max_stars : int
        At most this many stars are used: with more, they are chosen over a grid of about
        ``select_cells`` cells covering the CCD, each cell's brightest first
        (:func:`spread_selection`). On a dense CCD (489 stars above ``min_snr`` among 4,400
        objects, FWHM 4.3 px, Moffat) 200 stars gave the model FWHM within 0.1 % and bright
        FLUX_PSF within 0.01 % (median) of the 500-star model's in 0.44x its CPU time.
    select_cells : int
        Approximate number of grid cells for the choice of ``max_stars`` stars (1 = the
        brightest wherever they are).
    chi2_clip : float
        Outlier rejection threshold in robust sigmas of the chi2/dof distribution.
    n_iter : int
        Fit / reject iterations.
    lanczos_order : int
        Order of the Lanczos kernel for sub-pixel shifts.
    gain : float
        e- per image unit (1 for images in electrons), for the stars' photon noise.
    mask_bits : int
        Mask bits that disqualify a star stamp.
    min_stars_per_term : float
        At least this many stars per polynomial term are required; with fewer, the degree is
        lowered (down to 0) and a warning logged.
    neighbour_grow : int
        Pixels by which the segments of other detections are grown before they are excluded
        from a star's stamp (only with a ``segmap``; covers the wing beyond the isophote).
    companion_snr : float
        Detection threshold (matched-filter signal-to-noise; 0 = off) of point sources hidden
        in the PSF stars' stamps, found in the residuals after each fit
        (:func:`_hidden_companions`); their light is subtracted and the pixels within
        ``companion_mask`` FWHM of them left out of the next fit.
    companion_rmin : float
        Companions are sought at least this far from the star (units of the FWHM); closer
        ones are left to the chi2 rejection of the star.
    companion_mask : float
        Radius (units of the FWHM) around a companion left out of the fit.
    forward_model : bool
        Fit the model through the photometry's rendering (step 2 of the module docstring):
        the smoothing of the sub-pixel shifts is undone. False gives the model of the
        resampled stamps (too broad by the interpolations' smoothing).
    fit_pedestal : bool
        Fit a level common to all star stamps jointly with the model (step 6 of the module
        docstring; :attr:`PSFModel.sky_pedestal`) instead of letting it into the model.
    """

    stamp: int = 25
    poly_degree: int = 2
    min_snr: float = 50.0
    max_stars: int = 200
    select_cells: int = 32
    chi2_clip: float = 4.0
    n_iter: int = 3
    lanczos_order: int = 4
    gain: float = 1.0
    mask_bits: int = UNUSABLE
    min_stars_per_term: float = 3.0
    neighbour_grow: int = 3
    companion_snr: float = 5.0
    companion_rmin: float = 1.5
    companion_mask: float = 1.0
    forward_model: bool = True
    fit_pedestal: bool = False

    def __post_init__(self) -> None:
        if self.stamp < 5 or self.stamp % 2 == 0:
            raise ValueError(f"PSFConfig.stamp must be odd and >= 5, got {self.stamp}")
        if self.poly_degree < 0:
            raise ValueError(f"PSFConfig.poly_degree must be >= 0, got {self.poly_degree}")
        if self.lanczos_order < 2:
            raise ValueError(f"PSFConfig.lanczos_order must be >= 2, got {self.lanczos_order}")
        if self.max_stars < 1:
            raise ValueError(f"PSFConfig.max_stars must be >= 1, got {self.max_stars}")
        if self.select_cells < 1:
            raise ValueError(f"PSFConfig.select_cells must be >= 1, got {self.select_cells}")
        if self.neighbour_grow < 0:
            raise ValueError(f"PSFConfig.neighbour_grow must be >= 0, got {self.neighbour_grow}")
        for name in ("companion_snr", "companion_rmin", "companion_mask"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"PSFConfig.{name} must be >= 0, got {getattr(self, name)}")


def poly_terms(u: np.ndarray, v: np.ndarray, degree: int) -> np.ndarray:
    """Polynomial terms of total degree <= ``degree`` in PSFEx's order.

    Parameters
    ----------
    u, v : numpy.ndarray
        Normalised coordinates (n,).
    degree : int
        Maximum total degree.

    Returns
    -------
    numpy.ndarray
        (n, (degree + 1) (degree + 2) / 2) terms: for each power of v (0..degree), the powers
        of u (0..degree - power of v).
    """
    u = np.atleast_1d(np.asarray(u, dtype=np.float64))
    v = np.atleast_1d(np.asarray(v, dtype=np.float64))
    cols = []
    for pv in range(degree + 1):
        for pu in range(degree + 1 - pv):
            cols.append(u ** pu * v ** pv)
    return np.stack(cols, axis=-1)


def _n_terms(degree: int) -> int:
    return (degree + 1) * (degree + 2) // 2


@dataclass(frozen=True)
class PSFModel:
    """A spatially varying pixel-basis PSF (see the module docstring).

    Attributes
    ----------
    coeffs : numpy.ndarray
        (n_terms, stamp, stamp) float64 basis images ``C_k``.
    degree : int
        Polynomial degree.
    x_zero, x_scale, y_zero, y_scale : float
        Normalisation of the 0-based CCD coordinates.
    image_shape : tuple[int, int]
        (ny, nx) of the CCD the model was fitted on.
    lanczos_order : int
        Lanczos order used for sub-pixel shifts.
    star_x, star_y, star_flux, star_chi2 : numpy.ndarray
        Positions (0-based), fluxes (e-, in the stamp) and chi2/dof of the accepted stars.
    n_candidates : int
        Number of candidate positions given to the fit.
    sky_pedestal : float
        Level (e-/px) common to the stars' stamps above the background subtracted from the
        image, fitted with the model (``PSFConfig.fit_pedestal``; 0 when not fitted). Not
        stored in the FITS model.
    """

    coeffs: np.ndarray
    degree: int
    x_zero: float
    x_scale: float
    y_zero: float
    y_scale: float
    image_shape: tuple[int, int]
    lanczos_order: int = 4
    star_x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    star_y: np.ndarray = field(default_factory=lambda: np.zeros(0))
    star_flux: np.ndarray = field(default_factory=lambda: np.zeros(0))
    star_chi2: np.ndarray = field(default_factory=lambda: np.zeros(0))
    n_candidates: int = 0
    sky_pedestal: float = 0.0
    # fwhm_at's Moffat fits by position: the CCD centre is asked for by the measurement, the
    # FWHMPSF grid and the QC, each a fit of ~10 ms (not an init argument, so that
    # dataclasses.replace starts a new model with an empty one)
    _fwhm_cache: dict[tuple[float, float], MoffatFit] = field(default_factory=dict,
                                                              init=False, repr=False,
                                                              compare=False)

    @property
    def stamp_size(self) -> int:
        """Side of the model stamp (pixels)."""
        return int(self.coeffs.shape[-1])

    @property
    def n_stars(self) -> int:
        """Number of stars the model was fitted to."""
        return int(len(self.star_x))

    def terms(self, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray:
        """Polynomial terms (n, n_terms) at 0-based CCD positions."""
        u = (np.asarray(x, dtype=np.float64) - self.x_zero) / self.x_scale
        v = (np.asarray(y, dtype=np.float64) - self.y_zero) / self.y_scale
        return poly_terms(u, v, self.degree)

    def centred(self, x: float, y: float) -> np.ndarray:
        """The model at (x, y), centred on the central pixel, normalised to sum 1 (float64)."""
        t = self.terms(x, y)[0]
        img = np.tensordot(t, self.coeffs, axes=(0, 0))
        return img / img.sum()

    def render(self, x: float, y: float, *, size: int | None = None, dx: float = 0.0,
               dy: float = 0.0) -> np.ndarray:
        """The PSF at CCD position (x, y), shifted by (dx, dy) from the stamp's central pixel.

        Parameters
        ----------
        x, y : float
            0-based CCD position at which the PSF shape is evaluated (pixels).
        size : int or None
            Side of the returned stamp (odd); default the model's stamp. Larger sizes are
            zero-padded, smaller ones cropped, both about the central pixel.
        dx, dy : float
            Sub-pixel offset of the PSF centre from the central pixel (pixels, x = column).
            A star at CCD position ``(xs, ys)`` is rendered with ``dx = xs - round(xs)``,
            ``dy = ys - round(ys)`` on a stamp whose central pixel is ``(round(xs),
            round(ys))``.

        Returns
        -------
        numpy.ndarray
            (size, size) float32 stamp, sum 1.
        """
        img = self.centred(x, y)
        n = self.stamp_size
        if dx != 0.0 or dy != 0.0:
            img = shift_matrix(n, dy, self.lanczos_order) @ img @ shift_matrix(
                n, dx, self.lanczos_order).T
        if size is not None and size != n:
            if size % 2 == 0 or size < 1:
                raise ValueError(f"size must be a positive odd number, got {size}")
            out = np.zeros((size, size))
            h, hs = n // 2, size // 2
            r = min(h, hs)
            out[hs - r:hs + r + 1, hs - r:hs + r + 1] = img[h - r:h + r + 1, h - r:h + r + 1]
            img = out
        return (img / img.sum()).astype(np.float32)

    def render_batch(self, x: ArrayLike, y: ArrayLike, *, size: int | None = None,
                     dx: ArrayLike | None = None, dy: ArrayLike | None = None) -> np.ndarray:
        """:meth:`render` at many positions: stamp ``k`` is ``render(x[k], y[k], size=size,
        dx=dx[k], dy=dy[k])``, bit for bit.

        The polynomial terms of all positions are evaluated at once, the basis combined for
        all of them in one matrix product and the Lanczos shifts applied as one stack of
        matrix products (numpy's stacked ``matmul`` runs the same BLAS product per stamp as
        :meth:`render`'s ``@``); stamps with no offset are not shifted, as in :meth:`render`.
        ~4x faster than one :meth:`render` per position for a few hundred positions.

        Parameters
        ----------
        x, y : array_like
            (n,) 0-based CCD positions at which the PSF shape is evaluated (pixels).
        size : int or None
            Side of the returned stamps (odd); default the model's stamp (see :meth:`render`).
        dx, dy : array_like or None
            (n,) sub-pixel offsets of the PSF centres from the central pixels (pixels,
            x = column); ``None``: 0.

        Returns
        -------
        numpy.ndarray
            (n, size, size) float32 stamps, each sum 1.
        """
        xs = np.atleast_1d(np.asarray(x, dtype=np.float64))
        ys = np.atleast_1d(np.asarray(y, dtype=np.float64))
        if xs.ndim != 1 or xs.shape != ys.shape:
            raise ValueError(f"x and y must be 1-D of one length, got {xs.shape}, {ys.shape}")
        m = xs.size
        offx = np.zeros(m) if dx is None else np.broadcast_to(
            np.asarray(dx, dtype=np.float64), (m,))
        offy = np.zeros(m) if dy is None else np.broadcast_to(
            np.asarray(dy, dtype=np.float64), (m,))
        n = self.stamp_size
        if size is not None and size != n and (size % 2 == 0 or size < 1):
            raise ValueError(f"size must be a positive odd number, got {size}")
        nt = self.coeffs.shape[0]
        # each row the product render's tensordot makes for one position
        flat = np.empty((m, n * n))
        terms = self.terms(xs, ys)
        basis = self.coeffs.reshape(nt, n * n)
        for k in range(m):
            np.dot(terms[k:k + 1], basis, out=flat[k:k + 1])
        flat /= flat.sum(axis=1, keepdims=True)
        img = flat.reshape(m, n, n)
        moved = np.flatnonzero((offx != 0.0) | (offy != 0.0))
        if moved.size:
            grid = np.arange(n, dtype=np.float64)
            my = interpolation_matrix(grid[None, :] - offy[moved, None], n, self.lanczos_order)
            mx = interpolation_matrix(grid[None, :] - offx[moved, None], n, self.lanczos_order)
            img[moved] = np.matmul(np.matmul(my, img[moved]), mx.transpose(0, 2, 1))
        if size is not None and size != n:
            out = np.zeros((m, size, size))
            h, hs = n // 2, size // 2
            r = min(h, hs)
            out[:, hs - r:hs + r + 1, hs - r:hs + r + 1] = img[:, h - r:h + r + 1,
                                                               h - r:h + r + 1]
            img = out
        sums = img.reshape(m, -1).sum(axis=1)
        return (img / sums[:, None, None]).astype(np.float32)

    def fwhm_at(self, x: float, y: float) -> float:
        """PSF FWHM (pixels) at CCD position (x, y).

        The geometric mean of the major- and minor-axis FWHM of an elliptical Moffat fitted
        to the model with the pixel response removed (pixel-integrated fit), i.e. the FWHM of
        the PSF on the sky in pixel units; multiply by the pixel scale for arcsec.
        """
        return self._moffat_at(x, y, None).fwhm

    def fwhm_grid(self, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
        """:meth:`fwhm_at` on the grid of nodes ``gx`` x ``gy`` (pixels), shape (ny, nx).

        Each node's fit starts from the last fitted neighbour's (rows in alternate
        directions, from the CCD centre's fit when it was already made): the same minima as
        separate fits (FWHM equal to ~1e-7) in ~30 % fewer iterations.
        """
        gx = np.asarray(gx, dtype=np.float64)
        gy = np.asarray(gy, dtype=np.float64)
        ny, nx = self.image_shape
        start = self._fwhm_cache.get(((nx - 1) / 2.0, (ny - 1) / 2.0))
        out = np.empty((gy.size, gx.size))
        for j, yy in enumerate(gy):
            cols = range(gx.size) if j % 2 == 0 else range(gx.size - 1, -1, -1)
            for i in cols:
                start = self._moffat_at(float(gx[i]), float(yy), start)
                out[j, i] = start.fwhm
        return out

    def _moffat_at(self, x: float, y: float, start: MoffatFit | None) -> MoffatFit:
        """The Moffat fit of :meth:`fwhm_at` at (x, y), cached by position."""
        key = (float(x), float(y))
        fit = self._fwhm_cache.get(key)
        if fit is None:
            fit = fit_moffat(self.centred(x, y), start=start)
            if len(self._fwhm_cache) < 64:
                self._fwhm_cache[key] = fit
        return fit

    def ellipticity_at(self, x: float, y: float) -> tuple[float, float]:
        """PSF distortion (e1, e2) at CCD position (x, y) from adaptive moments.

        ``e1 = (Mxx - Myy) / (Mxx + Myy)``, ``e2 = 2 Mxy / (Mxx + Myy)`` of the adaptive
        second moments of the model, pixel variance removed; x = column, y = row.
        """
        m = adaptive_moments(self.centred(x, y))
        return m.e1, m.e2

    # ----------------------------------------------------------------------------- storage
    def to_fits_hdul(self) -> fits.HDUList:
        """FITS representation in a PSFEx-like layout.

        Returns
        -------
        astropy.io.fits.HDUList
            Primary HDU; ``PSF_DATA`` binary table with one row holding ``PSF_MASK`` (n_terms,
            stamp, stamp) and PSFEx's keywords (``POLNAXIS``, ``POLNAME1/2 = X_IMAGE/Y_IMAGE``,
            ``POLZERO1/2`` and ``POLSCAL1/2`` in 1-based SExtractor coordinates, ``POLDEG1``,
            ``PSF_SAMP``, ``PSFNAXIS``, ``PSFAXIS1..3``, ``ACCEPTED``, ``LOADED``); and
            ``PSF_STARS`` with the accepted stars (``X_IMAGE``, ``Y_IMAGE`` 1-based, ``FLUX``,
            ``CHI2``).
        """
        n_terms, ny, nx = self.coeffs.shape
        col = fits.Column(name="PSF_MASK", format=f"{n_terms * ny * nx}D",
                          dim=f"({nx},{ny},{n_terms})",
                          array=self.coeffs.reshape(1, n_terms, ny, nx))
        data = fits.BinTableHDU.from_columns([col], name="PSF_DATA")
        for key, value, comment in self._data_cards():
            data.header[key] = value if comment is None else (value, comment)
        stars = fits.BinTableHDU.from_columns([
            fits.Column(name=name, format="D", unit=unit, array=values)
            for (name, unit), values in zip(_STAR_COLUMNS, self._star_columns())],
            name="PSF_STARS")
        return fits.HDUList([fits.PrimaryHDU(), data, stars])

    def _data_cards(self) -> list[tuple[str, Any, str | None]]:
        """The PSFEx keywords of ``PSF_DATA`` (keyword, value, comment or None), in order."""
        n_terms, ny, nx = self.coeffs.shape
        return [
            ("LOADED", self.n_candidates, "candidate stars given"),
            ("ACCEPTED", self.n_stars, "stars used in the model"),
            ("CHI2", float(np.median(self.star_chi2)) if self.n_stars else 0.0,
             "median chi2/dof of the accepted stars"),
            ("POLNAXIS", 2, None), ("POLGRP1", 1, None), ("POLNAME1", "X_IMAGE", None),
            ("POLZERO1", self.x_zero + 1.0, "1-based"), ("POLSCAL1", self.x_scale, None),
            ("POLGRP2", 1, None), ("POLNAME2", "Y_IMAGE", None),
            ("POLZERO2", self.y_zero + 1.0, "1-based"), ("POLSCAL2", self.y_scale, None),
            ("POLNGRP", 1, None), ("POLDEG1", self.degree, None), ("PSF_SAMP", 1.0, None),
            ("PSFNAXIS", 3, None), ("PSFAXIS1", nx, None), ("PSFAXIS2", ny, None),
            ("PSFAXIS3", n_terms, None),
            ("LANCZOS", self.lanczos_order, "Lanczos order of sub-pixel shifts"),
            ("IMNAXIS1", self.image_shape[1], "CCD width (pix)"),
            ("IMNAXIS2", self.image_shape[0], "CCD height (pix)")]

    def _star_columns(self) -> list[np.ndarray]:
        """The ``PSF_STARS`` columns (:data:`_STAR_COLUMNS`): 1-based positions, flux, chi2."""
        return [self.star_x + 1.0, self.star_y + 1.0, self.star_flux, self.star_chi2]

    def to_fits_bytes(self, primary: Sequence[tuple[str, Any]] = ()) -> bytes:
        """The file :meth:`to_fits_hdul` makes, with ``primary``'s (keyword, value) cards set
        in its primary header in order, as ``HDUList.writeto`` writes it, built directly:
        the headers from card images (the column cards of a coefficient shape made by
        astropy once per process), the rows packed with numpy. The same bytes (tested),
        ~10 -> ~1 ms of CPU per model."""
        from desgw.io._fitsutil import card_image, header_bytes

        n_terms, ny, nx = self.coeffs.shape
        data_cards, stars_cards = _psf_column_cards(n_terms, ny, nx)
        prim = [*_psf_primary_cards(), *(card_image(k, v) for k, v in primary)]
        data_hdr = [*data_cards, *(card_image(k, v, c) for k, v, c in self._data_cards())]
        n = len(self.star_x)
        naxis2_comment, before, after = stars_cards
        stars_hdr = [*before, card_image("NAXIS2", n, naxis2_comment), *after]
        rows = np.empty(n, dtype=[(name, ">f8") for name, _ in _STAR_COLUMNS])
        for (name, _), values in zip(_STAR_COLUMNS, self._star_columns()):
            rows[name] = values
        coeffs = np.ascontiguousarray(self.coeffs, dtype=">f8").tobytes()
        stars = rows.tobytes()
        return b"".join((header_bytes(prim), header_bytes(data_hdr), coeffs,
                         bytes(-len(coeffs) % 2880), header_bytes(stars_hdr), stars,
                         bytes(-len(stars) % 2880)))

    @classmethod
    def from_fits_hdul(cls, hdul: fits.HDUList, *, path: str | None = None) -> PSFModel:
        """Rebuild a model written by :meth:`to_fits_hdul`.

        Raises
        ------
        desgw.errors.DataTypeError
            If ``PSF_DATA`` is missing or malformed (``path`` names the file in the message).
        """
        try:
            hdu = hdul["PSF_DATA"]
        except KeyError:
            raise DataTypeError(path, "PSF_DATA", "no PSF_DATA extension") from None
        h = hdu.header
        try:
            n_terms, ny, nx = int(h["PSFAXIS3"]), int(h["PSFAXIS2"]), int(h["PSFAXIS1"])
            degree = int(h["POLDEG1"])
            coeffs = np.asarray(hdu.data["PSF_MASK"][0], dtype=np.float64).reshape(n_terms, ny, nx)
            x_zero, x_scale = float(h["POLZERO1"]) - 1.0, float(h["POLSCAL1"])
            y_zero, y_scale = float(h["POLZERO2"]) - 1.0, float(h["POLSCAL2"])
            image_shape = (int(h["IMNAXIS2"]), int(h["IMNAXIS1"]))
            lanczos_order, n_candidates = int(h.get("LANCZOS", 4)), int(h["LOADED"])
        except (KeyError, ValueError, TypeError) as exc:
            raise DataTypeError(path, "PSF_DATA", f"malformed PSF model: {exc}") from None
        if n_terms != _n_terms(degree):
            raise DataTypeError(path, "PSF_DATA",
                                f"{n_terms} basis images do not match POLDEG1={degree}")
        star_x = star_y = star_flux = star_chi2 = np.zeros(0)
        if "PSF_STARS" in hdul:
            d = hdul["PSF_STARS"].data
            star_x = np.asarray(d["X_IMAGE"], float) - 1.0
            star_y = np.asarray(d["Y_IMAGE"], float) - 1.0
            star_flux = np.asarray(d["FLUX"], float)
            star_chi2 = np.asarray(d["CHI2"], float)
        return cls(coeffs=coeffs, degree=degree, x_zero=x_zero, x_scale=x_scale, y_zero=y_zero,
                   y_scale=y_scale, image_shape=image_shape, lanczos_order=lanczos_order,
                   n_candidates=n_candidates, star_x=star_x, star_y=star_y, star_flux=star_flux,
                   star_chi2=star_chi2)


#: ``PSF_STARS`` columns: name, unit.
_STAR_COLUMNS: tuple[tuple[str, str | None], ...] = (
    ("X_IMAGE", "pix"), ("Y_IMAGE", "pix"), ("FLUX", "electron"), ("CHI2", None))


@functools.lru_cache(maxsize=1)
def _psf_primary_cards() -> tuple[str, ...]:
    """Card images of an empty ``fits.PrimaryHDU()`` header."""
    return tuple(c.image for c in fits.PrimaryHDU().header.cards)


@functools.lru_cache(maxsize=8)
def _psf_column_cards(n_terms: int, ny: int, nx: int
                      ) -> tuple[tuple[str, ...], tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """Card images of the ``PSF_DATA`` header for a (n_terms, ny, nx) coefficient cube
    before its PSFEx keywords, and NAXIS2's comment and the card images before and after it
    of the ``PSF_STARS`` header, both as :meth:`PSFModel.to_fits_hdul` makes them (built by astropy)."""
    col = fits.Column(name="PSF_MASK", format=f"{n_terms * ny * nx}D",
                      dim=f"({nx},{ny},{n_terms})", array=np.zeros((1, n_terms, ny, nx)))
    data = fits.BinTableHDU.from_columns([col], name="PSF_DATA").header
    stars = fits.BinTableHDU.from_columns([
        fits.Column(name=name, format="D", unit=unit, array=np.zeros(0))
        for name, unit in _STAR_COLUMNS], name="PSF_STARS").header
    cards = list(stars.cards)
    at = [c.keyword for c in cards].index("NAXIS2")
    return (tuple(c.image for c in data.cards),
            (cards[at].comment, tuple(c.image for c in cards[:at]),
             tuple(c.image for c in cards[at + 1:])))


# ------------------------------------------------------------------------ star selection
def select_psf_candidates(detections: DetectionResult, *, min_snr: float = 50.0,
                          max_peak: float | None = None, isolation: float = 12.0,
                          locus_width: float = 0.15) -> np.ndarray:
    """Choose PSF star candidates from detections: bright, isolated, unblended, point-like.

    Parameters
    ----------
    detections : DetectionResult
        Output of :func:`desgw.se.detect.detect_sources`.
    min_snr : float
        Minimum isophotal signal-to-noise (``flux_iso / (rms sqrt(npix))``, with the rms
        recovered from the detection threshold).
    max_peak : float or None
        Reject objects whose peak exceeds this (e-), e.g. 0.8 x the saturation level.
    isolation : float
        Reject objects with another detection within this distance (pixels).
    locus_width : float
        Keep objects whose half-light radius is within this fraction of the stellar locus
        (the mode of the half-light radii of the bright objects).

    Returns
    -------
    numpy.ndarray
        Indices (int) into ``detections.catalog``.
    """
    cat = detections.catalog
    if len(cat) == 0:
        return np.zeros(0, dtype=int)
    rms = np.asarray(cat["thresh"], dtype=np.float64) / detections.config.thresh_sigma
    snr = np.asarray(cat["flux_iso"], dtype=np.float64) / (rms * np.sqrt(np.asarray(cat["npix"])))
    ok = (snr >= min_snr) & (np.asarray(cat["sep_flag"]) == 0) & (np.asarray(cat["win_flag"]) == 0)
    if max_peak is not None:
        ok &= np.asarray(cat["peak"]) < max_peak
    xy = np.column_stack([np.asarray(cat["xwin"]), np.asarray(cat["ywin"])])
    if len(cat) > 1:
        d, _ = cKDTree(xy).query(xy, k=2)
        ok &= d[:, 1] > isolation
    r = np.asarray(cat["flux_radius"], dtype=np.float64)
    if ok.sum() == 0:
        return np.zeros(0, dtype=int)
    # Stellar locus: the most populated bin of the half-light radius among bright objects
    # (stars pile up at the PSF size, galaxies spread to larger radii).
    rb = r[ok]
    bins = np.arange(0.5 * rb.min(), rb.max() + 0.1, 0.1)
    if len(bins) < 2:
        mode = float(np.median(rb))
    else:
        hist, edges = np.histogram(rb, bins=bins)
        k = int(np.argmax(hist))
        near = np.abs(rb - 0.5 * (edges[k] + edges[k + 1])) < 0.2
        mode = float(np.median(rb[near]))
    ok &= np.abs(r - mode) < locus_width * mode
    return np.flatnonzero(ok)


def spread_selection(x: np.ndarray, y: np.ndarray, shape: tuple[int, int], k: int,
                     cells: int) -> np.ndarray:
    """Choose at most ``k`` of the positions, spread over the image, best first.

    The image is divided into a grid of about ``cells`` near-square cells; the positions,
    given in order of preference (e.g. decreasing signal-to-noise), are taken round by round:
    the best of every cell, then the second best of every cell, and so on, in order of
    preference within a round, until ``k`` are chosen. A PSF whose shape varies over the CCD is
    then sampled everywhere, even where the brightest stars are few.

    Parameters
    ----------
    x, y : numpy.ndarray
        0-based positions (pixels), in order of preference.
    shape : tuple of int
        Image shape (ny, nx).
    k : int
        Number to choose.
    cells : int
        Approximate number of grid cells (>= 1).

    Returns
    -------
    numpy.ndarray
        Indices (int, increasing: the preference order) of the chosen positions; all of them
        when there are at most ``k``.
    """
    m = len(x)
    if m <= k:
        return np.arange(m)
    ny, nx = shape
    gx = max(1, int(round(math.sqrt(cells * nx / max(ny, 1)))))
    gy = max(1, int(round(cells / gx)))
    cx = np.clip((np.asarray(x, dtype=np.float64) * gx / nx).astype(np.int64), 0, gx - 1)
    cy = np.clip((np.asarray(y, dtype=np.float64) * gy / ny).astype(np.int64), 0, gy - 1)
    cell = cy * gx + cx
    # rank of each position within its cell (0 = the cell's best)
    by_cell = np.argsort(cell, kind="stable")
    sorted_cell = cell[by_cell]
    first = np.searchsorted(sorted_cell, sorted_cell, side="left")
    rank = np.empty(m, dtype=np.int64)
    rank[by_cell] = np.arange(m) - first
    chosen = np.lexsort((np.arange(m), rank))[:k]
    return np.sort(chosen)


# --------------------------------------------------------------------------------- fitting
def _extract_matrices(n: int, offsets: np.ndarray, order: int) -> np.ndarray:
    """Stack of :func:`desgw.se.psf_lanczos.extract_matrix` for many offsets: (k, n, n + 2 order)."""
    x = np.arange(n)[None, :] + order + np.asarray(offsets, dtype=np.float64)[:, None]
    return interpolation_matrix(x, n + 2 * order, order, normalise_rows=True)


def _round_trip_matrices(n: int, offsets: np.ndarray, order: int) -> np.ndarray:
    """(k, n, n): render on the padded grid at ``offsets``, then re-centre (extract)."""
    off = np.asarray(offsets, dtype=np.float64)
    r = interpolation_matrix(np.arange(n + 2 * order)[None, :] - order - off[:, None], n, order)
    return np.matmul(_extract_matrices(n, off, order), r)


def _resample(big: np.ndarray, offx: np.ndarray, offy: np.ndarray, n: int, order: int) -> np.ndarray:
    """Re-centre a stack of padded cut-outs (k, n + 2 order, n + 2 order) on sub-pixel offsets."""
    my = _extract_matrices(n, offy, order)
    mx = _extract_matrices(n, offx, order)
    return np.matmul(np.matmul(my, big), mx.transpose(0, 2, 1))


def fit_psf(image: np.ndarray, weight: np.ndarray, mask: np.ndarray | None,
            x: np.ndarray, y: np.ndarray, *, segmap: np.ndarray | None = None,
            neighbour_xy: np.ndarray | None = None,
            config: PSFConfig = PSFConfig()) -> PSFModel:
    """Fit a spatially varying PSF model to stars.

    Parameters
    ----------
    image : numpy.ndarray
        Background-subtracted image (ny, nx), e-; not modified.
    weight : numpy.ndarray
        Inverse variance of the background and read noise (ny, nx), e-**-2; 0 = unusable.
    mask : numpy.ndarray or None
        Integer mask (ny, nx); stamps with any of ``config.mask_bits`` are not used.
    x, y : numpy.ndarray
        0-based candidate star positions (pixels): isolated, unsaturated point sources,
        e.g. windowed centroids of bright detections with small SPREAD or FLUX_RADIUS.
    segmap : numpy.ndarray or None
        Segmentation map of the detections (ny, nx; 0 = sky, else the object's id), e.g.
        :attr:`desgw.se.detect.DetectionResult.segmap`. Pixels of segments other than the one
        under a star's centre, grown by ``config.neighbour_grow``, are not used for that star.
    neighbour_xy : numpy.ndarray or None
        (m, 2) 0-based (x, y) of all detections (the stars may be among them). With it, the
        model is fitted twice: the light of every neighbour (its PSF flux with the first model)
        is subtracted from the star stamps before the second fit.
    config : PSFConfig
        Settings.

    Returns
    -------
    PSFModel

    Raises
    ------
    PSFFitError
        If fewer than ``config.min_stars_per_term`` stars (for a constant model) survive the
        cuts.
    desgw.errors.DataTypeError
        If array shapes disagree.
    """
    image = np.asarray(image)
    weight = np.asarray(weight)
    if image.ndim != 2 or weight.shape != image.shape:
        raise DataTypeError(None, None, f"image {image.shape} and weight {weight.shape} must be "
                            "2-D arrays of the same shape")
    if mask is not None and np.shape(mask) != image.shape:
        raise DataTypeError(None, None, f"mask has shape {np.shape(mask)}, expected {image.shape}")
    if segmap is not None and np.shape(segmap) != image.shape:
        raise DataTypeError(None, None, f"segmap has shape {np.shape(segmap)}, expected "
                            f"{image.shape}")
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    y = np.atleast_1d(np.asarray(y, dtype=np.float64))
    n_cand = len(x)
    ny, nx = image.shape
    n = config.stamp
    h = n // 2
    order = config.lanczos_order
    pad = h + order + 2  # margin for re-centring by up to 1.5 pixels

    ix = np.round(x).astype(np.int64)
    iy = np.round(y).astype(np.int64)
    inside = (ix - pad >= 0) & (ix + pad < nx) & (iy - pad >= 0) & (iy + pad < ny)
    ix, iy, xs, ys = ix[inside], iy[inside], x[inside], y[inside]
    off = np.arange(-pad, pad + 1)
    rows = iy[:, None, None] + off[None, :, None]
    cols = ix[:, None, None] + off[None, None, :]
    big = image[rows, cols].astype(np.float64)
    wbig = weight[rows, cols].astype(np.float64)
    badbig = ~(wbig > 0) | ~np.isfinite(big)
    if mask is not None:
        badbig |= (np.asarray(mask)[rows, cols] & config.mask_bits) != 0
    if segmap is not None and len(ix):
        seg = np.asarray(segmap)[rows, cols]
        own = seg[:, pad, pad]
        other = (seg != 0) & (seg != own[:, None, None])
        if config.neighbour_grow > 0 and other.any():
            g = 2 * int(config.neighbour_grow) + 1
            other = ndimage.maximum_filter(other.view(np.uint8), size=(1, g, g), mode="constant",
                                           cval=0).view(bool)
        badbig |= other
    # A star is unusable if a bad pixel lies in its core (a quarter of the stamp); bad pixels
    # further out only remove the model pixels they touch through the resampling kernel.
    rr = np.hypot(off[:, None], off[None, :])
    ok = ~np.any(badbig & (rr <= max(n // 4, 3))[None], axis=(1, 2))
    big, wbig, badbig, ix, iy, xs, ys = (a[ok] for a in (big, wbig, badbig, ix, iy, xs, ys))
    big[badbig] = 0.0
    var_big = np.where(badbig, np.inf, 1.0 / np.where(badbig, 1.0, wbig))

    # Box flux and signal-to-noise in the central stamp.
    core = big[:, pad - h:pad + h + 1, pad - h:pad + h + 1]
    vcore = var_big[:, pad - h:pad + h + 1, pad - h:pad + h + 1]
    flux0 = core.sum(axis=(1, 2))
    vsum = np.where(np.isfinite(vcore), vcore, 0.0).sum(axis=(1, 2))
    snr = flux0 / np.sqrt(vsum + np.maximum(flux0, 0) / config.gain)
    keep = np.argsort(-snr, kind="stable")
    keep = keep[snr[keep] >= config.min_snr]
    keep = keep[spread_selection(xs[keep], ys[keep], (ny, nx), config.max_stars,
                                 config.select_cells)]
    big, var_big, badbig, ix, iy, xs, ys, flux0 = (
        a[keep] for a in (big, var_big, badbig, ix, iy, xs, ys, flux0))
    n_usable = len(keep)
    degree = config.poly_degree
    while degree > 0 and n_usable < config.min_stars_per_term * _n_terms(degree):
        degree -= 1
    if n_usable < config.min_stars_per_term:
        raise PSFFitError(f"PSF fit: {n_usable} usable stars of {n_cand} candidates, need "
                          f"{config.min_stars_per_term:g}", n_cand, n_usable,
                          int(np.ceil(config.min_stars_per_term)))
    if degree < config.poly_degree:
        log.warning("PSF fit: only %d stars, polynomial degree lowered from %d to %d",
                    n_usable, config.poly_degree, degree)

    # Rough FWHM from the median normalised stamp, for the centroid window.
    core = core[keep]
    stack = np.median(core / flux0[:, None, None], axis=0)
    area = max(int(np.count_nonzero(stack >= 0.5 * stack.max())), 1)
    fwhm0 = max(2.0 * np.sqrt(area / np.pi), 1.5)
    x_zero, x_scale = (nx - 1) / 2.0, float(nx)
    y_zero, y_scale = (ny - 1) / 2.0, float(ny)
    norm_xy = (x_zero, x_scale, y_zero, y_scale)
    coeffs, flux, chi2, use, star_x, star_y, ped = _fit_cutouts(
        big, var_big, badbig, ix, iy, xs, ys, pad, fwhm0, degree, norm_xy, config)
    if neighbour_xy is not None and len(neighbour_xy):
        # Subtract the neighbours' light (their PSF fluxes with this first model) from the
        # cut-outs and fit again.
        contam = _neighbour_light(image, weight, mask, np.asarray(neighbour_xy, np.float64),
                                  coeffs, degree, norm_xy, ix, iy, xs, ys, pad, fwhm0, config)
        coeffs, flux, chi2, use, star_x, star_y, ped = _fit_cutouts(
            big - contam, var_big, badbig, ix, iy, xs, ys, pad, fwhm0, degree, norm_xy, config)
    model = PSFModel(coeffs=coeffs, degree=degree, x_zero=x_zero, x_scale=x_scale, y_zero=y_zero,
                     y_scale=y_scale, image_shape=(ny, nx), lanczos_order=order,
                     star_x=star_x[use], star_y=star_y[use], star_flux=flux[use],
                     star_chi2=chi2[use], n_candidates=n_cand, sky_pedestal=float(ped))
    log.info("PSF fit: %d candidates, %d usable, %d accepted, degree %d, median chi2/dof %.2f",
             n_cand, n_usable, int(use.sum()), degree, float(np.median(chi2[use])))
    return model


#: The PSF fit's pedestal (``PSFConfig.fit_pedestal``) is kept only when it exceeds this many
#: times its formal error, which understates its scatter on sparse CCDs: simulated sparse
#: audit CCDs gave -0.06 +- 0.42, +1.32 +- 0.45 and -1.29 +- 0.38 e-/px (581796/28, /29,
#: 599295/28; the last moved bright FLUX_PSF / true 1.0010 -> 1.0021), crowded ones -2.05 +-
#: 0.13 (768792/28).
PEDESTAL_SIGMA = 4.0


def _fit_cutouts(big: np.ndarray, var_big: np.ndarray, badbig: np.ndarray, ix: np.ndarray,
                 iy: np.ndarray, xs: np.ndarray, ys: np.ndarray, pad: int, fwhm0: float,
                 degree: int, norm_xy: tuple[float, float, float, float], config: PSFConfig
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                            np.ndarray, float]:
    """Steps 2-4 (and 6) of the fit on padded cut-outs (k, 2 pad + 1, 2 pad + 1) centred on
    (ix, iy).

    Returns the coefficients, the stars' fluxes, chi2/dof, accepted flags, positions and the
    pedestal (e-/px; 0 without ``config.fit_pedestal``).
    """
    n = config.stamp
    h = n // 2
    order = config.lanczos_order
    x_zero, x_scale, y_zero, y_scale = norm_xy
    x0, y0 = xs - ix + pad, ys - iy + pad
    cx, cy, _ = winpos_stamps(big, badbig, x0, y0, fwhm0 / 2.35, 16)
    cx = np.clip(cx, x0 - 1.5, x0 + 1.5)
    cy = np.clip(cy, y0 - 1.5, y0 + 1.5)
    # Offsets of the stars from the centre of the (n + 2 order)-wide sub-cut-out.
    offx, offy = cx - pad, cy - pad
    sub0 = pad - h - order
    # Re-cut per star so that the integer part of the offset is absorbed.
    shifts_x = np.round(offx).astype(int)
    shifts_y = np.round(offy).astype(int)
    fx, fy = offx - shifts_x, offy - shifts_y
    r0 = sub0 + shifts_y
    c0 = sub0 + shifts_x
    idx = np.arange(n + 2 * order)
    sub = big[np.arange(len(big))[:, None, None], (r0[:, None] + idx[None, :])[:, :, None],
              (c0[:, None] + idx[None, :])[:, None, :]]
    vsub = var_big[:, pad - h:pad + h + 1, pad - h:pad + h + 1].copy()
    bsub = badbig[np.arange(len(big))[:, None, None], (r0[:, None] + idx[None, :])[:, :, None],
                  (c0[:, None] + idx[None, :])[:, None, :]]
    if bsub.any():
        # A resampled pixel reads input pixels up to ``order`` away: drop those near bad ones.
        near_bad = ndimage.maximum_filter(bsub, size=(1, 2 * order + 1, 2 * order + 1))
        vsub[near_bad[:, order:order + n, order:order + n]] = np.inf
    stamps = _resample(sub, fx, fy, n, order)
    # K = E R per axis: a model rendered at the star's sub-pixel offset (as the photometry
    # renders it) and resampled back onto the centred grid (as the stars are): the smoothing
    # of the two interpolations, undone by the fit below.
    ky = _round_trip_matrices(n, fy, order)
    kx = _round_trip_matrices(n, fx, order)
    star_x = ix + (cx - pad)
    star_y = iy + (cy - pad)

    terms = poly_terms((star_x - x_zero) / x_scale, (star_y - y_zero) / y_scale, degree)
    n_t = terms.shape[1]

    flux = stamps.sum(axis=(1, 2))
    use = np.ones(len(stamps), dtype=bool)
    model_img = np.median(stamps / flux[:, None, None], axis=0)
    coeffs = np.zeros((n_t, n, n))
    chi2 = np.zeros(len(stamps))
    npix = n * n
    # light of point sources hidden in the stamps (not among the detections), and the
    # pixels next to them, found after each fit
    raw = stamps
    comp = np.zeros_like(raw)
    near = np.zeros(stamps.shape, dtype=bool)
    ped = 0.0
    ped_err = math.inf
    rr = np.hypot(*np.meshgrid(np.arange(n) - h, np.arange(n) - h))
    outer = (rr >= 2.0 * fwhm0).ravel()[None, :]
    for it in range(config.n_iter + 1):
        stamps = raw - comp - ped
        # Per-star model images with the current coefficients (or the median to start).
        if it == 0:
            models = np.broadcast_to(model_img, stamps.shape)
        else:
            models = (terms @ coeffs.reshape(n_t, npix)).reshape(stamps.shape)
            models = models / models.sum(axis=(1, 2))[:, None, None]
            # Re-fit fluxes with the model.
            w0 = 1.0 / (vsub + np.maximum(flux[:, None, None] * models, 0) / config.gain)
            flux = (w0 * models * stamps).sum(axis=(1, 2)) / (w0 * models * models).sum(axis=(1, 2))
            var = vsub + np.maximum(flux[:, None, None] * models, 0) / config.gain
            chi2 = ((stamps - flux[:, None, None] * models) ** 2 / var).sum(axis=(1, 2)) / (npix - 1)
            med = np.median(chi2[use])
            mad = 1.4826 * np.median(np.abs(chi2[use] - med))
            new_use = chi2 <= med + config.chi2_clip * max(mad, 1e-3 * med)
            if new_use.sum() >= config.min_stars_per_term * n_t:
                use = new_use
            if it == config.n_iter:
                break
            if config.companion_snr > 0:
                comp, near = _hidden_companions(raw - ped - flux[:, None, None] * models, var,
                                                models[use].mean(axis=0), config, fwhm0)
                stamps = raw - comp - ped
        norm = stamps / flux[:, None, None]
        if it > 0 and config.forward_model:
            norm = norm + models - np.matmul(np.matmul(ky, models), kx.transpose(0, 2, 1))
        f3 = flux[:, None, None]
        var_norm = (vsub + np.maximum(f3 * models, 0) / config.gain) / f3**2
        var_norm[near] = np.inf
        w = (1.0 / var_norm)[use].reshape(use.sum(), npix)
        a = terms[use]
        # normal[p] = sum_s w[s, p] a[s] a[s]^T, rhs[p] = sum_s w[s, p] a[s] y[s, p]
        aa = (a[:, :, None] * a[:, None, :]).reshape(len(a), n_t * n_t)
        normal = (w.T @ aa).reshape(npix, n_t, n_t)
        # A tiny ridge keeps pixels that no star constrains (all masked) solvable (-> 0).
        ridge = 1e-12 * np.abs(normal).max()
        normal[:, np.arange(n_t), np.arange(n_t)] += ridge
        rhs = (w * norm[use].reshape(use.sum(), npix)).T @ a
        sol = np.linalg.solve(normal, rhs[..., None])[..., 0]
        if config.fit_pedestal and it > 0:
            # a level common to all stamps (the sky under the stars less the background
            # subtracted) is p / F in a star's normalised stamp: fitted jointly with the
            # model, by the stars' spread in flux (the model's own light scales with F)
            # (over the pixels beyond 2 FWHM: in the core the stars' flux errors, which enter
            # both the normalised stamps and 1 / F, would bias it)
            inv_f = 1.0 / flux[use]
            resp = np.linalg.solve(normal, ((w * inv_f[:, None]).T @ a)[..., None])[..., 0]
            g = inv_f[:, None] - a @ resp.T
            r = norm[use].reshape(use.sum(), npix) - a @ sol.T
            wo = w * outer
            den = float(np.sum(wo * g * g))
            if den > 0:
                dp = float(np.sum(wo * r * g)) / den
                # kept only where the stars measure it (beyond PEDESTAL_SIGMA of its error
                # 1 / sqrt(den)); else none, as without the fit
                if abs(ped + dp) * math.sqrt(den) < PEDESTAL_SIGMA:
                    dp = -ped
                sol = sol - dp * resp
                ped += dp
                ped_err = 1.0 / math.sqrt(den)
        coeffs = sol.T.reshape(n_t, n, n)
    if config.fit_pedestal:
        log.info("PSF pedestal %.3f +- %.3f e-/px", ped, ped_err)
    return coeffs, flux, chi2, use, star_x, star_y, ped


def _same_convolve(stacks: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """Convolution of each (k, n, n) stack ``stacks[i]`` with the odd (n, n) ``kernels[i]``,
    cropped to the stamps (``fftconvolve(..., mode="same")``).

    A circular convolution on ``L >= n + n // 2`` pixels per axis gives the same numbers on the
    cropped stamp (what wraps round lands outside it) with fewer pixels than the linear
    convolution's ``2 n - 1``: 40 instead of 54 for a 27-pixel stamp.
    """
    n = stacks.shape[-1]
    h = n // 2
    size = sfft.next_fast_len(n + h, real=True)
    khat = sfft.rfft2(kernels, s=(size, size), workers=1)
    hat = sfft.rfft2(stacks, s=(size, size), workers=1)
    hat *= khat[:, None]
    return sfft.irfft2(hat, s=(size, size), workers=1)[..., h:h + n, h:h + n]


def _hidden_companions(resid: np.ndarray, var: np.ndarray, kern: np.ndarray, config: PSFConfig,
                       fwhm: float) -> tuple[np.ndarray, np.ndarray]:
    """Point sources hidden in the residuals of PSF-star stamps, and their light.

    The residual of each stamp is made odd under a half turn about the star (``r(p) - r(-p)``):
    a companion at ``p`` stays, while a mismatch of the model's width, ellipticity or wing level,
    which is even, cancels. Local maxima of its PSF-matched-filter signal-to-noise above
    ``config.companion_snr``, at least ``config.companion_rmin`` FWHM from the star, are
    companions; each is given the matched-filter amplitude.

    Parameters
    ----------
    resid : numpy.ndarray
        (k, n, n) stamps less the stars' models (e-).
    var : numpy.ndarray
        (k, n, n) variance of the stamps (e-**2); ``inf`` = unusable.
    kern : numpy.ndarray
        (n, n) PSF, sum 1, centred on the central pixel.
    config : PSFConfig
    fwhm : float
        PSF FWHM (pixels).

    Returns
    -------
    light : numpy.ndarray
        (k, n, n) the companions' PSF models (e-), to be subtracted from the stamps.
    near : numpy.ndarray
        (k, n, n) bool, pixels within ``config.companion_mask`` FWHM of a companion.
    """
    n = resid.shape[-1]
    h = n // 2
    yy, xx = np.mgrid[:n, :n] - h
    good = np.isfinite(var)
    good &= good[:, ::-1, ::-1]
    odd = np.where(good, resid - resid[:, ::-1, ::-1], 0.0)
    v = np.where(good, var + var[:, ::-1, ::-1], 0.0)
    flip = kern[::-1, ::-1]
    num, den = _same_convolve(np.stack([odd, v]), np.stack([flip, flip ** 2]))
    snr = num / np.sqrt(np.maximum(den, 1e-30))
    peak = (snr > config.companion_snr) & (np.hypot(xx, yy) >= config.companion_rmin * fwhm)[None]
    peak &= snr >= ndimage.maximum_filter(snr, size=(1, 3, 3))
    near = np.zeros(resid.shape, dtype=bool)
    if not peak.any():
        return np.zeros(resid.shape), near
    amp = np.where(peak, num / float((kern ** 2).sum()), 0.0)
    # only the stamps with a companion (each stamp's transform is its own: the same numbers)
    light = np.zeros(resid.shape)
    has = np.flatnonzero(peak.any(axis=(1, 2)))
    light[has] = _same_convolve(amp[has][None], kern[None])[0]
    rad = config.companion_mask * fwhm
    gi = int(np.ceil(rad))
    gy, gx = np.mgrid[-gi:gi + 1, -gi:gi + 1]
    disk = np.hypot(gx, gy) <= rad
    # the dilation of the few peaks by the (symmetric) disk, as the union of disks
    for k, py, px in zip(*np.nonzero(peak)):
        y0, y1 = max(py - gi, 0), min(py + gi + 1, n)
        x0, x1 = max(px - gi, 0), min(px + gi + 1, n)
        near[k, y0:y1, x0:x1] |= disk[y0 - py + gi:y1 - py + gi, x0 - px + gi:x1 - px + gi]
    return light, near


def _neighbour_light(image: np.ndarray, weight: np.ndarray, mask: np.ndarray | None,
                     neighbour_xy: np.ndarray, coeffs: np.ndarray, degree: int,
                     norm_xy: tuple[float, float, float, float], ix: np.ndarray, iy: np.ndarray,
                     xs: np.ndarray, ys: np.ndarray, pad: int, fwhm0: float,
                     config: PSFConfig) -> np.ndarray:
    """The light of the neighbours of each PSF star in its padded cut-out (e-).

    Every position in ``neighbour_xy`` gets a PSF flux (weighted fit within 2 FWHM, as
    :mod:`desgw.se.measure`) with the model ``coeffs``; those within reach of a cut-out,
    other than the star itself (closer than 1.5 pix), are rendered into it.
    """
    x_zero, x_scale, y_zero, y_scale = norm_xy
    bad = ~(weight > 0) | ~np.isfinite(image)
    if mask is not None:
        bad |= (np.asarray(mask) & config.mask_bits) != 0
    data = np.where(bad, 0.0, image).astype(np.float32)
    w32 = np.asarray(weight, dtype=np.float32)
    xn = np.ascontiguousarray(neighbour_xy[:, 0])
    yn = np.ascontiguousarray(neighbour_xy[:, 1])
    terms = poly_terms((xn - x_zero) / x_scale, (yn - y_zero) / y_scale, degree)
    n = coeffs.shape[-1]
    side = 2 * pad + 1
    contam = np.zeros((len(ix), side, side))
    tree = cKDTree(neighbour_xy)
    reach = pad + n // 2 + 1
    nears = tree.query_ball_point(np.column_stack([ix, iy]), r=reach * 1.415)
    # fluxes only of the positions within reach of a cut-out (each fit is independent; on a
    # crowded CCD that is a few hundred of thousands of detections)
    used = np.unique(np.concatenate([np.asarray(v, dtype=np.int64) for v in nears]
                                    + [np.zeros(0, dtype=np.int64)]))
    fl = np.zeros(len(xn))
    if used.size:
        radius = np.full(used.size, float(np.clip(2.0 * fwhm0, 3.0, n // 2)))
        xu, yu = xn[used], yn[used]
        tu = np.ascontiguousarray(terms[used])
        stamps, fwhm = render_psf_stamps(xu, yu, tu, coeffs, config.lanczos_order)
        fu = psf_fit_stamps(data, w32, bad, xu, yu, stamps, fwhm, tu, coeffs,
                            config.lanczos_order, radius, float(config.gain), 5,
                            np.zeros(used.size), False)[0]
        fl[used] = np.where(np.isfinite(fu) & (fu > 0), fu, 0.0)
    for k, near in enumerate(nears):
        near = np.asarray(near, dtype=np.int64)
        if near.size == 0:
            continue
        near = near[(np.hypot(xn[near] - xs[k], yn[near] - ys[k]) > 1.5) & (fl[near] > 0)]
        if near.size:
            add_psf_sources(contam[k], int(ix[k]) - pad, int(iy[k]) - pad, xn[near], yn[near],
                            fl[near], terms[near], coeffs, config.lanczos_order)
    return contam
