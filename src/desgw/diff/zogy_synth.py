"""Synthetic image pairs with known truth for testing and benchmarking the subtraction.

:class:`MoffatPSFField` is a pixel-integrated Moffat PSF whose FWHM and ellipticity vary
linearly over the CCD and which renders with the same interface as
:class:`desgw.se.psf.PSFModel`; :func:`make_image_pair` draws a search and a template image of
the same stars (plus transients in the search only) with sky, Poisson and read noise, and returns
them with their truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from desgw.instrument.camera import CCD_SHAPE

__all__ = ["ImagePair", "MoffatPSFField", "RenderablePSF", "add_sources", "make_image_pair",
           "star_residual_chi2"]


class RenderablePSF(Protocol):
    """What the synthetic scenes need of a PSF (:class:`MoffatPSFField`, a galsim-based one in
    the tests, :class:`desgw.se.psf.PSFModel`): a unit-sum stamp centred ``(dx, dy)`` pixels
    from the central pixel of a ``size`` (default: its own) stamp at ``(x, y)``."""

    def render(self, x: float, y: float, *, size: int | None = None, dx: float = 0.0,
               dy: float = 0.0) -> np.ndarray: ...



@dataclass(frozen=True)
class MoffatPSFField:
    """Elliptical Moffat PSF, FWHM and ellipticity linear in the 0-based CCD position.

    ``fwhm(x, y) = fwhm + dfwhm_dx * (x - x0) + dfwhm_dy * (y - y0)`` (pixels) with
    ``(x0, y0)`` the centre of ``image_shape``; ``e1``, ``e2`` likewise (``de1_dx``, ...).
    Stamps are integrated over the pixels by ``oversample`` x ``oversample`` sub-sampling and
    normalised to sum 1 over the stamp.
    """

    fwhm: float
    beta: float = 3.0
    dfwhm_dx: float = 0.0
    dfwhm_dy: float = 0.0
    e1: float = 0.0
    e2: float = 0.0
    de1_dx: float = 0.0
    de2_dy: float = 0.0
    image_shape: tuple[int, int] = CCD_SHAPE
    stamp: int = 41
    oversample: int = 4

    def params_at(self, x: float, y: float) -> tuple[float, float, float]:
        """(fwhm, e1, e2) at 0-based (x, y)."""
        u = x - 0.5 * (self.image_shape[1] - 1)
        v = y - 0.5 * (self.image_shape[0] - 1)
        return (self.fwhm + self.dfwhm_dx * u + self.dfwhm_dy * v,
                self.e1 + self.de1_dx * u, self.e2 + self.de2_dy * v)

    def fwhm_at(self, x: float, y: float) -> float:
        """FWHM (pixels) at (x, y)."""
        return float(self.params_at(x, y)[0])

    def render(self, x: float, y: float, *, size: int | None = None, dx: float = 0.0,
               dy: float = 0.0) -> np.ndarray:
        """(size, size) float32 stamp, sum 1, centred ``(dx, dy)`` from the central pixel."""
        n = int(size or self.stamp)
        fwhm, e1, e2 = self.params_at(x, y)
        alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / self.beta) - 1.0))
        o = self.oversample
        sub = (np.arange(o) + 0.5) / o - 0.5
        c = np.arange(n) - n // 2
        xs = (c[None, :, None, None] + sub[None, None, None, :]) - dx
        ys = (c[:, None, None, None] + sub[None, None, :, None]) - dy
        # shear with (e1, e2): quadratic form of an ellipse of unit determinant
        q11, q22, q12 = 1.0 - e1, 1.0 + e1, -e2
        norm = 1.0 / np.sqrt(max(1.0 - e1 * e1 - e2 * e2, 1e-6))
        r2 = (q11 * xs * xs + q22 * ys * ys + 2 * q12 * xs * ys) * norm
        img = ((1.0 + r2 / alpha**2) ** (-self.beta)).mean(axis=(2, 3))
        return (img / img.sum()).astype(np.float32)


def add_sources(image: np.ndarray, psf: RenderablePSF, x: np.ndarray, y: np.ndarray,
                flux: np.ndarray) -> None:
    """Add point sources (flux in image units) rendered by ``psf`` at 0-based (x, y) in place."""
    ny, nx = image.shape
    for xi, yi, fi in zip(np.atleast_1d(x), np.atleast_1d(y), np.atleast_1d(flux)):
        xr, yr = int(round(xi)), int(round(yi))
        stamp = psf.render(xi, yi, dx=xi - xr, dy=yi - yr)
        h = stamp.shape[0] // 2
        y0, y1 = max(yr - h, 0), min(yr + h + 1, ny)
        x0, x1 = max(xr - h, 0), min(xr + h + 1, nx)
        if y1 <= y0 or x1 <= x0:
            continue
        image[y0:y1, x0:x1] += fi * stamp[y0 - (yr - h):y1 - (yr - h),
                                          x0 - (xr - h):x1 - (xr - h)]


@dataclass(frozen=True)
class ImagePair:
    """A synthetic search/template pair on one grid, background subtracted, with truth.

    Images are float32 in their own electrons; variances are the background variance (sky +
    read noise), as SE weights give. ``template * scale`` is on the search scale.
    """

    search: np.ndarray
    search_var: np.ndarray
    search_psf: RenderablePSF
    template: np.ndarray
    template_var: np.ndarray
    template_psf: RenderablePSF
    zp_search: float
    zp_template: float
    star_x: np.ndarray
    star_y: np.ndarray
    star_flux: np.ndarray  # search e-
    transient_x: np.ndarray
    transient_y: np.ndarray
    transient_flux: np.ndarray  # search e-
    meta: dict = field(default_factory=dict)

    @property
    def scale(self) -> float:
        """Multiplier putting the template on the search scale."""
        return float(10 ** (0.4 * (self.zp_search - self.zp_template)))


def make_image_pair(shape: tuple[int, int], search_psf: RenderablePSF,
                    template_psf: RenderablePSF, *, seed: int = 0, sky_search: float = 400.0,
                    sky_template: float = 150.0, read_noise: float = 6.0,
                    template_flux_ratio: float = 0.7, n_stars: int = 200,
                    star_flux_range: tuple[float, float] = (2e3, 2e5), n_transients: int = 0,
                    transient_flux: float | tuple[float, float] = 3000.0, margin: int = 30,
                    template_offset: tuple[float, float] = (0.0, 0.0),
                    min_distance: float = 25.0) -> ImagePair:
    """Draw a background-subtracted search/template pair with Poisson and read noise.

    Parameters
    ----------
    shape : tuple[int, int]
        (ny, nx).
    search_psf, template_psf : RenderablePSF
        PSFs of the two images (on the common grid).
    seed : int
        Random seed.
    sky_search, sky_template : float
        Sky per pixel (e-) of each image (subtracted; its Poisson noise stays).
    read_noise : float
        Read noise (e-) of each image.
    template_flux_ratio : float
        Template electrons per search electron (``zp_template = zp_search + 2.5 log10``
        of it).
    n_stars : int
        Stars present in both images, fluxes log-uniform in ``star_flux_range`` (search e-).
    n_transients : int
        Point sources in the search image only, placed at least ``min_distance`` pixels from
        any star and each other; flux fixed or log-uniform in a (lo, hi) range (search e-).
    template_offset : tuple[float, float]
        (dx, dy) shift of the template's sources (pixels) - a registration error.
    """
    rng = np.random.default_rng(seed)
    ny, nx = shape
    n_all = n_stars + n_transients
    xs: list[float] = []
    ys: list[float] = []
    tries = 0
    while len(xs) < n_all and tries < 100 * n_all + 1000:
        tries += 1
        px, py = rng.uniform(margin, nx - margin), rng.uniform(margin, ny - margin)
        if xs and np.min(np.hypot(np.asarray(xs) - px, np.asarray(ys) - py)) < min_distance:
            continue
        xs.append(px)
        ys.append(py)
    if len(xs) < n_all:
        raise ValueError("could not place the sources: too many for the area and spacing")
    x, y = np.asarray(xs), np.asarray(ys)
    lo, hi = star_flux_range
    sflux = np.exp(rng.uniform(np.log(lo), np.log(hi), n_stars))
    if isinstance(transient_flux, tuple):
        tflux = np.exp(rng.uniform(np.log(transient_flux[0]), np.log(transient_flux[1]),
                                   n_transients))
    else:
        tflux = np.full(n_transients, float(transient_flux))
    sx, sy, tx, ty = x[:n_stars], y[:n_stars], x[n_stars:], y[n_stars:]

    search = np.zeros(shape, np.float32)
    add_sources(search, search_psf, sx, sy, sflux)
    add_sources(search, search_psf, tx, ty, tflux)
    template = np.zeros(shape, np.float32)
    add_sources(template, template_psf, sx + template_offset[0], sy + template_offset[1],
                sflux * template_flux_ratio)

    def observe(img: np.ndarray, sky: float) -> tuple[np.ndarray, np.ndarray]:
        lam = np.clip(img, 0, None) + sky
        obs = rng.poisson(lam).astype(np.float32) - np.float32(sky)
        obs += rng.normal(0.0, read_noise, shape).astype(np.float32)
        var = np.full(shape, sky + read_noise**2, np.float32)
        return obs, var

    s_img, s_var = observe(search, sky_search)
    t_img, t_var = observe(template, sky_template)
    zp_s = 30.0
    zp_t = zp_s + 2.5 * np.log10(template_flux_ratio)
    return ImagePair(search=s_img, search_var=s_var, search_psf=search_psf, template=t_img,
                     template_var=t_var, template_psf=template_psf, zp_search=zp_s,
                     zp_template=float(zp_t), star_x=sx, star_y=sy, star_flux=sflux,
                     transient_x=tx, transient_y=ty, transient_flux=tflux,
                     meta={"seed": seed, "template_offset": template_offset})


def star_residual_chi2(diff: np.ndarray, diff_var: np.ndarray, pair: ImagePair, fwhm: float,
                       *, min_flux: float = 2e4) -> np.ndarray:
    """Mean chi2 per pixel of a difference image within 2 FWHM of each bright star of ``pair``.

    Parameters
    ----------
    diff, diff_var : numpy.ndarray
        (ny, nx) difference image and its propagated variance (search e-, e-^2).
    pair : ImagePair
        The synthetic pair the difference was made from (star positions and fluxes).
    fwhm : float
        PSF FWHM (pixels): the radius of the disc is 2 FWHM.
    min_flux : float
        Only stars brighter than this (search e-).

    Returns
    -------
    numpy.ndarray
        One value per star (~1 when the star subtracts to the noise).
    """
    r = 2 * fwhm
    h = int(np.ceil(r))
    yy, xx = np.mgrid[-h:h + 1, -h:h + 1]
    chi2 = []
    for x, y, f in zip(pair.star_x, pair.star_y, pair.star_flux):
        if f < min_flux:
            continue
        xr, yr = int(round(x)), int(round(y))
        inside = (xx - (x - xr)) ** 2 + (yy - (y - yr)) ** 2 <= r * r
        cut = (slice(yr - h, yr + h + 1), slice(xr - h, xr + h + 1))
        chi2.append((diff[cut] ** 2 / diff_var[cut])[inside].mean())
    return np.asarray(chi2, dtype=np.float64)
