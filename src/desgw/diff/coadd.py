"""Coadd of templates resampled onto the search CCD grid.

Each template ``i`` (already resampled with :func:`desgw.diff.resample.resample_to_grid`) is put
on the target photometric scale: its image is multiplied by ``f_i = 10**(0.4 (zp_target -
zp_i))`` and its weight divided by ``f_i**2``. Per pixel, only *good* contributors enter (covered,
weight > 0, no unusable mask bit):

- ``method="weighted"``: inverse-variance weighted mean, ``weight = sum_i w_i / f_i**2``;
- ``method="mean"``: plain mean of the good contributors, variance ``sum var_i / n**2``.

Source noise: the templates are in electrons, so a pixel of value ``C`` in the coadd has the
sources' Poisson variance ``C / gain`` with the per-pixel ``gain`` of :attr:`Coadd.gain`
(each template's Poisson noise scaled and combined with its weight; not 1 / mean(f), which
counts an n-exposure stack's source noise n times).

Outliers: where at least three templates are good, a template pixel that no other template
supports (a cosmic ray or satellite trail the masks missed, an asteroid) is left out
(:class:`OutlierRejection`; the sfft-style median stack does the same by taking the median).

Masks: where at least one template is good, the mask is the OR of the good contributors' bits
(informational bits only, e.g. SUSPECT); where all covering templates are bad it is the OR of
their bits (weight 0); where no template covers the pixel it is EDGE (weight 0). ``n_contrib``
counts the good contributors.

Saturation (``veto_bits``, default :data:`SATURATION_BITS`): a pixel that any covering template
has saturated is unusable in the coadd (weight 0, that template's bits), even where other
templates are good. Filling it from the others alone would change the coadd's PSF inside the
star's profile: the core comes from the unsaturated templates, the wings from all of them,
the :class:`CoaddPSF` is the weighted mean of all, and no PSF describes the result.
Saturation happens only on bright sources, so the error is always large: on the audit's
crowded night (Moffat beta 2.5, templates of 1.1" and 1.57", search 1.37"), 44 of the 49
stars (r = 13.5-15.5) saturated in the sharper template only left a positive difference
residual of S/N 100-800 (9-38 % of the star's flux) and wings that swallowed fainter sources
5-35 px away; on the Moffat 3.5 dense night 56 of 60 stars saturated only in its 0.71"
template did. Masked, the core is treated like a star saturated in the search: the
difference masks it and grows the mask as far as the flux it hides needs
(:mod:`desgw.diff.subtract`); 3 of the 49 and 0 of the 60 leave such a residual, and the
CCDs' |S/N| > 100 residuals fall from 100 to 53 and from 163 to 87 (the rest: stars of high
proper motion, transients, variables, PSF-model errors). Other
unusable bits (cosmic rays, bad columns, streaks) fall mostly on sky, where any subset of the
templates gives the same value: those pixels are still filled from the good templates.

The coadd's PSF (:class:`CoaddPSF`) is the mean of the templates' PSFs with the same
per-pixel combination weights as the image (taken from a coarse map of each template's
effective weight), each template PSF first mapped through the local Jacobian of its resampling
(:func:`desgw.diff.resample_stamp.warp_stamp`); the small extra smoothing of the Lanczos
interpolation itself is neglected (< 0.5 % of the peak for 1" seeing, see the resampling tests).

Speed: the one-pass paths (``_single``, ``_fused``) take ~0.11 CPU-s for CCD 28's 4 cropped
templates (7.3 Mpix covered), bound by the per-pixel float64 arithmetic (about seven
divisions per good pixel), not by reading the resampled planes: combining the templates
band by band as they are resampled, without the planes, saved 3-8 ms (measured and rejected,
see :mod:`desgw.diff.resample`).
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
from desgw.se.maskbits import EDGE, SAT, UNUSABLE

__all__ = ["Coadd", "CoaddPSF", "OutlierRejection", "PSFLike", "SATURATION_BITS",
           "coadd_templates"]

#: Mask bits of a template that make a coadd pixel unusable even where other templates are
#: good (module docstring, *Saturation*): saturated cores. Not the bleed trails (TRAIL,
#: EDGEBLEED): along a column away from the core they hold the star's spilled charge over
#: mostly blank sky, which the other templates fill correctly.
SATURATION_BITS = SAT

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
    gain : numpy.ndarray or None
        (ny, nx) float32 electrons per coadd unit of the sources' Poisson noise: a source
        pixel of value ``C`` has Poisson variance ``C / gain``. With combination weights
        ``c_i`` and scales ``f_i`` (each template in e-), ``gain = (sum c_i)**2 / sum(c_i**2
        f_i)``: ``1 / f`` for one template, ``n / f`` for ``n`` equal ones (0 where no
        template is good).
    n_rejected : numpy.ndarray or None
        (ny, nx) int16 template pixels left out as outliers (:class:`OutlierRejection`);
        None when no rejection was tried (fewer than ``min_templates`` templates).
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
    gain: np.ndarray | None = None
    n_rejected: np.ndarray | None = None


@numba.njit(cache=True)
def _accumulate(image, mask, weight, coverage, f, weighted, unusable, num, den, var_num,
                pois_num, n_contrib, mask_good, mask_all, covered, y0, y1, x0, x1):
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
                pois_num[r, x] += c * c * f
                s += c * c * var
                n_contrib[r, x] += 1
                mask_good[r, x] |= m
    return s


@numba.njit(cache=True)
def _outliers(vals, var, fs, good, kappa, alpha, min_n):
    """Flag contributors that no other template supports: (n_templates, m) bool.

    ``vals``, ``var``: (n, m) values and background variances on the target scale; ``fs``:
    (n,) scales (the sources' Poisson variance of a value ``v`` is ``f v``); ``good``: (n, m).
    Where at least ``min_n`` templates are good, a contributor is an outlier when it exceeds
    the largest of the others (or falls below the smallest) by more than ``kappa`` times the
    combined noise plus ``alpha`` times that value's magnitude (the margin for templates of
    different seeing, whose star peaks differ); at most ``n - ceil(n / 2)`` per pixel, the
    farthest first.
    """
    n, m = vals.shape
    out = np.zeros((n, m), dtype=np.bool_)
    excess = np.zeros(n)
    for j in range(m):
        ng = 0
        for i in range(n):
            if good[i, j]:
                ng += 1
        if ng < min_n:
            continue
        nbad = 0
        for i in range(n):
            excess[i] = 0.0
            if not good[i, j]:
                continue
            hi = -np.inf
            lo = np.inf
            khi = -1
            klo = -1
            for k in range(n):
                if k == i or not good[k, j]:
                    continue
                if vals[k, j] > hi:
                    hi = vals[k, j]
                    khi = k
                if vals[k, j] < lo:
                    lo = vals[k, j]
                    klo = k
            v = vals[i, j]
            vi = var[i, j] + fs[i] * abs(v)
            if v > hi:
                sig = np.sqrt(vi + var[khi, j] + fs[khi] * abs(hi))
                e = (v - hi) - (kappa * sig + alpha * abs(hi))
            else:
                sig = np.sqrt(vi + var[klo, j] + fs[klo] * abs(lo))
                e = (lo - v) - (kappa * sig + alpha * abs(lo))
            if e > 0:
                excess[i] = e / sig
                nbad += 1
        limit = ng - (ng + 1) // 2
        while nbad > 0 and limit > 0:
            best = -1
            for i in range(n):
                if excess[i] > 0 and (best < 0 or excess[i] > excess[best]):
                    best = i
            out[best, j] = True
            excess[best] = 0.0
            nbad -= 1
            limit -= 1
    return out


@numba.njit(cache=True)
def _grow_outliers(vals, var, fs, good, out, cand, kappa):
    """Also flag the candidates ``cand`` (n, m) (the neighbours of flagged pixels) that lie
    more than ``kappa`` sigma from the median of the other good templates, keeping at least
    ``ceil(n / 2)`` good templates per pixel; returns the number added."""
    n, m = vals.shape
    buf = np.empty(n)
    added = 0
    for j in range(m):
        ng = 0
        nout = 0
        for i in range(n):
            if good[i, j]:
                ng += 1
                if out[i, j]:
                    nout += 1
        for i in range(n):
            if not cand[i, j] or out[i, j] or not good[i, j]:
                continue
            if nout >= ng - (ng + 1) // 2:
                break
            k2 = 0
            vsum = 0.0
            for k in range(n):
                if k != i and good[k, j] and not out[k, j]:
                    buf[k2] = vals[k, j]
                    vsum += var[k, j] + fs[k] * abs(vals[k, j])
                    k2 += 1
            if k2 < 2:
                continue
            srt = np.sort(buf[:k2])
            med = srt[k2 // 2] if k2 % 2 == 1 else 0.5 * (srt[k2 // 2 - 1] + srt[k2 // 2])
            vmed = 1.5708 * vsum / (k2 * k2)
            sig = np.sqrt(var[i, j] + fs[i] * abs(vals[i, j]) + vmed)
            if abs(vals[i, j] - med) > kappa * sig:
                out[i, j] = True
                nout += 1
                added += 1
    return added


@numba.njit(cache=True)
def _cells(nx, cell):  # pragma: no cover - numba
    """``x // cell`` of every column (an integer division per pixel costs as much as the
    rest of a coadd pixel's arithmetic)."""
    out = np.empty(nx, np.int64)
    for x in range(nx):
        out[x] = x // cell
    return out


