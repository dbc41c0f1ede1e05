"""Coadd of templates resampled onto the search CCD grid.

Each template ``i`` (already resampled with :func:`desgw.diff.resample.resample_to_grid`) is put
on the target photometric scale: its image is multiplied by ``f_i = 10**(0.4 (zp_target -
zp_i))`` and its weight divided by ``f_i**2``. Per pixel, only *good* contributors enter (covered,
weight > 0, no unusable mask bit):

- ``method="weighted"``: inverse-variance weighted mean, ``weight = sum_i w_i / f_i**2``;
- ``method="mean"``: plain mean of the good contributors, variance ``sum var_i / n**2``.

Masks: where at least one template is good, the mask is the OR of the good contributors' bits
(informational bits only, e.g. SUSPECT); where all covering templates are bad it is the OR of
their bits (weight 0); where no template covers the pixel it is EDGE (weight 0). ``n_contrib``
counts the good contributors.

The coadd's PSF (:class:`CoaddPSF`) is the mean of the templates' PSFs with the same
per-pixel combination weights as the image (taken from a coarse map of each template's
effective weight), each template PSF first mapped through the local Jacobian of its resampling
(:func:`desgw.diff.resample_stamp.warp_stamp`); the small extra smoothing of the Lanczos
interpolation itself is neglected (< 0.5 % of the peak for 1" seeing, see the resampling tests).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numba
import numpy as np

from desgw.diff.resample import Resampled
from desgw.diff.resample_mapping import GridMapping
from desgw.diff.resample_stamp import warp_stamp
from desgw.se.maskbits import EDGE, UNUSABLE

__all__ = ["Coadd", "CoaddPSF", "PSFLike", "coadd_templates"]

log = logging.getLogger(__name__)

_METHODS = ("weighted", "mean")


class PSFLike(Protocol):
    """Anything with the :meth:`desgw.se.psf.PSFModel.render` interface."""

    def render(self, x: float, y: float, *, size: int | None = None, dx: float = 0.0,
               dy: float = 0.0) -> np.ndarray: ...


@dataclass(frozen=True)
class CoaddPSF:
    """PSF of a template coadd, with the ``render`` interface of :class:`desgw.se.psf.PSFModel`.

    Attributes
    ----------
    psfs : tuple
        The templates' PSF models (``render(x, y, size=None, dx=0, dy=0)`` in template pixels).
    mappings : tuple[GridMapping, ...]
        Output -> template pixel mappings of the resampling.
    weight_maps : numpy.ndarray
        (n_templates, n_cells_y, n_cells_x) float64 mean combination weight of each template in
        cells of ``cell`` output pixels (0 where it does not contribute).
    cell : int
        Cell side (output pixels).
    shape : tuple[int, int]
        (ny, nx) of the coadd.
    warp_order : int
        Lanczos order used to map template PSF stamps through the local Jacobian.
    """

    psfs: tuple[Any, ...]
    mappings: tuple[GridMapping, ...]
    weight_maps: np.ndarray
    cell: int
    shape: tuple[int, int]
    warp_order: int = 3

    def weights_at(self, x: float, y: float) -> np.ndarray:
        """Normalised combination weights (n_templates,) of the templates at output (x, y)."""
        nyc, nxc = self.weight_maps.shape[1:]
        gx = float(np.clip((x + 0.5) / self.cell - 0.5, 0, nxc - 1))
        gy = float(np.clip((y + 0.5) / self.cell - 0.5, 0, nyc - 1))
        ix, iy = min(int(gx), max(nxc - 2, 0)), min(int(gy), max(nyc - 2, 0))
        jx, jy = min(ix + 1, nxc - 1), min(iy + 1, nyc - 1)
        tx, ty = gx - ix, gy - iy
        m = self.weight_maps
        w = ((1 - ty) * ((1 - tx) * m[:, iy, ix] + tx * m[:, iy, jx])
             + ty * ((1 - tx) * m[:, jy, ix] + tx * m[:, jy, jx]))
        if w.sum() <= 0:  # no template contributes here: plain mean
            w = np.ones(len(self.psfs))
        return w / w.sum()

    def render(self, x: float, y: float, *, size: int | None = None, dx: float = 0.0,
               dy: float = 0.0) -> np.ndarray:
        """The coadd PSF at output position (x, y), centred at (dx, dy) from the central pixel.

        Parameters
        ----------
        x, y : float
            0-based position on the coadd (search CCD) grid (pixels).
        size : int or None
            Odd side of the stamp; default the largest of the templates' natural stamps.
        dx, dy : float
            Sub-pixel offset of the PSF centre from the central pixel (output pixels).

        Returns
        -------
        numpy.ndarray
            (size, size) float32 stamp, sum 1.
        """
        weights = self.weights_at(x, y)
        stamps: list[tuple[Any, np.ndarray] | None] = []
        for a, psf, mapping in zip(weights, self.psfs, self.mappings):
            if a <= 0:
                stamps.append(None)
                continue
            xin, yin, _ = mapping.evaluate(x, y)
            stamps.append((psf.render(float(xin), float(yin)),
                           mapping.jacobian(float(x), float(y))))
        if size is None:
            size = max(s[0].shape[0] for s in stamps if s is not None)
            size += 1 - size % 2
        if size % 2 == 0 or size < 1:
            raise ValueError(f"size must be a positive odd number, got {size}")
        out = np.zeros((size, size))
        for a, item in zip(weights, stamps):
            if item is None:
                continue
            stamp, jac = item
            out += a * warp_stamp(stamp, jac, size, dx=dx, dy=dy, order=self.warp_order)
        return (out / out.sum()).astype(np.float32)


@dataclass(frozen=True)
class Coadd:
    """A coadd of resampled templates on the search grid.

    Attributes
    ----------
    image : numpy.ndarray
        (ny, nx) float32 coadd, e- on the ``zp`` scale (0 where no good template).
    mask : numpy.ndarray
        (ny, nx) int32 mask bits (see the module docstring).
    weight : numpy.ndarray
        (ny, nx) float32 inverse variance on the ``zp`` scale; 0 where unusable.
    psf : CoaddPSF or None
        PSF of the coadd (None if no template PSFs were given).
    n_contrib : numpy.ndarray
        (ny, nx) int16 number of good templates per pixel.
    zp : float
        Zeropoint of the coadd (= ``zp_target``).
    scales : tuple[float, ...]
        Factors ``f_i`` applied to the templates' images.
    noise_correlation_factor : float
        Var(large-area sum) / sum of per-pixel variances, combined from the templates'.
    method : str
        Combination method.
    """

    image: np.ndarray
    mask: np.ndarray
    weight: np.ndarray
    psf: CoaddPSF | None
    n_contrib: np.ndarray
    zp: float
    scales: tuple[float, ...]
    noise_correlation_factor: float
    method: str = "weighted"


@numba.njit(cache=True)
def _accumulate(image, mask, weight, coverage, f, weighted, unusable, num, den, var_num,
                n_contrib, mask_good, mask_all, covered, y0, y1, x0, x1):
    """Add one template (scale ``f``) to the accumulators; returns sum(c**2 var) of its pixels.

    Only rows ``y0:y1`` and columns ``x0:x1`` are visited: the box holding the template's
    coverage (nothing outside it is covered).
    """
    f2 = f * f
    s = 0.0
    for r in range(y0, y1):
        for x in range(x0, x1):
            if not coverage[r, x]:
                continue
            m = mask[r, x]
            covered[r, x] = 1
            mask_all[r, x] |= m
            w = weight[r, x]
            if w > 0 and (m & unusable) == 0:
                wt = w / f2
                c = wt if weighted else 1.0
                num[r, x] += c * image[r, x] * f
                den[r, x] += c
                var = 1.0 / wt
                var_num[r, x] += c * c * var
                s += c * c * var
                n_contrib[r, x] += 1
                mask_good[r, x] |= m
    return s


@numba.njit(cache=True)
def _finalise(num, den, var_num, mask_good, mask_all, covered, edge, unusable):
    """Coadd image, weight and mask from the accumulators."""
    ny, nx = num.shape
    image = np.zeros((ny, nx), dtype=np.float32)
    weight = np.zeros((ny, nx), dtype=np.float32)
    mask = np.empty((ny, nx), dtype=np.int32)
    for r in range(ny):
        for x in range(nx):
            d = den[r, x]
            if d > 0:
                image[r, x] = num[r, x] / d
                v = var_num[r, x] / (d * d)
                weight[r, x] = 1.0 / v if v > 0 else 0.0
                mask[r, x] = mask_good[r, x]
            elif covered[r, x]:
                m = mask_all[r, x]
                mask[r, x] = m if (m & unusable) != 0 else m | edge
            else:
                mask[r, x] = edge
    return image, weight, mask


@numba.njit(cache=True)
def _cell_fraction(mask, weight, coverage, f, weighted, unusable, den, cell, y0, y1, x0, x1):
    """Mean over cells of ``cell`` px of this template's fraction ``c / den`` of the coadd.

    Pixels outside rows ``y0:y1``, columns ``x0:x1`` (the template's coverage box) contribute
    0; the cell areas are counted geometrically.
    """
    ny, nx = den.shape
    nyc = (ny + cell - 1) // cell
    nxc = (nx + cell - 1) // cell
    acc = np.zeros((nyc, nxc))
    cnt = np.zeros((nyc, nxc))
    for j in range(nyc):
        for i in range(nxc):
            cnt[j, i] = (min((j + 1) * cell, ny) - j * cell) * (min((i + 1) * cell, nx) - i * cell)
    f2 = f * f
    for r in range(y0, y1):
        for x in range(x0, x1):
            if coverage[r, x] and weight[r, x] > 0 and (mask[r, x] & unusable) == 0 \
                    and den[r, x] > 0:
                c = weight[r, x] / f2 if weighted else 1.0
                acc[r // cell, x // cell] += c / den[r, x]
    return acc / cnt


@numba.njit(cache=True)
def _single(image, mask, weight, coverage, f, weighted, unusable, edge, cell):
    """One template (scale ``f``): what :func:`_accumulate` + :func:`_finalise` +
    :func:`_cell_fraction` give for a single contributor, in one pass without the float64
    accumulators (a third of the memory traffic of the general path)."""
    ny, nx = image.shape
    out = np.zeros((ny, nx), dtype=np.float32)
    wout = np.zeros((ny, nx), dtype=np.float32)
    mout = np.empty((ny, nx), dtype=np.int32)
    n_contrib = np.zeros((ny, nx), dtype=np.int16)
    nyc = (ny + cell - 1) // cell
    nxc = (nx + cell - 1) // cell
    acc = np.zeros((nyc, nxc))
    cnt = np.zeros((nyc, nxc))
    f2 = f * f
    s = 0.0
    for r in range(ny):
        for x in range(nx):
            cnt[r // cell, x // cell] += 1.0
            m = mask[r, x]
            if not coverage[r, x]:
                mout[r, x] = edge
                continue
            w = weight[r, x]
            if w > 0 and (m & unusable) == 0:
                wt = w / f2
                out[r, x] = image[r, x] * f
                wout[r, x] = wt
                mout[r, x] = m
                n_contrib[r, x] = 1
                s += wt if weighted else 1.0 / wt
                acc[r // cell, x // cell] += 1.0
            else:
                mout[r, x] = m if (m & unusable) != 0 else m | edge
    return out, wout, mout, n_contrib, s, acc / cnt


def _coverage_box(coverage: np.ndarray) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the smallest box holding every covered pixel ((0, 0, 0, 0) if none)."""
    rows = np.flatnonzero(coverage.any(axis=1))
    if rows.size == 0:
        return 0, 0, 0, 0
    cols = np.flatnonzero(coverage[rows[0]:rows[-1] + 1].any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def coadd_templates(resampled: Sequence[Resampled], zps: Sequence[float], zp_target: float,
                    psfs: Sequence[PSFLike] | None = None, *, method: str = "weighted",
                    psf_cell: int = 64) -> Coadd:
    """Combine templates resampled onto the search grid into one coadd on a target zeropoint.

    Parameters
    ----------
    resampled : sequence of Resampled
        Templates on the common (search CCD) grid, all of the same shape.
    zps : sequence of float
        Zeropoint of each template (mag AB for 1 e-, as in the SE convention).
    zp_target : float
        Zeropoint of the output (usually the search image's).
    psfs : sequence of PSF models or None
        Each template's PSF in its own pixel frame (``render`` interface); gives ``Coadd.psf``.
    method : {"weighted", "mean"}
        Inverse-variance weighted mean (default) or plain mean of the good contributors.
    psf_cell : int
        Cell (output pixels) of the weight maps that set the PSF combination weights.

    Returns
    -------
    Coadd
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if len(resampled) == 0:
        raise ValueError("no templates to coadd")
    if len(zps) != len(resampled):
        raise ValueError(f"{len(zps)} zeropoints for {len(resampled)} templates")
    if psfs is not None and len(psfs) != len(resampled):
        raise ValueError(f"{len(psfs)} PSFs for {len(resampled)} templates")
    shape = resampled[0].shape
    for r in resampled:
        if r.shape != shape:
            raise ValueError(f"templates have different shapes: {r.shape} vs {shape}")
    scales = tuple(float(10.0 ** (0.4 * (zp_target - zp))) for zp in zps)

    weighted = method == "weighted"
    if len(resampled) == 1:
        return _coadd_one(resampled[0], scales[0], zp_target, psfs, weighted, method, psf_cell)
    num = np.zeros(shape)
    den = np.zeros(shape)
    var_num = np.zeros(shape)
    n_contrib = np.zeros(shape, dtype=np.int16)
    mask_good = np.zeros(shape, dtype=np.int32)
    mask_all = np.zeros(shape, dtype=np.int32)
    covered = np.zeros(shape, dtype=np.uint8)
    f_num = f_den = 0.0
    boxes = [_coverage_box(r.coverage) for r in resampled]
    for r, f, box in zip(resampled, scales, boxes):
        s = _accumulate(r.image, r.mask, r.weight, r.coverage, f, weighted, int(UNUSABLE), num,
                        den, var_num, n_contrib, mask_good, mask_all, covered, *box)
        # each template's large-area variance is F_i times the sum of its per-pixel variances
        f_num += r.noise_correlation_factor * s
        f_den += s
    ncf = f_num / f_den if f_den > 0 else 1.0
    image, weight, mask = _finalise(num, den, var_num, mask_good, mask_all, covered, int(EDGE),
                                    int(UNUSABLE))
    ok = den > 0

    psf = None
    if psfs is not None:
        maps = np.stack([_cell_fraction(r.mask, r.weight, r.coverage, f, weighted,
                                        int(UNUSABLE), den, int(psf_cell), *box)
                         for r, f, box in zip(resampled, scales, boxes)])
        psf = CoaddPSF(psfs=tuple(psfs), mappings=tuple(r.mapping for r in resampled),
                       weight_maps=maps, cell=int(psf_cell), shape=shape)
    log.debug("coadd of %d templates: %.1f%% usable, noise factor %.3f", len(resampled),
              100 * ok.mean(), ncf)
    return Coadd(image=image, mask=mask, weight=weight, psf=psf,
                 n_contrib=n_contrib, zp=float(zp_target), scales=scales,
                 noise_correlation_factor=float(ncf), method=method)


def _coadd_one(r: Resampled, f: float, zp_target: float, psfs: Sequence[PSFLike] | None,
               weighted: bool, method: str, psf_cell: int) -> Coadd:
    """:func:`coadd_templates` of a single template (same outputs, one pass)."""
    image, weight, mask, n_contrib, s, frac = _single(
        r.image, r.mask, r.weight, r.coverage, f, weighted, int(UNUSABLE), int(EDGE),
        int(psf_cell))
    ncf = r.noise_correlation_factor if s > 0 else 1.0
    psf = None
    if psfs is not None:
        psf = CoaddPSF(psfs=tuple(psfs), mappings=(r.mapping,), weight_maps=frac[None],
                       cell=int(psf_cell), shape=r.shape)
    return Coadd(image=image, mask=mask, weight=weight, psf=psf, n_contrib=n_contrib,
                 zp=float(zp_target), scales=(float(f),), noise_correlation_factor=float(ncf),
                 method=method)