@numba.njit(cache=True)
def _finalise(num, den, var_num, pois_num, mask_good, mask_all, covered, edge, unusable, veto,
              n_contrib):
    """Coadd image, weight, source gain and mask from the accumulators; pixels with a ``veto``
    bit in any covering template get no data (their ``den`` and ``n_contrib`` set to 0)."""
    ny, nx = num.shape
    image = np.zeros((ny, nx), dtype=np.float32)
    weight = np.zeros((ny, nx), dtype=np.float32)
    gain = np.zeros((ny, nx), dtype=np.float32)
    mask = np.empty((ny, nx), dtype=np.int32)
    for r in range(ny):
        for x in range(nx):
            d = den[r, x]
            if d > 0 and (mask_all[r, x] & veto) != 0:
                den[r, x] = 0.0
                n_contrib[r, x] = 0
                d = 0.0
            if d > 0:
                image[r, x] = num[r, x] / d
                v = var_num[r, x] / (d * d)
                weight[r, x] = 1.0 / v if v > 0 else 0.0
                p = pois_num[r, x]
                gain[r, x] = d * d / p if p > 0 else 0.0
                mask[r, x] = mask_good[r, x]
            elif covered[r, x]:
                m = mask_all[r, x]
                mask[r, x] = m if (m & unusable) != 0 else m | edge
            else:
                mask[r, x] = edge
    return image, weight, gain, mask


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
    xcell = _cells(nx, cell)
    for r in range(y0, y1):
        rc = r // cell
        for x in range(x0, x1):
            if coverage[r, x] and weight[r, x] > 0 and (mask[r, x] & unusable) == 0 \
                    and den[r, x] > 0:
                c = weight[r, x] / f2 if weighted else 1.0
                acc[rc, xcell[x]] += c / den[r, x]
    return acc / cnt


@numba.njit(cache=True)
def _single(image, mask, weight, coverage, f, weighted, unusable, edge, cell):
    """One template (scale ``f``): what :func:`_accumulate` + :func:`_finalise` +
    :func:`_cell_fraction` give for a single contributor, in one pass without the float64
    accumulators (a third of the memory traffic of the general path)."""
    ny, nx = image.shape
    out = np.zeros((ny, nx), dtype=np.float32)
    wout = np.zeros((ny, nx), dtype=np.float32)
    gout = np.zeros((ny, nx), dtype=np.float32)
    mout = np.empty((ny, nx), dtype=np.int32)
    n_contrib = np.zeros((ny, nx), dtype=np.int16)
    nyc = (ny + cell - 1) // cell
    nxc = (nx + cell - 1) // cell
    acc = np.zeros((nyc, nxc))
    cnt = np.zeros((nyc, nxc))
    xcell = _cells(nx, cell)
    f2 = f * f
    s = 0.0
    for r in range(ny):
        rc = r // cell
        for x in range(nx):
            cnt[rc, xcell[x]] += 1.0
            m = mask[r, x]
            if not coverage[r, x]:
                mout[r, x] = edge
                continue
            w = weight[r, x]
            if w > 0 and (m & unusable) == 0:
                wt = w / f2
                out[r, x] = image[r, x] * f
                wout[r, x] = wt
                gout[r, x] = 1.0 / f
                mout[r, x] = m
                n_contrib[r, x] = 1
                s += wt if weighted else 1.0 / wt
                acc[rc, xcell[x]] += 1.0
            else:
                mout[r, x] = m if (m & unusable) != 0 else m | edge
    return out, wout, gout, mout, n_contrib, s, acc / cnt


@numba.njit(cache=True)
def _fused(images, masks, weights, coverages, fs, boxes, weighted, unusable, veto, edge, cell):
    """Several templates in one pass over the output pixels, no rejection: per pixel the
    contributions of the templates whose coverage box holds it are summed in registers (in
    template order, as :func:`_accumulate` adds them) and :func:`_finalise`'s outputs and
    :func:`_cell_fraction`'s maps written at once, without the full-size float64
    accumulators (a pixel with a ``veto`` bit in any covering template gets no data, as in
    :func:`_finalise`). Returns image, weight, gain, mask, n_contrib, the per-template sums of
    ``c**2 var`` and the (n, cells_y, cells_x) PSF weight maps."""
    n = len(images)
    ny, nx = images[0].shape
    image = np.zeros((ny, nx), dtype=np.float32)
    wout = np.zeros((ny, nx), dtype=np.float32)
    gain = np.zeros((ny, nx), dtype=np.float32)
    mout = np.empty((ny, nx), dtype=np.int32)
    n_contrib = np.zeros((ny, nx), dtype=np.int16)
    nyc = (ny + cell - 1) // cell
    nxc = (nx + cell - 1) // cell
    acc = np.zeros((n, nyc, nxc))
    cnt = np.zeros((nyc, nxc))
    for j in range(nyc):
        for i in range(nxc):
            cnt[j, i] = (min((j + 1) * cell, ny) - j * cell) * (min((i + 1) * cell, nx) - i * cell)
    s = np.zeros(n)
    cs = np.zeros(n)
    xcell = _cells(nx, cell)
    for r in range(ny):
        rc = r // cell
        for x in range(nx):
            num = 0.0
            den = 0.0
            var_num = 0.0
            pois = 0.0
            m_good = 0
            m_all = 0
            covered = False
            k = 0
            for t in range(n):
                cs[t] = 0.0
                if not (boxes[t, 0] <= r < boxes[t, 1] and boxes[t, 2] <= x < boxes[t, 3]):
                    continue
                if not coverages[t][r, x]:
                    continue
                m = masks[t][r, x]
                covered = True
                m_all |= m
                w = weights[t][r, x]
                if w > 0 and (m & unusable) == 0:
                    f = fs[t]
                    wt = w / (f * f)
                    c = wt if weighted else 1.0
                    num += c * images[t][r, x] * f
                    den += c
                    var = 1.0 / wt
                    var_num += c * c * var
                    pois += c * c * f
                    s[t] += c * c * var
                    k += 1
                    m_good |= m
                    cs[t] = c
            if den > 0 and (m_all & veto) != 0:
                den = 0.0
                k = 0
            n_contrib[r, x] = k
            if den > 0:
                image[r, x] = num / den
                v = var_num / (den * den)
                wout[r, x] = 1.0 / v if v > 0 else 0.0
                gain[r, x] = den * den / pois if pois > 0 else 0.0
                mout[r, x] = m_good
                for t in range(n):
                    if cs[t] != 0.0:
                        acc[t, rc, xcell[x]] += cs[t] / den
            elif covered:
                mout[r, x] = m_all if (m_all & unusable) != 0 else m_all | edge
            else:
                mout[r, x] = edge
    for t in range(n):
        acc[t] /= cnt
    return image, wout, gain, mout, n_contrib, s, acc


def _may_reach(boxes: Sequence[tuple[int, int, int, int]], k: int) -> bool:
    """Whether ``k`` of the boxes (y0, y1, x0, x1) can share a pixel."""
    from itertools import combinations

    for combo in combinations(boxes, k):
        if (max(b[0] for b in combo) < min(b[1] for b in combo)
                and max(b[2] for b in combo) < min(b[3] for b in combo)):
            return True
    return False


def _coverage_box(coverage: np.ndarray) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the smallest box holding every covered pixel ((0, 0, 0, 0) if none)."""
    rows = np.flatnonzero(coverage.any(axis=1))
    if rows.size == 0:
        return 0, 0, 0, 0
    cols = np.flatnonzero(coverage[rows[0]:rows[-1] + 1].any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _reject(resampled: Sequence[Resampled], scales: Sequence[float], weighted: bool,
            n_contrib: np.ndarray, num: np.ndarray, den: np.ndarray, var_num: np.ndarray,
            pois_num: np.ndarray, reject: OutlierRejection) -> np.ndarray:
    """Remove outlying contributions from the accumulators (in place); the (ny, nx) int16
    count of contributions removed per pixel."""
    shape = n_contrib.shape
    rejected = np.zeros(shape, dtype=np.int16)
    idx = np.flatnonzero(n_contrib.ravel() >= reject.min_templates)
    if idx.size == 0:
        return rejected
    n = len(resampled)
    vals = np.empty((n, idx.size))
    var = np.empty((n, idx.size))
    good = np.empty((n, idx.size), dtype=np.bool_)
    for i, (r, f) in enumerate(zip(resampled, scales)):
        w = r.weight.ravel()[idx]
        g = (r.coverage.ravel()[idx] & (w > 0) & ((r.mask.ravel()[idx] & int(UNUSABLE)) == 0)
             & np.isfinite(r.image.ravel()[idx]))
        good[i] = g
        vals[i] = np.where(g, r.image.ravel()[idx] * f, 0.0)
        with np.errstate(divide="ignore"):
            var[i] = np.where(g, f * f / np.where(g, w, 1.0), 0.0)
    fs = np.asarray(scales, dtype=np.float64)
    out = _outliers(vals, var, fs, good, float(reject.sigma), float(reject.margin),
                    int(reject.min_templates))
    # the faint edges of what was found (wings of a trail or an asteroid, a cosmic ray's
    # halo): neighbours within ``grow_px`` that stand out from the others' median
    if reject.grow_px > 0 and out.any():
        from scipy import ndimage

        pos = np.full(n_contrib.size, -1, dtype=np.int64)
        pos[idx] = np.arange(idx.size)
        size = 2 * int(reject.grow_px) + 1
        for _ in range(2):
            cand = np.zeros_like(out)
            for i in range(n):
                if not out[i].any():
                    continue
                full = np.zeros(n_contrib.size, dtype=bool)
                full[idx[out[i]]] = True
                grown = ndimage.maximum_filter(full.reshape(shape), size=size).reshape(-1)
                sel = pos[np.flatnonzero(grown)]
                cand[i, sel[sel >= 0]] = True
            if _grow_outliers(vals, var, fs, good, out, cand, float(reject.grow_sigma)) == 0:
                break
    flat = (num.reshape(-1), den.reshape(-1), var_num.reshape(-1), pois_num.reshape(-1))
    nc, rj = n_contrib.reshape(-1), rejected.reshape(-1)
    for i in range(n):
        hit = np.flatnonzero(out[i])
        if hit.size == 0:
            continue
        pix = idx[hit]
        c = 1.0 / var[i, hit] if weighted else np.ones(hit.size)
        flat[0][pix] -= c * vals[i, hit]
        flat[1][pix] -= c
        flat[2][pix] -= c * c * var[i, hit]
        flat[3][pix] -= c * c * fs[i]
        nc[pix] -= 1
        rj[pix] += 1
    if log.isEnabledFor(logging.DEBUG):  # a full-plane sum: only when shown
        log.debug("coadd: %d template pixels rejected as outliers", int(rejected.sum()))
    return rejected


@dataclass(frozen=True)
class OutlierRejection:
    """Outlier rejection of a coadd (cosmic rays, satellite trails, asteroids of one template).

    Where at least ``min_templates`` templates are good, a template's pixel is left out when it
    lies above the largest (below the smallest) of the others by more than ``sigma`` times
    their combined noise (background and the sources' Poisson noise) plus ``margin`` times
    that value: a source in one template only. ``margin`` keeps the cores of stars in
    templates of different seeing (a star's peak in a 0.9" template is ~1.5 times that in a
    1.1" one). The neighbours within ``grow_px`` (twice) of a pixel left out are left out too
    when they lie more than ``grow_sigma`` from the median of the other templates (the wings of
    a trail or an asteroid). At most ``n - ceil(n / 2)`` of ``n`` good templates are left out
    of a pixel.
    """

    enabled: bool = True
    min_templates: int = 3
    sigma: float = 5.0
    margin: float = 1.0
    grow_px: int = 2
    grow_sigma: float = 3.0

    def __post_init__(self) -> None:
        if self.min_templates < 3:
            raise ValueError("OutlierRejection.min_templates must be >= 3")
        if not self.sigma > 0 or self.margin < 0:
            raise ValueError("OutlierRejection needs sigma > 0 and margin >= 0")


def coadd_templates(resampled: Sequence[Resampled], zps: Sequence[float], zp_target: float,
                    psfs: Sequence[PSFLike] | None = None, *, method: str = "weighted",
                    psf_cell: int = 64, reject: OutlierRejection | None = None,
                    veto_bits: int = SATURATION_BITS) -> Coadd:
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
    reject : OutlierRejection or None
        Outlier rejection where >= 3 templates are good (None: ``OutlierRejection()``; pass
        ``OutlierRejection(enabled=False)`` for none). ``Coadd.n_rejected`` counts them.
    veto_bits : int
        Mask bits that make a pixel unusable in the coadd when any covering template has them
        (module docstring, *Saturation*); 0 fills every unusable template pixel from the good
        templates.

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
    reject = OutlierRejection() if reject is None else reject
    boxes = [_coverage_box(r.coverage) for r in resampled]
    try_reject = reject.enabled and len(resampled) >= reject.min_templates
    if not (try_reject and _may_reach(boxes, reject.min_templates)):
        # no pixel can have enough templates for the rejection: one fused pass
        return _coadd_fused(resampled, scales, boxes, zp_target, psfs, weighted, method,
                            psf_cell, try_reject, int(veto_bits))
    num = np.zeros(shape)
    den = np.zeros(shape)
    var_num = np.zeros(shape)
    pois_num = np.zeros(shape)
    n_contrib = np.zeros(shape, dtype=np.int16)
    mask_good = np.zeros(shape, dtype=np.int32)
    mask_all = np.zeros(shape, dtype=np.int32)
    covered = np.zeros(shape, dtype=np.uint8)
    f_num = f_den = 0.0
    for r, f, box in zip(resampled, scales, boxes):
        s = _accumulate(r.image, r.mask, r.weight, r.coverage, f, weighted, int(UNUSABLE), num,
                        den, var_num, pois_num, n_contrib, mask_good, mask_all, covered, *box)
        # each template's large-area variance is F_i times the sum of its per-pixel variances
        f_num += r.noise_correlation_factor * s
        f_den += s
    ncf = f_num / f_den if f_den > 0 else 1.0
    n_rejected = None
    if try_reject:
        n_rejected = _reject(resampled, scales, weighted, n_contrib, num, den, var_num,
                             pois_num, reject)
    image, weight, gain, mask = _finalise(num, den, var_num, pois_num, mask_good, mask_all,
                                          covered, int(EDGE), int(UNUSABLE), int(veto_bits),
                                          n_contrib)
    psf = None
    if psfs is not None:
        maps = np.stack([_cell_fraction(r.mask, r.weight, r.coverage, f, weighted,
                                        int(UNUSABLE), den, int(psf_cell), *box)
                         for r, f, box in zip(resampled, scales, boxes)])
        psf = CoaddPSF(psfs=tuple(psfs), mappings=tuple(r.mapping for r in resampled),
                       weight_maps=maps, cell=int(psf_cell), shape=shape)
    if log.isEnabledFor(logging.DEBUG):  # a full-plane pass: only when shown
        log.debug("coadd of %d templates: %.1f%% usable, noise factor %.3f", len(resampled),
                  100 * (den > 0).mean(), ncf)
    return Coadd(image=image, mask=mask, weight=weight, psf=psf,
                 n_contrib=n_contrib, zp=float(zp_target), scales=scales,
                 noise_correlation_factor=float(ncf), method=method, gain=gain,
                 n_rejected=n_rejected)


def _coadd_one(r: Resampled, f: float, zp_target: float, psfs: Sequence[PSFLike] | None,
               weighted: bool, method: str, psf_cell: int) -> Coadd:
    """:func:`coadd_templates` of a single template (same outputs, one pass)."""
    image, weight, gain, mask, n_contrib, s, frac = _single(
        r.image, r.mask, r.weight, r.coverage, f, weighted, int(UNUSABLE), int(EDGE),
        int(psf_cell))
    ncf = r.noise_correlation_factor if s > 0 else 1.0
    psf = None
    if psfs is not None:
        psf = CoaddPSF(psfs=tuple(psfs), mappings=(r.mapping,), weight_maps=frac[None],
                       cell=int(psf_cell), shape=r.shape)
    return Coadd(image=image, mask=mask, weight=weight, psf=psf, n_contrib=n_contrib,
                 zp=float(zp_target), scales=(float(f),), noise_correlation_factor=float(ncf),
                 method=method, gain=gain)


def _coadd_fused(resampled: Sequence[Resampled], scales: Sequence[float],
                 boxes: Sequence[tuple[int, int, int, int]], zp_target: float,
                 psfs: Sequence[PSFLike] | None, weighted: bool, method: str, psf_cell: int,
                 tried_reject: bool, veto_bits: int) -> Coadd:
    """:func:`coadd_templates` of several templates where no rejection can apply (same
    outputs as the accumulator path, one pass: :func:`_fused`)."""
    image, weight, gain, mask, n_contrib, s, maps = _fused(
        tuple(np.ascontiguousarray(r.image, np.float32) for r in resampled),
        tuple(np.ascontiguousarray(r.mask, np.int32) for r in resampled),
        tuple(np.ascontiguousarray(r.weight, np.float32) for r in resampled),
        tuple(np.ascontiguousarray(r.coverage, np.bool_) for r in resampled),
        np.asarray(scales, np.float64), np.asarray(boxes, np.int64).reshape(-1, 4), weighted,
        int(UNUSABLE), veto_bits, int(EDGE), int(psf_cell))
    f_num = f_den = 0.0
    for r, si in zip(resampled, s.tolist()):
        f_num += r.noise_correlation_factor * si
        f_den += si
    ncf = f_num / f_den if f_den > 0 else 1.0
    shape = resampled[0].shape
    psf = None
    if psfs is not None:
        psf = CoaddPSF(psfs=tuple(psfs), mappings=tuple(r.mapping for r in resampled),
                       weight_maps=maps, cell=int(psf_cell), shape=shape)
    return Coadd(image=image, mask=mask, weight=weight, psf=psf, n_contrib=n_contrib,
                 zp=float(zp_target), scales=tuple(float(f) for f in scales),
                 noise_correlation_factor=float(ncf), method=method, gain=gain,
                 n_rejected=np.zeros(shape, dtype=np.int16) if tried_reject else None)
