"""ZOGY image subtraction (Zackay, Ofek & Gal-Yam 2016, ApJ 830, 27) in overlapping tiles.

Model
-----
A new image ``N`` and a reference ``R`` on the same pixel grid, background-subtracted, are
``N = F_n T (x) P_n + e_n`` and ``R = F_r T (x) P_r + e_r`` (``T`` the true sky, ``F`` flux
scales, ``P`` normalised PSFs, ``(x)`` convolution). With per-tile scalar noise variances
``s_n^2``, ``s_r^2`` (the median of the variance maps) and hats for Fourier transforms::

    den   = s_r^2 F_n^2 |P_n^|^2 + s_n^2 F_r^2 |P_r^|^2
    F_D   = F_r F_n / sqrt(s_n^2 F_r^2 + s_r^2 F_n^2)
    D^    = (F_r P_r^ N^ - F_n P_n^ R^) / sqrt(den)             (paper eq. 13)
    P_D^  = F_r F_n P_r^ P_n^ / (F_D sqrt(den))                  (eq. 14)
    S     = k_n (x) N - k_r (x) R,                                (eq. 12, 17)
    k_n^  = F_r^2 F_n conj(P_n^) |P_r^|^2 / den,   k_r^ = F_n^2 F_r conj(P_r^) |P_n^|^2 / den
    F_S   = sum_k F_n^2 F_r^2 |P_n^|^2 |P_r^|^2 / den / n_pix     (eq. 42)

A point source of flux ``a`` (in units of ``T``) that is in ``N`` only gives ``S = a F_S`` at
its position, and ``D = a F_D P_D``.

Noise (the variance-map generalisation of section 3.3 / eq. 25-28): ``S`` and ``D`` are
linear filters of ``N`` and ``R``, so with per-pixel variance maps ``V_n``, ``V_r`` (background,
read noise and the sources' own Poisson noise, uncorrelated between pixels)::

    V(S) = V_n (x) k_n^2 + V_r (x) k_r^2,     V(D) = V_n (x) d_n^2 + V_r (x) d_r^2

exactly, whatever the scalar ``s_n``, ``s_r`` used to build the filters (they only set how close
to optimal the filter is). ``S_corr = S / sqrt(V(S) + V_ast)`` is then a score with unit noise in
blank sky, corrected for the source noise of both images, and ``V_ast`` is the astrometric term
``sx^2 [(d S_N / dx)^2 + (d S_R / dx)^2] + sy^2 [...]`` (eq. 30-31, ``S_N = k_n (x) N``).

Outputs are in the flux units of ``N``: ``diff = F_n D / F_D`` (a new source of ``a`` e- in N
appears as ``a P_D``), ``flux = F_n S / F_S`` (the PSF flux of a source centred on the pixel),
``flux_err = F_n sqrt(V(S) + V_ast) / F_S``.

Spatial variation
-----------------
The image is cut into tiles (interior ``tile`` x ``tile``, plus ``border`` pixels on each side,
zero-filled beyond the image with zero variance, which leaves the noise propagation exact);
both PSFs are rendered at each tile centre, the filters built, and the tile interiors stitched.
The filters are built on a small ``kernel_size`` grid (default ``2 * border``: a kernel wider
than the border would be wrong at tile edges anyway) in float64 and carried to the tile grid
with a pruned FFT (the real transforms along y of the kernel's columns only), placed with
their centre at the origin of the tile grid (wrapped around, so no phase ramp); the data FFTs
are float32 ``scipy.fft`` with ``workers=1``.

Cost per tile: 4 forward data FFTs (N, R and their variance maps, one batched call on the
(4, Ty, Tx) tile stack), 4 inverse (D, S, V(S), V(D); batched, in two steps, the real one
along y over the interior columns only: ~2.2 -> 1.9 ms, see :func:`_irfft2`), and 8 pruned
kernel transforms (the D and S filters and their squares, in one batch) of 640 x 640
float32; the four output spectra are formed in one pass in place of the input spectra
(:func:`_spectra`) and the tile interiors written in one pass (:func:`_finalise_tile`).
Batching the data transforms and forming the spectra in place is bit-identical and saves
little: one tile's transforms and spectra 25.3 -> 25.4 ms at 640 px, 19.7 -> 18.7 ms at 576
(one core, load 0.3, best of 60; under load 5-7 it read 28-34 -> 27-29 ms). The
filters themselves come from 2 + 5 small float64 transforms on the (K, K) grid, batched
(~2 ms per tile in all, mostly the elementwise products). Correlated input noise (a
resampled template) is handled with the filters already built: their ``|hat|^2`` on the kernel
grid give each filter's noise gain by Parseval (:meth:`ZogyKernels.noise_factors`), no filter
rebuilt, no further transform. For a 4096 x 2048 CCD (32 tiles of 512 + 2 x 64) on one core the
transforms are ~1.0 CPU-s, about half of :func:`desgw.diff.subtract.subtract` (~2.0 CPU-s on
the loaded 2-core development machine; ``subtract_cpu_split_s`` of ``bench/bench_diff.py``):
data forward 0.3, data inverse 0.4, filters 0.3. Per tile that is ~9 ms of data transforms
(a float32 640 x 640 real FFT ~1.3 ms forward, ~1.8 ms inverse) and ~10 ms for the 8
filters, whose long pass (the zero-padded Tx or Ty points) is most of it. Every tile spectrum
is laid out (Ty//2 + 1, Tx), the real transform along y (:class:`TilePlan`), so that this long
pass runs along contiguous memory: 10.9 -> 5.5 ms per tile, ~9 % of the tile's transforms and
spectra (37.5 -> 34.2 ms, one core, load ~9). Laying out only the filters transposed,
transforming them whole, or one column stack per filter were each no faster once the
spectra products read them; two real transforms packed in one complex one cost what the two
do; ducc0's transforms (0.42) are 0.1-0.2 s per CCD faster than scipy's, not enough for a
new dependency. The rest is memory-bound passes over the tiles (filling and
in-painting, the spectra products, stitching: ~3 ms each per tile), the filters on the K grid
(~2 ms per tile) and the output masks.

The count per tile, and per 4096 x 2048 CCD of 32 tiles of 512 px: 4 forward and 4 inverse
data transforms of the tile (128 + 128 per CCD; 2 more inverse per axis with the
astrometric term), 8 pruned filter transforms to the tile grid (256), 1 + 1 batched small
transforms on the (K, K) grid (2 PSFs in, 5 kernels out; 3 more for P_D when the grid was
shrunk), 10 PSF renders (both PSFs at the centre, the new one at the 3 x 3 flux nodes, whose
middle one is the centre: 320; the new PSF's 288 in one batch, :func:`_new_psf_renders`), and
5 elementwise passes over the tile (fill, two variance medians on a stride-4 sub-sample,
spectra, finalise). A first write into each of the five fresh (ny, nx) outputs costs the
kernel's page zeroing, ~0.1 CPU-s per CCD, inside :func:`_finalise_tile` (none in a
worker, which keeps freed memory: :mod:`desgw.util.malloc`).

What the pipeline consumes, and what was measured against cutting it (issue #12, on a CCD
captured from ``bench_diff.py`` and the synthetic pair of ``bench_zogy_tiles.py``, one core,
pipeline-like memory reuse, load ~20 so only ratios are firm): all five outputs are used.
``diff`` is the SCI plane, the stamps and the PSF fit of :mod:`desgw.diff.measure`;
``diff_var`` is the WGT plane and the error and chi2 of that fit (``flux_psf_err``,
``psf_chi2``: real/bogus features); ``score`` is detection and the SCORE plane; ``flux`` and
``flux_err`` are the candidates' flux, S/N and the release of masked detections. ``V(D)``
cannot come from the ``V(S)`` side: the two use different squared filters (``d^2`` vs ``k^2``;
``k = F_D P_D(-x) (x) d`` on the K grid does not carry over to the squares), and no exact form
avoids its own two squared-filter transforms and one inverse: its whole share is ~0.12-0.14
CPU-s per CCD (8 -> 6 filter transforms 8.4 -> 6.8 ms, 4 -> 3 inverse 8.6 -> 6.5 ms per 640-px
tile), the most any shortcut could save. The squared filters on the tile grid: a K-support
kernel's full tile spectrum costs the Tx-point pass over the Ty/2 + 1 rows whatever route
builds it (by operation count: x first then y costs the same; a decimated Tx = 5 x 128 pass ~15
% less before its twiddle and interleave passes), and building the filters on the tile
frequencies drops the K truncation (different, wider filters that reach past the overlap).
Tiles with no usable pixel (wholly uncovered or masked) are already skipped before any
transform; partly covered ones still cost a full tile (``bench_diff.py``'s single template CCD
leaves a column of 8 tiles 6-14 % covered, none empty). Per CCD in a worker: data transforms
forward and inverse ~0.27 CPU-s each, filter transforms ~0.25-0.3, filling ~0.16, filters on
the K grid ~0.07, finalise ~0.06, spectra ~0.05, variance medians ~0.03, PSF renders ~0.06 (the
coadd's 47, the search model's 335; the search model's now one ``render_batch`` of its 288
distinct positions, bit for bit the single renders: zogy 0.889 -> 0.860 CPU-s on CCD 28 of a
sparse exposure, bench/bench_diff_masks_ab.py, pinned, best of 5, load ~4).
:func:`_finalise_tile` writing row slices of the whole outputs with a select for the blank
case (numba then vectorises it; bit-identical) was 0.21 -> 0.16 s where the outputs are page-
faulted fresh (the call 1.26 -> 1.16 s), but in a worker the pass is memory-bound at ~0.06 s
either way (the call 1.30 vs 1.38 s, 1.01 vs 1.04 s, 1.05 vs 1.06 s on the captured CCD; load
~20): not kept.

Filter grid and overlap (:func:`choose_kernel_size`, ``ZogyConfig.auto_kernel``): with
``kernel_size`` unset the grid is the smallest that keeps the science of ``2 * border`` for
both PSFs at the image centre and its corner tiles, and the overlap is half of it. On 512-px
tiles a 64-px grid needs 576-point transforms instead of 640: ~0.3 CPU-s less per CCD (zogy
~1.65 -> ~1.35 s on a varying Moffat pair; 1.41 -> 1.13 s on a DECam CCD whose PSF models
passed). Larger tiles were measured no faster (1152-point transforms: 1.64 vs 1.58 s), so the
tile side stays 512 px: the PSF change across a tile is what the rule measures against.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import scipy.fft as sfft
from numba import njit

from desgw.diff.zogy_psf import PSFSource, TiledPSF, as_psf_source, fit_stamp

__all__ = [
    "TilePlan",
    "ZogyConfig",
    "ZogyKernels",
    "ZogyResult",
    "acf_hat",
    "choose_kernel_size",
    "tile_plan",
    "zogy",
    "zogy_kernels",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ZogyConfig:
    """Configuration of :func:`zogy`.

    Attributes
    ----------
    tile : int
        Side of a tile interior (pixels).
    border : int
        Overlap added on each side of a tile (pixels); must exceed the filter half-widths
        (a few PSF FWHM of the broader image).
    kernel_size : int or None
        Side of the grid on which the filters are built (pixels, even); default ``2 * border``.
    psf_size : int or None
        Side (odd) at which PSFs are rendered; default the PSF object's own stamp, cropped to
        ``kernel_size - 1``.
    astrometric_sigma : tuple[float, float]
        Astrometric registration noise (sigma_x, sigma_y) in pixels; (0, 0) disables the term.
    sigma_stride : int
        Sub-sampling stride of the tile median of the variance maps.
    flux_nodes : bool
        Normalise ``flux`` by the filter's response to the new image's PSF evaluated at 3 x 3
        nodes per tile and interpolated (biquadratic) to every pixel, instead of the tile-centre
        ``F_S``: removes the first-order flux bias of a PSF that varies within a tile.
    auto_kernel : bool
        With ``kernel_size`` None: build the filters on the smallest grid that gives the same
        science as ``2 * border`` (:func:`choose_kernel_size`, from both PSFs at the image's
        centre and corners) and shrink the tile overlap to half of it (``border`` is then the
        largest overlap). False: always ``2 * border``.
    """

    tile: int = 512
    border: int = 64
    kernel_size: int | None = None
    psf_size: int | None = None
    astrometric_sigma: tuple[float, float] = (0.0, 0.0)
    sigma_stride: int = 4
    flux_nodes: bool = True
    auto_kernel: bool = True

    def __post_init__(self) -> None:
        if self.tile < 16 or self.border < 4:
            raise ValueError(f"tile ({self.tile}) must be >= 16 and border ({self.border}) >= 4")
        k = self.kernel
        if k % 2 or k > self.tile + 2 * self.border:
            raise ValueError(f"kernel_size must be even and <= tile + 2 border, got {k}")
        if self.psf_size is not None and (self.psf_size % 2 == 0 or self.psf_size >= k):
            raise ValueError(f"psf_size must be odd and < kernel_size, got {self.psf_size}")
        if min(self.astrometric_sigma) < 0:
            raise ValueError("astrometric_sigma must be >= 0")

    @property
    def kernel(self) -> int:
        """The kernel grid side actually used."""
        return int(self.kernel_size if self.kernel_size is not None else 2 * self.border)


@dataclass(frozen=True)
class ZogyKernels:
    """ZOGY filters of one tile, real space on a (K, K) grid centred on pixel (K//2, K//2).

    Attributes
    ----------
    k_new, k_ref : numpy.ndarray
        Filters giving the score ``S = k_new (x) N - k_ref (x) R`` (float64).
    d_new, d_ref : numpy.ndarray
        Filters giving the difference in flux units of N, ``diff = d_new (x) N - d_ref (x) R``.
    psf_diff : numpy.ndarray
        PSF of the difference image, (s, s) float32, sum 1.
    f_s : float
        Response of ``S`` at the position of a point source of unit T-flux in N.
    f_d : float
        ZOGY's flux zero point of ``D`` (eq. 15).
    f_new : float
        Flux scale of N (``diff`` and flux are multiplied by it).
    sigma_new, sigma_ref : float
        Scalar noise sigmas (image units) used to build the filters.
    stamp_size : int
        Side of the PSF stamps the filters were built from.
    power : numpy.ndarray
        (4, K, K//2 + 1) float64 ``|hat|^2`` of ``k_new``, ``k_ref``, ``d_new``, ``d_ref``
        on the (K, K) grid (half plane of the real FFT): the filters' noise gains without a
        new transform (:meth:`noise_factors`).
    """

    k_new: np.ndarray
    k_ref: np.ndarray
    d_new: np.ndarray
    d_ref: np.ndarray
    psf_diff: np.ndarray
    f_s: float
    f_d: float
    f_new: float
    sigma_new: float
    sigma_ref: float
    stamp_size: int
    power: np.ndarray = field(repr=False)

    def noise_factors(self, acf_hat_new: np.ndarray | None, acf_hat_ref: np.ndarray | None
                      ) -> tuple[float, float]:
        """Variance factors of ``S`` and of ``diff`` for correlated input noise.

        A filter ``k`` of noise with autocorrelation ``rho`` (unit centre) has the variance
        ``gamma = sum k (k (x) rho) / sum k^2`` times the independent-pixel value; by Parseval
        on the (K, K) grid ``gamma = sum |k^|^2 rho^ / sum |k^|^2``, from :attr:`power` and
        ``rho^`` (:func:`acf_hat`). With the tile's scalar variances the share of the
        reference in the variance of a filter pair is ``f_r = s_r^2 sum k_r^2 / (s_n^2 sum
        k_n^2 + s_r^2 sum k_r^2)`` and the factor ``1 + f_r (gamma_r - 1) + (1 - f_r)
        (gamma_n - 1)`` (a term only for the inputs whose ``acf_hat`` is given).

        Parameters
        ----------
        acf_hat_new, acf_hat_ref : numpy.ndarray or None
            (K, K//2 + 1) real transforms of the noise autocorrelations of N and R (None:
            that image's noise is independent between pixels).

        Returns
        -------
        (f_score, f_diff) : tuple of float
        """
        w = _half_plane_weights(self.power.shape[1])
        sums = (self.power * w).sum(axis=(1, 2))  # K^2 sum k^2, per filter
        out = []
        for i_new, i_ref in ((0, 1), (2, 3)):
            vn = self.sigma_new ** 2 * sums[i_new]
            vr = self.sigma_ref ** 2 * sums[i_ref]
            frac = vr / (vn + vr) if vn + vr > 0 else 0.0
            f = 1.0
            for acf, i, share in ((acf_hat_ref, i_ref, frac), (acf_hat_new, i_new, 1.0 - frac)):
                if acf is not None and sums[i] > 0:
                    gamma = float((self.power[i] * acf * w).sum() / sums[i])
                    f += share * (gamma - 1.0)
            out.append(f)
        return out[0], out[1]

    def response_new(self, psf_new: np.ndarray) -> float:
        """``S`` at the centre of a unit-flux source in N with PSF ``psf_new`` (any odd stamp).

        Equals :attr:`f_s` for the PSF the filters were built from; for the PSF at another
        position of the tile it is the normalisation that keeps ``S / F_S`` unbiased there.
        """
        st = fit_stamp(psf_new, self.stamp_size)
        k = self.k_new.shape[0]
        c, h = k // 2, self.stamp_size // 2
        crop = self.k_new[c - h:c + h + 1, c - h:c + h + 1]
        return float(self.f_new * (crop * st[::-1, ::-1]).sum())


def _centred_hats(stamps: np.ndarray, k: int) -> np.ndarray:
    """rfft2 (n, k, k//2 + 1) of odd square stamps (n, s, s) placed on a (k, k) grid with
    their central pixel at the origin."""
    n, s = stamps.shape[0], stamps.shape[1]
    a = np.zeros((n, k, k))
    h = s // 2
    c = k // 2
    a[:, c - h:c + h + 1, c - h:c + h + 1] = stamps
    return sfft.rfft2(np.fft.ifftshift(a, axes=(-2, -1)), workers=1)


def _half_plane_weights(k: int) -> np.ndarray:
    """(k//2 + 1,) weights that sum a real spectrum's half plane (rfft layout) to the full
    plane's sum: 1 for the first and (k even) the last column, 2 for the others."""
    w = np.full(k // 2 + 1, 2.0)
    w[0] = 1.0
    if k % 2 == 0:
        w[-1] = 1.0
    return w


def acf_hat(acf: np.ndarray, kernel_size: int) -> np.ndarray:
    """Real FFT (K, K//2 + 1) of a noise autocorrelation stamp placed with its centre at the
    origin of a (K, K) grid (the transform is real: an autocorrelation is symmetric).

    Raises
    ------
    ValueError
        If the stamp is not square and odd or does not fit in ``kernel_size - 1``.
    """
    acf = np.asarray(acf, np.float64)
    s = acf.shape[0]
    k = int(kernel_size)
    if acf.ndim != 2 or acf.shape[1] != s or s % 2 == 0 or s >= k:
        raise ValueError(f"a noise autocorrelation must be an odd square stamp smaller than "
                         f"the kernel grid ({k}), got shape {acf.shape}")
    a = np.zeros((k, k))
    c, h = k // 2, s // 2
    a[c - h:c + h + 1, c - h:c + h + 1] = acf
    return np.fft.rfft2(np.fft.ifftshift(a)).real


def _real_centred(hats: np.ndarray, k: int) -> np.ndarray:
    """Real (n, k, k) kernels, centred at (k//2, k//2), of (n, k, k//2 + 1) half spectra."""
    return np.fft.fftshift(sfft.irfft2(hats, s=(k, k), workers=1), axes=(-2, -1))


def zogy_kernels(psf_new: np.ndarray, psf_ref: np.ndarray, *, var_new: float, var_ref: float,
                 f_new: float = 1.0, f_ref: float = 1.0, kernel_size: int = 128,
                 psf_diff_size: int | None = None, linear_psf_diff: bool = False
                 ) -> ZogyKernels:
    """Build the ZOGY filters for one pair of PSFs and scalar noise levels.

    Parameters
    ----------
    psf_new, psf_ref : numpy.ndarray
        Odd square PSF stamps of N and R (any normalisation; renormalised to sum 1), side
        < ``kernel_size``.
    var_new, var_ref : float
        Scalar background variances of N and R (image units squared), > 0.
    f_new, f_ref : float
        Flux scales ``F_n``, ``F_r``.
    kernel_size : int
        Side K of the filter grid (even).
    psf_diff_size : int or None
        Side (odd) of the returned difference PSF; default ``kernel_size - 1`` (P_D is broader
        than either input PSF; cropping its wings to the input stamp biases PSF-fit fluxes);
        with ``linear_psf_diff``, ``kernel_size + s - 2`` (``s`` the PSF stamp side).
    linear_psf_diff : bool
        P_D as the linear convolution ``d_new (x) P_n`` (normalised), exactly what a point
        source in N becomes in ``diff`` on the tile grid, instead of P_D's formula on the
        (K, K) grid (periodic: its wings wrap when K is small; :func:`choose_kernel_size`).

    Returns
    -------
    ZogyKernels
    """
    if not (var_new > 0 and var_ref > 0 and np.isfinite(var_new) and np.isfinite(var_ref)):
        raise ValueError(f"variances must be finite and > 0, got {var_new}, {var_ref}")
    k = int(kernel_size)
    size = max(psf_new.shape[0], psf_ref.shape[0])
    size = min(size, k - 1 if (k - 1) % 2 else k - 2)
    # both PSF transforms in one call, the five filters' inverse transforms in another
    pn, pr = _centred_hats(np.stack([fit_stamp(psf_new, size), fit_stamp(psf_ref, size)]), k)
    fn, fr = float(f_new), float(f_ref)
    an, ar = np.abs(pn) ** 2, np.abs(pr) ** 2
    den = var_ref * fn**2 * an + var_new * fr**2 * ar
    den = np.maximum(den, 1e-30 * den[0, 0])
    sq = np.sqrt(den)
    f_d = fr * fn / np.sqrt(var_new * fr**2 + var_ref * fn**2)
    # diff = F_n D / F_D
    dn_hat = fn * fr * pr / (sq * f_d)
    dr_hat = fn * fn * pn / (sq * f_d)
    k_new, k_ref, d_new, d_ref, pd = _real_centred(np.stack([
        fr**2 * fn * np.conj(pn) * ar / den, fn**2 * fr * np.conj(pr) * an / den, dn_hat,
        dr_hat, fr * fn * pr * pn / (f_d * sq)]), k)
    kn2 = (fr**2 * fn) ** 2 * an * ar * ar / (den * den)
    kr2 = (fn**2 * fr) ** 2 * ar * an * an / (den * den)
    power = np.stack([kn2, kr2, np.abs(dn_hat) ** 2, np.abs(dr_hat) ** 2])
    # S at the source of unit flux: the inverse transform at the origin, i.e. the mean of the
    # (real) spectrum over the full plane from its half plane
    f_s = float((_half_plane_weights(k) * (fn**2 * fr**2 * an * ar / den)).sum() / (k * k))
    if linear_psf_diff:
        # the full support of d_new (x) P_n, centred at k//2 + size//2, less its first row
        # and column (the filter's Nyquist row), so that the stamp is odd and centred
        n = sfft.next_fast_len(k + size - 1, real=True)
        lin = sfft.irfft2(sfft.rfft2(d_new, s=(n, n), workers=1)
                          * sfft.rfft2(fit_stamp(psf_new, size), s=(n, n), workers=1),
                          s=(n, n), workers=1)
        pd = lin[1:k + size - 1, 1:k + size - 1]
        out = psf_diff_size or (k + size - 2)
    else:
        out = psf_diff_size or (k - 1)
    c = pd.shape[0] // 2
    h = min(out // 2, c)
    psf_d = fit_stamp(pd[c - h:c + h + 1, c - h:c + h + 1], out).astype(np.float32)
    return ZogyKernels(k_new=k_new, k_ref=k_ref, d_new=d_new, d_ref=d_ref, psf_diff=psf_d,
                       f_s=f_s, f_d=float(f_d), f_new=fn, sigma_new=float(np.sqrt(var_new)),
                       sigma_ref=float(np.sqrt(var_ref)), stamp_size=int(size), power=power)


#: Filter grid sides :func:`choose_kernel_size` tries, smallest first (each < ``2 * border``;
#: 96 is not one: a 512-px tile then needs a 625-point transform, no faster than 640).
KERNEL_CANDIDATES = (32, 48, 64)
#: Star residual of ``S`` (relative to its peak) a smaller grid may always leave; the full
#: grid leaves ~1e-6 with smooth PSFs, ~3e-5 with noisy PSF models.
S_RESIDUAL_TOL = 2e-5
#: Share of the tiling's own star residual in ``S`` (a star at a tile corner through the
#: filters of the tile centre: 1e-3 to 2e-2 on DECam PSF models) a smaller grid may add.
S_TILE_SHARE = 0.1
#: Largest relative change of ``F_S`` from the full grid.
F_S_TOL = 1e-5
#: Star residual of ``diff`` (relative to its peak) a smaller grid may always leave. D's
#: filters carry the PSF transforms' phase where both are ~0, a tail no grid size removes
#: (1e-3 to 3e-2 of the peak on the full grid).
D_RESIDUAL_TOL = 1e-3
#: Share of the tiling's own star residual in ``diff`` (as for ``S``: 4e-3 to 4e-2 on DECam
#: PSF models) a smaller grid may leave.
D_TILE_SHARE = 0.75
#: Largest fraction of the full grid's ``P_D`` (its signed sum: the flux a PSF fit on the
#: smaller stamp misses) outside the smaller grid's stamp (``K - 1``).
PSF_D_TAIL_TOL = 1e-4
#: Largest share of a star's energy in ``diff`` (sum of squares) that a smaller grid may leave
#: as residual, or 1.5 times the full grid's. A filter that wraps leaves it as a faint ring
#: at ~K/2 from the star, outside the PSF, where blank-sky noise is measured: 1.8e-3 to
#: 3.3e-3 (a 48-px grid, Kolmogorov PSFs on 41-px stamps) raised the blank-sky noise/sigma
#: of a test scene by 6 %; 1.4e-4 to 7.9e-4 (a 64-px grid, DECam PSF models) left it within
#: 3e-4 and the bright-star chi2/dof within 0.002.
D_ENERGY_TOL = 1e-3


def _star_residuals(kern: ZogyKernels, pn: np.ndarray, pr: np.ndarray, fn: float, fr: float
                    ) -> tuple[float, float, float, float]:
    """A star of unit true flux in both images through the filters, by linear convolution:
    ``max|k_n (x) F_n P_n - k_r (x) F_r P_r|`` relative to the peak of ``k_n (x) F_n P_n``, the
    same for the ``d`` filters, ``F_S``, and the residual's share of the star's energy in
    ``diff``."""
    k, s = kern.k_new.shape[0], pn.shape[0]
    n = sfft.next_fast_len(k + s - 1, real=True)
    fh = sfft.rfft2(np.stack([kern.k_new, kern.k_ref, kern.d_new, kern.d_ref]), s=(n, n),
                    workers=1)
    ph = sfft.rfft2(np.stack([fn * pn, fr * pr]), s=(n, n), workers=1)
    out = sfft.irfft2(fh * ph[[0, 1, 0, 1]], s=(n, n), workers=1)
    s_res = float(np.abs(out[0] - out[1]).max() / np.abs(out[0]).max())
    res = out[2] - out[3]
    d_res = float(np.abs(res).max() / np.abs(out[2]).max())
    return s_res, d_res, kern.f_s, float((res * res).sum() / (out[2] * out[2]).sum())


PSFPair = tuple[np.ndarray, np.ndarray]


def choose_kernel_size(pairs: list[PSFPair], *, var_new: float, var_ref: float,
                       f_new: float = 1.0, f_ref: float = 1.0, k_max: int = 128,
                       k_min: int = 0, corners: list[list[PSFPair]] | None = None,
                       tile: int | None = None) -> int:
    """The smallest filter grid side that gives the science of the full ``k_max`` grid.

    For each pair of PSF stamps (new, reference; at the centres of tiles spread over the
    image) the filters are built on the ``k_max`` grid and on each candidate grid
    (:data:`KERNEL_CANDIDATES` from ``k_min`` up, below ``k_max``). A point source present in
    both images, through the filters by linear convolution (a filter that wraps on its grid
    shows), leaves residuals in ``S`` and in ``diff`` (relative to their peaks). The yardstick
    is what the tiling already accepts: the residual of a star at the corners of the same
    tile (``corners``, PSF pairs there) through the full grid's filters of the tile centre,
    the median over the corners. A candidate is taken when, at every pair, its ``S``
    residual is at most the largest of :data:`S_RESIDUAL_TOL`, twice the full grid's and
    :data:`S_TILE_SHARE` of the yardstick; its ``diff`` residual at most the largest of
    :data:`D_RESIDUAL_TOL`, 1.25 times the full grid's and :data:`D_TILE_SHARE` of the
    yardstick; the residual's share of the star's energy in ``diff`` (a ring where the filter
    wraps, outside the PSF, that the tiling does not make) at most :data:`D_ENERGY_TOL` or
    1.5 times the full grid's; ``F_S`` moves by at most :data:`F_S_TOL`; and ``P_D`` keeps all but
    :data:`PSF_D_TAIL_TOL` of its sum inside the candidate's ``K - 1`` stamp. Each candidate
    costs a filter build and six transforms of ~(K + s)^2 per pair: tens of ms in all.

    Parameters
    ----------
    pairs : list of (numpy.ndarray, numpy.ndarray)
        Odd square PSF stamps of N and R (any normalisation), side < ``k_max``.
    var_new, var_ref : float
        Typical scalar background variances of N and R (image units squared).
    f_new, f_ref : float
        Flux scales ``F_n``, ``F_r``.
    k_max : int
        The full grid side (even): returned when no smaller candidate passes.
    k_min : int
        No candidate below this (e.g. one more than the widest PSF stamp, so that no PSF is
        cropped).
    corners : list of lists of PSF pairs, or None
        For each of ``pairs``, the PSF pairs at the corners of its tile; None: no yardstick
        (the fixed tolerances only).
    tile : int or None
        Tile interior side: candidates are then tried by the size of the tile transform they
        need (``next_fast_len(tile + K)``), only the largest grid of those that need one size;
        None: all, smallest first.

    Returns
    -------
    int
        Even grid side, ``<= k_max``.
    """
    cands = [c for c in KERNEL_CANDIDATES if k_min <= c < k_max]
    if tile is not None:
        # by tile transform size, smallest first; of the grids that need one size only the
        # largest (a smaller one saves only on the filters, ~1 % of the tile's cost)
        by_len = {sfft.next_fast_len(tile + c, real=True): c for c in sorted(cands)}
        cands = [by_len[n] for n in sorted(by_len)]
    if not cands or not pairs:
        return int(k_max)
    size = max(max(a.shape[0], b.shape[0]) for a, b in pairs)
    if corners:
        size = max(size, max(max(a.shape[0], b.shape[0]) for cs in corners for a, b in cs))

    def build(a: np.ndarray, b: np.ndarray, k: int) -> ZogyKernels:
        return zogy_kernels(a, b, var_new=var_new, var_ref=var_ref, f_new=f_new, f_ref=f_ref,
                            kernel_size=k)

    refs: list = [None] * len(pairs)
    stamps = [(fit_stamp(pn, size), fit_stamp(pr, size)) for pn, pr in pairs]

    def full(i: int) -> tuple:
        """The full grid's filters and residuals at pair i (computed once)."""
        if refs[i] is None:
            a, b = stamps[i]
            kern = build(a, b, k_max)
            refs[i] = (kern, *_star_residuals(kern, a, b, f_new, f_ref))
        return refs[i]

    def tiling(i: int) -> np.ndarray:
        """Residuals (S, diff) of stars at the corners of tile i through its centre's full
        grid filters: (n_corners, 2)."""
        kern = full(i)[0]
        return np.array([_star_residuals(kern, fit_stamp(c, size), fit_stamp(e, size), f_new,
                                         f_ref)[:2] for c, e in corners[i]]) if corners else \
            np.zeros((1, 2))

    for c in cands:
        ok = True
        for i, (a, b) in enumerate(stamps):
            k0, s0, d0, fs0, e0 = full(i)
            pd = k0.psf_diff.astype(np.float64)
            m, h = pd.shape[0] // 2, (c - 1) // 2
            if abs(1.0 - pd[m - h:m + h + 1, m - h:m + h + 1].sum() / pd.sum()) > PSF_D_TAIL_TOL:
                ok = False
                break
            s1, d1, fs1, e1 = _star_residuals(build(a, b, c), a, b,
                                              f_new, f_ref)
            if e1 > max(D_ENERGY_TOL, 1.5 * e0) or abs(fs1 / fs0 - 1.0) > F_S_TOL:
                ok = False
                break
            s_tol, d_tol = max(S_RESIDUAL_TOL, 2.0 * s0), max(D_RESIDUAL_TOL, 1.25 * d0)
            if s1 > s_tol or d1 > d_tol:
                med = np.median(tiling(i), axis=0)  # only when the fixed tolerances fail
                if s1 > max(s_tol, S_TILE_SHARE * med[0]) or d1 > max(d_tol,
                                                                       D_TILE_SHARE * med[1]):
                    ok = False
                    break
        if ok:
            return int(c)
    return int(k_max)


@dataclass(frozen=True)
class TilePlan:
    """Per tile-shape set-up, computed once: shape, kernel grid and the astrometric gradients.

    Tile spectra are laid out ``(Ty//2 + 1, Tx)``: the real transform runs along y (axis 0)
    and the complex one along x, the contiguous axis (:func:`_rfft2`), so that the long pass
    of the filters' pruned transforms (:meth:`kernel_hats`) runs along contiguous memory:
    ~9 % less CPU per tile than the ``(Ty, Tx//2 + 1)`` layout of ``rfft2``, whose column
    pass over the zero-padded filters is strided.
    """

    shape: tuple[int, int]
    kernel_size: int
    gx: np.ndarray = field(repr=False)  # (1, Tx) complex64: 2 pi i fx
    gy: np.ndarray = field(repr=False)  # (Ty//2+1, 1) complex64: 2 pi i fy

    def kernel_hat(self, kernel: np.ndarray) -> np.ndarray:
        """Tile-grid transform (:func:`_rfft2` layout) of a (K, K) kernel centred at
        (K//2, K//2), origin-centred (pruned)."""
        return self.kernel_hats(kernel[None])[0]

    def kernel_hats(self, kernels: np.ndarray,
                    work: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """:meth:`kernel_hat` of a stack of (K, K) kernels at once: (n, Ty//2+1, Tx) complex64.

        The kernels are placed on the tile grid with their centre at the origin (wrapped
        around: no phase ramp to apply). Pruned: the real transforms along y run over the K
        kernel columns only, the complex ones along x over the zero-padded rows (Tx points,
        contiguous). ``work``: the zero-padded input buffers of :meth:`work_buffers` for
        ``n`` kernels, reused from call to call (only their kernel rows and columns are
        written; the zeros stay), which saves zeroing 13 MB per tile of 8 filters.
        """
        ty, tx = self.shape
        k = self.kernel_size
        h = k // 2
        n = kernels.shape[0]
        a, x = self.work_buffers(n) if work is None else work
        a[:, :k - h] = kernels[:, h:]
        a[:, ty - h:] = kernels[:, :h]
        cols = sfft.rfft(a, axis=1, workers=1)
        x[:, :, :k - h] = cols[:, :, h:]
        x[:, :, tx - h:] = cols[:, :, :h]
        return sfft.fft(x, axis=2, workers=1)

    def work_buffers(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Zeroed input buffers of :meth:`kernel_hats` for ``n`` kernels: (n, Ty, K) float32
        and (n, Ty//2+1, Tx) complex64."""
        ty, tx = self.shape
        return (np.zeros((n, ty, self.kernel_size), np.float32),
                np.zeros((n, ty // 2 + 1, tx), np.complex64))


@lru_cache(maxsize=8)
def tile_plan(shape: tuple[int, int], kernel_size: int) -> TilePlan:
    """The :class:`TilePlan` for a tile shape (cached per process)."""
    ty, tx = shape
    gy = (2j * np.pi * np.fft.rfftfreq(ty))[:, None].astype(np.complex64)
    gx = (2j * np.pi * np.fft.fftfreq(tx))[None, :].astype(np.complex64)
    return TilePlan(shape=(ty, tx), kernel_size=kernel_size, gx=gx, gy=gy)


def _rfft2(x: np.ndarray) -> np.ndarray:
    """Real 2-D FFT of a (..., Ty, Tx) tile or stack of tiles in the :class:`TilePlan`
    layout (..., Ty//2 + 1, Tx), in one call."""
    return sfft.rfftn(x, axes=(-1, -2), workers=1)


@dataclass(frozen=True)
class ZogyResult:
    """Stitched ZOGY outputs, all (ny, nx) float32 in the flux units of N.

    Attributes
    ----------
    diff : numpy.ndarray
        Difference image ``F_n D / F_D`` (PSF :attr:`psf_diff`, a new source of flux a has
        total flux a).
    diff_var : numpy.ndarray
        Propagated variance of ``diff``.
    score : numpy.ndarray
        ``S_corr`` (sigma units; 0 where the variance is 0).
    flux, flux_err : numpy.ndarray
        PSF flux of a point source centred on each pixel and its 1-sigma error (inf where
        undefined).
    psf_diff : TiledPSF
        PSF of ``diff`` per tile.
    f_s, f_d, sigma_new, sigma_ref : numpy.ndarray
        Per-tile (n_tiles_y, n_tiles_x) values of F_S, F_D and the scalar sigmas used (NaN for
        tiles with no usable pixel).
    score_noise_factor, diff_noise_factor : numpy.ndarray
        Per-tile factors applied to the variances of ``S`` and ``diff`` for correlated input
        noise (1 without ``noise_acf_*``).
    kernels : tuple
        The :class:`ZogyKernels` of each tile, row-major (None for a blank tile).
    kernel_size, border : int
        The filter grid side and the tile overlap used (pixels; :attr:`ZogyConfig.auto_kernel`).
    """

    diff: np.ndarray
    diff_var: np.ndarray
    score: np.ndarray
    flux: np.ndarray
    flux_err: np.ndarray
    psf_diff: TiledPSF
    f_s: np.ndarray
    f_d: np.ndarray
    sigma_new: np.ndarray
    sigma_ref: np.ndarray
    score_noise_factor: np.ndarray
    diff_noise_factor: np.ndarray
    kernels: tuple[ZogyKernels | None, ...] = field(repr=False)
    kernel_size: int = 0
    border: int = 0


def _tile_var(v: np.ndarray, stride: int) -> float:
    """Median of the positive values of a variance tile (sub-sampled by ``stride``)."""
    sub = v[::stride, ::stride].ravel()
    good = sub[sub > 0]
    if good.size < 64:
        good = v[v > 0]
    return float(np.median(good)) if good.size else float("nan")


def _irfft2(x: np.ndarray, ty: int, cols: slice) -> np.ndarray:
    """Inverse of :func:`_rfft2` to a tile of ``ty`` rows, the columns ``cols`` only, of a
    temporary spectrum or stack of spectra (..., Ty//2 + 1, Tx) (its buffer is reused):
    (..., ty, len(cols)) float32, each pass in one call.

    In two steps, the complex inverse along x over the whole spectrum, then the real one
    along y over the wanted (interior) columns only: ~2.2 -> 1.9 ms per 640 x 640 tile, one
    core under load (interleaved, best of 40; ``irfftn`` in one call does the same two
    passes over every column); the result differs from ``irfftn``'s by float32 round-off
    (~2e-7 of the maximum).
    """
    a = sfft.ifft(x, axis=-1, workers=1, overwrite_x=True)
    return sfft.irfft(a[..., cols], n=ty, axis=-2, workers=1, overwrite_x=True)


@njit(cache=True, nogil=True, fastmath=True)
def _spectra(h, nh, rh, vnh, vrh, o_s, o_d, o_vs, o_vd):  # pragma: no cover - numba
    """The four output spectra of a tile in one pass: ``S^ = k_n^ N^ - k_r^ R^``, ``D^``,
    ``V(S)^ = (k_n^2)^ V_n^ + (k_r^2)^ V_r^`` and ``V(D)^`` (``h``: the 8 filter transforms
    in the order k_n, k_r, d_n, d_r and their squares). The outputs may be the inputs
    (``o_s`` is ``nh``, ...: each element is read before it is written)."""
    ny, nx = nh.shape
    for y in range(ny):
        for x in range(nx):
            a, b = nh[y, x], rh[y, x]
            va, vb = vnh[y, x], vrh[y, x]
            o_s[y, x] = h[0, y, x] * a - h[1, y, x] * b
            o_d[y, x] = h[2, y, x] * a - h[3, y, x] * b
            o_vs[y, x] = h[4, y, x] * va + h[5, y, x] * vb
            o_vd[y, x] = h[6, y, x] * va + h[7, y, x] * vb


def _tile_outputs(plan: TilePlan, kern: ZogyKernels, tiles: np.ndarray,
                  astro: tuple[float, float], cols: slice,
                  work: tuple[np.ndarray, np.ndarray] | None = None
                  ) -> tuple[np.ndarray, ...]:
    """diff, diff_var, S, V(S)+V_ast of one tile: float32 (Ty, len(cols)) arrays, the tile's
    columns ``cols``.

    ``tiles`` is the (4, Ty, Tx) float32 stack N, R, V_n, V_r. Transforms: the 4 forward in
    one batched call, the 8 pruned filter transforms in one batch, the 4 inverse (S, D,
    V(S), V(D)) in one batched call per pass (:func:`_irfft2`); 2 more inverse per axis with
    the astrometric term. The output spectra are formed in place of the input spectra.
    """
    ty = plan.shape[0]
    fwd = _rfft2(tiles)
    kn, kr, dn, dr = kern.k_new, kern.k_ref, kern.d_new, kern.d_ref
    h = plan.kernel_hats(np.stack([kn, kr, dn, dr, kn * kn, kr * kr, dn * dn, dr * dr]), work)
    sx, sy = astro
    grads = []
    if sx > 0 or sy > 0:
        sn = h[0] * fwd[0]
        sr = h[1] * fwd[1]
        for sig, g in ((sx, plan.gx), (sy, plan.gy)):
            if sig > 0:
                grads.append((sig, _irfft2(np.stack([sn * g, sr * g]), ty, cols)))
    _spectra(h, fwd[0], fwd[1], fwd[2], fwd[3], fwd[0], fwd[1], fwd[2], fwd[3])
    s, d, vs, vd = _irfft2(fwd, ty, cols)
    for sig, (a, b) in grads:
        vs += np.float32(sig**2) * (a * a + b * b)
    return d, vd, s, vs


def _zero_outside(bufs: np.ndarray, r0: int, r1: int, c0: int, c1: int) -> None:
    """Zero the (4, Ty, Tx) tile buffers outside rows r0:r1, columns c0:c1 (the part of a
    tile beyond the image, which :func:`_fill_tile` does not write): the strips only, not
    the whole 6.5 MB stack of a 640-px tile."""
    bufs[:, :r0] = 0.0
    bufs[:, r1:] = 0.0
    bufs[:, r0:r1, :c0] = 0.0
    bufs[:, r0:r1, c1:] = 0.0


@njit(cache=True, nogil=True)
def _fill_tile(n, r, vn, vr, mask, bits, src_n, src_r, ey0, ey1, ex0, ex1, oy, ox, bn, br, bvn,
               bvr):  # pragma: no cover - numba
    """Copy image rows ey0:ey1, cols ex0:ex1 into the tile buffers at (oy, ox), in-painting
    unusable pixels (value and variance 0) and adding the sources' Poisson variance.

    All in float32 (the variance floor ``0.25 V`` is exact in float32, as it was in float64),
    over row slices: LLVM vectorises the inner loop, ~2.5x faster than indexing (y, x) with
    a float64 floor (32 tiles of a DECam CCD, one core: 0.102 -> 0.039 CPU-s at load 0.3,
    0.13-0.18 -> 0.04-0.06 under load 5-7), bit-identical.
    """
    use_mask = mask.shape[0] == n.shape[0]
    quarter = np.float32(0.25)
    zero = np.float32(0.0)
    w = ex1 - ex0
    for y in range(ey0, ey1):
        ty = y - ey0 + oy
        nrow, rrow = n[y, ex0:ex1], r[y, ex0:ex1]
        vnrow, vrrow = vn[y, ex0:ex1], vr[y, ex0:ex1]
        bnr, brr = bn[ty, ox:ox + w], br[ty, ox:ox + w]
        bvnr, bvrr = bvn[ty, ox:ox + w], bvr[ty, ox:ox + w]
        mrow = mask[y, ex0:ex1] if use_mask else mask[0, :1]
        for x in range(w):
            a, c = nrow[x], rrow[x]
            va, vc = vnrow[x], vrrow[x]
            ok = (va > 0 and vc > 0 and np.isfinite(va) and np.isfinite(vc)
                  and np.isfinite(a) and np.isfinite(c))
            if use_mask and (mrow[x] & bits) != 0:
                ok = False
            if ok:
                bnr[x] = a
                brr[x] = c
                bvnr[x] = max(va + a * src_n, quarter * va)
                bvrr[x] = max(vc + c * src_r, quarter * vc)
            else:
                bnr[x] = zero
                brr[x] = zero
                bvnr[x] = zero
                bvrr[x] = zero


@njit(cache=True, nogil=True)
def _finalise_tile(d, vd, s, vs, vmin, lx, ly, cnode, f_score, f_diff, o_diff, o_dvar, o_score,
                   o_flux, o_ferr):  # pragma: no cover - numba
    """Write one tile interior: diff, diff_var, score, flux, flux_err (one pass).

    The flux normalisation ``c = F_n / F_S`` at pixel (y, x) is
    ``sum_ab ly[a, y] lx[b, x] cnode[a, b]`` (biquadratic Lagrange interpolation). The
    variance of ``S`` is multiplied by ``f_score``, that of ``diff`` by ``f_diff`` (correlated
    input noise; 1 otherwise). Where ``V(S) <= vmin`` the score and flux are 0 and the flux
    error infinite.
    """
    ny, nx = d.shape
    rs = np.sqrt(f_score)
    fd = np.float32(f_diff)
    for y in range(ny):
        c0 = ly[0, y] * cnode[0, 0] + ly[1, y] * cnode[1, 0] + ly[2, y] * cnode[2, 0]
        c1 = ly[0, y] * cnode[0, 1] + ly[1, y] * cnode[1, 1] + ly[2, y] * cnode[2, 1]
        c2 = ly[0, y] * cnode[0, 2] + ly[1, y] * cnode[1, 2] + ly[2, y] * cnode[2, 2]
        for x in range(nx):
            o_diff[y, x] = d[y, x]
            o_dvar[y, x] = max(vd[y, x], np.float32(0.0)) * fd
            w = vs[y, x]
            if w <= vmin:
                o_score[y, x] = 0.0
                o_flux[y, x] = 0.0
                o_ferr[y, x] = np.inf
                continue
            cm = np.float32(c0 * lx[0, x] + c1 * lx[1, x] + c2 * lx[2, x])
            sd = np.float32(np.sqrt(w) * rs)
            o_score[y, x] = s[y, x] / sd
            o_flux[y, x] = s[y, x] * cm
            o_ferr[y, x] = sd * cm


def _lagrange3(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Node offsets (3,) and (3, n) quadratic Lagrange weights at pixels 0..n-1 of a tile side.

    Nodes are the centres of the three thirds of the side.
    """
    h = n / 3.0
    nodes = (np.arange(3) + 0.5) * h - 0.5
    u = np.arange(n, dtype=np.float64)
    l0 = (u - nodes[1]) * (u - nodes[2]) / (2 * h * h)
    l1 = -(u - nodes[0]) * (u - nodes[2]) / (h * h)
    l2 = (u - nodes[0]) * (u - nodes[1]) / (2 * h * h)
    return nodes, np.stack([l0, l1, l2])


def _kernel_size(config: ZogyConfig, pn_src: PSFSource, pr_src: PSFSource, new_var: np.ndarray,
                 ref_var: np.ndarray, f_new: float, f_ref: float,
                 acfs: tuple[np.ndarray | None, np.ndarray | None]) -> int:
    """The filter grid side of :func:`zogy`: ``config.kernel``, or with ``auto_kernel`` the
    :func:`choose_kernel_size` of both PSFs at the image centre and the centres of its corner
    tiles, no smaller than one more than the widest PSF stamp or noise autocorrelation."""
    if not config.auto_kernel or config.kernel_size is not None:
        return config.kernel
    ny, nx = new_var.shape
    t = config.tile
    ys = sorted({0.5 * (min(t, ny) - 1), 0.5 * (ny - 1), 0.5 * ((ny - 1) // t * t + ny - 1)})
    xs = sorted({0.5 * (min(t, nx) - 1), 0.5 * (nx - 1), 0.5 * ((nx - 1) // t * t + nx - 1)})
    pos = [(0.5 * (nx - 1), 0.5 * (ny - 1))] + [(x, y) for y in (ys[0], ys[-1])
                                                 for x in (xs[0], xs[-1])]
    def pair(x: float, y: float) -> PSFPair:
        return (np.asarray(pn_src.render(x, y, size=config.psf_size), np.float64),
                np.asarray(pr_src.render(x, y, size=config.psf_size), np.float64))

    pos = list(dict.fromkeys(pos))
    pairs = [pair(x, y) for x, y in pos]
    h = 0.5 * (min(t, ny, nx) - 1)
    corners = [[pair(x + dx * h, y + dy * h) for dx, dy in ((-1, -1), (1, 1))] for x, y in pos]
    widest = max([max(a.shape[0], c.shape[0]) for a, c in pairs]
                 + [a.shape[0] for a in acfs if a is not None])
    vn = _tile_var(new_var, 16)
    vr = _tile_var(ref_var, 16)
    if not (np.isfinite(vn) and np.isfinite(vr)):
        return config.kernel
    k = choose_kernel_size(pairs, var_new=vn, var_ref=vr, f_new=f_new, f_ref=f_ref,
                           k_max=config.kernel, k_min=widest + 1, corners=corners,
                           tile=min(t, ny, nx))
    log.debug("zogy: filter grid %d px (at most %d)", k, config.kernel)
    return k


def _new_psf_renders(src: PSFSource, ny: int, nx: int, t: int, size: int | None,
                     flux_nodes: bool) -> Callable[[float, float], np.ndarray]:
    """``src.render(x, y, size=size)`` at the positions :func:`zogy` asks of the new image's
    PSF: every tile's centre and, with ``flux_nodes``, its 3 x 3 flux nodes.

    With a ``render_batch`` method (:meth:`desgw.se.psf.PSFModel.render_batch`, bit for bit
    ``render``) all distinct positions are rendered in one call up front (32 tiles: 320
    renders, 288 distinct: the middle node is the tile centre); otherwise, and for any other
    position, the returned function calls ``render``.
    """
    def single(x: float, y: float) -> np.ndarray:
        return np.asarray(src.render(x, y, size=size))

    batch = getattr(src, "render_batch", None)
    if batch is None:
        return single
    pos: dict[tuple[float, float], int] = {}
    for y0 in range(0, ny, t):
        y1 = min(y0 + t, ny)
        nodes_y = _lagrange3(y1 - y0)[0] if flux_nodes else np.zeros(0)
        for x0 in range(0, nx, t):
            x1 = min(x0 + t, nx)
            nodes_x = _lagrange3(x1 - x0)[0] if flux_nodes else np.zeros(0)
            pos.setdefault((0.5 * (x0 + x1 - 1), 0.5 * (y0 + y1 - 1)), len(pos))
            for yn in nodes_y:
                for xn in nodes_x:
                    pos.setdefault((x0 + float(xn), y0 + float(yn)), len(pos))
    xy = np.array(list(pos), dtype=np.float64).reshape(-1, 2)
    stamps = np.asarray(batch(xy[:, 0], xy[:, 1], size=size))

    def lookup(x: float, y: float) -> np.ndarray:
        k = pos.get((float(x), float(y)))
        return single(x, y) if k is None else stamps[k]

    return lookup


def zogy(new: np.ndarray, ref: np.ndarray, new_var: np.ndarray, ref_var: np.ndarray,
         psf_new: PSFSource | np.ndarray, psf_ref: PSFSource | np.ndarray, *,
         f_new: float = 1.0, f_ref: float = 1.0, mask: np.ndarray | None = None,
         mask_bits: int = 0, gain_new: float | None = None, gain_ref: float | None = None,
         noise_acf_new: np.ndarray | None = None, noise_acf_ref: np.ndarray | None = None,
         config: ZogyConfig = ZogyConfig()) -> ZogyResult:
    """ZOGY subtraction ``N - R`` of two registered, background-subtracted images.

    Parameters
    ----------
    new, ref : numpy.ndarray
        (ny, nx) images N and R on the same grid, background subtracted.
    new_var, ref_var : numpy.ndarray
        (ny, nx) per-pixel variances of N and R (image units squared). Without ``gain_*`` they
        must include the sources' Poisson noise for a correct ``S_corr`` at sources.
    psf_new, psf_ref : PSFSource or numpy.ndarray
        PSFs of N and R in the common pixel grid: an object with ``render(x, y, size=None)``
        (0-based CCD position; e.g. :class:`desgw.se.psf.PSFModel`) or a constant stamp.
    f_new, f_ref : float
        Flux scales ``F_n``, ``F_r`` (image units per unit of true flux).
    mask : numpy.ndarray or None
        (ny, nx) integer mask; pixels with any of ``mask_bits`` set are in-painted.
    mask_bits : int
        Bits of ``mask`` that make a pixel unusable.
    gain_new, gain_ref : float or None
        If given, the sources' Poisson variance ``image / gain`` is added to the variance
        maps (the pixel value itself: unbiased, where clipping at 0 would add sigma /
        sqrt(2 pi) in blank sky; the total floored at a quarter of the input variance).
    noise_acf_new, noise_acf_ref : numpy.ndarray or None
        Autocorrelation (odd square stamp, unit centre, sum = the noise correlation factor)
        of the pixel noise of N and of R when it is correlated (e.g. a resampled image);
        None: independent pixels. The variances of ``S`` and ``diff`` are then multiplied per
        tile by the factors of :meth:`ZogyKernels.noise_factors` (in
        :attr:`ZogyResult.score_noise_factor` and :attr:`ZogyResult.diff_noise_factor`).
    config : ZogyConfig

    Unusable pixels (masked, non-finite value or variance, variance <= 0) of either image are
    in-painted in both with 0, the local background after background subtraction, and variance
    0: they carry no data, so the propagated variances stay exact next to them.

    Returns
    -------
    ZogyResult
        Outputs in the flux units of N (``F_n`` x true flux).
    """
    arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in (new, ref, new_var, ref_var)]
    shape = arrays[0].shape
    if any(a.shape != shape or a.ndim != 2 for a in arrays):
        raise ValueError(f"new, ref and variances must share one 2-D shape, got "
                         f"{[a.shape for a in arrays]}")
    if mask is None:
        msk, bits = np.zeros((1, 1), np.int32), 0
    else:
        msk, bits = np.ascontiguousarray(mask, dtype=np.int32), int(mask_bits)
        if msk.shape != shape:
            raise ValueError(f"mask has shape {msk.shape}, expected {shape}")
    src_n = np.float32(0.0 if gain_new is None else 1.0 / gain_new)
    src_r = np.float32(0.0 if gain_ref is None else 1.0 / gain_ref)
    pn_src, pr_src = as_psf_source(psf_new), as_psf_source(psf_ref)
    ny, nx = shape
    t = config.tile
    nty, ntx = -(-ny // t), -(-nx // t)
    k = _kernel_size(config, pn_src, pr_src, arrays[2], arrays[3], f_new, f_ref,
                     (noise_acf_new, noise_acf_ref))
    b = k // 2 if config.auto_kernel and config.kernel_size is None else config.border
    # a grid smaller than the configured one: P_D from the filters by linear convolution (its
    # wings would wrap on the small grid), on the stamp that holds all of it
    shrunk = k < config.kernel
    tshape = (sfft.next_fast_len(min(t, ny) + 2 * b, real=True),
              sfft.next_fast_len(min(t, nx) + 2 * b, real=True))
    plan = tile_plan(tshape, k)
    names = ("diff", "diff_var", "score", "flux", "flux_err")
    out = {name: np.empty(shape, np.float32) for name in names}
    per_tile = {name: np.full((nty, ntx), np.nan) for name in ("f_s", "f_d", "sn", "sr")}
    f_score_t, f_diff_t = np.ones((nty, ntx)), np.ones((nty, ntx))
    acf_n = None if noise_acf_new is None else acf_hat(noise_acf_new, k)
    acf_r = None if noise_acf_ref is None else acf_hat(noise_acf_ref, k)
    kernels: list[ZogyKernels | None] = []
    psf_size = config.psf_size
    stamps: list[np.ndarray | None] = []
    bufs = np.zeros((4, *tshape), np.float32)  # N, R, V_n, V_r of a tile
    work = plan.work_buffers(8)  # the filters' zero-padded transform inputs, for every tile
    bn, br, bvn, bvr = bufs
    new_stamps = _new_psf_renders(pn_src, ny, nx, t, psf_size, config.flux_nodes)
    for j in range(nty):
        for i in range(ntx):
            y0, x0 = j * t, i * t
            y1, x1 = min(y0 + t, ny), min(x0 + t, nx)
            box = (slice(y0, y1), slice(x0, x1))
            ey0, ex0 = max(y0 - b, 0), max(x0 - b, 0)
            ey1, ex1 = min(y0 - b + tshape[0], ny), min(x0 - b + tshape[1], nx)
            oy, ox = ey0 - (y0 - b), ex0 - (x0 - b)
            _zero_outside(bufs, oy, oy + ey1 - ey0, ox, ox + ex1 - ex0)
            _fill_tile(arrays[0], arrays[1], arrays[2], arrays[3], msk, np.int32(bits), src_n,
                       src_r, ey0, ey1, ex0, ex1, oy, ox, bn, br, bvn, bvr)
            inner = (slice(b, b + y1 - y0), slice(b, b + x1 - x0))
            vn_s = _tile_var(bufs[2][inner], config.sigma_stride)
            vr_s = _tile_var(bufs[3][inner], config.sigma_stride)
            if not (np.isfinite(vn_s) and np.isfinite(vr_s)):
                log.info("zogy: tile (%d, %d) has no usable pixel; left blank", j, i)
                for name in names:
                    out[name][box] = np.inf if name == "flux_err" else 0.0
                stamps.append(None)
                kernels.append(None)
                continue
            xc, yc = 0.5 * (x0 + x1 - 1), 0.5 * (y0 + y1 - 1)
            pn = np.asarray(new_stamps(xc, yc), np.float64)
            pr = np.asarray(pr_src.render(xc, yc, size=psf_size), np.float64)
            kern = zogy_kernels(pn, pr, var_new=vn_s, var_ref=vr_s, f_new=f_new, f_ref=f_ref,
                                kernel_size=k, linear_psf_diff=shrunk)
            d, vd, s, vs = _tile_outputs(plan, kern, bufs, config.astrometric_sigma,
                                         slice(b, b + x1 - x0), work)
            sl = (slice(b, b + y1 - y0), slice(None))
            # V(S) = F_S for variance maps equal to the tile scalars; far below that the
            # true value is 0 (all inputs in-painted) and only FFT round-off is left.
            nodes_y, ly = _lagrange3(y1 - y0)
            nodes_x, lx = _lagrange3(x1 - x0)
            cnode = np.full((3, 3), kern.f_new / kern.f_s)
            if config.flux_nodes:
                for a, yn in enumerate(nodes_y):
                    for bb, xn in enumerate(nodes_x):
                        st = new_stamps(x0 + xn, y0 + yn)
                        cnode[a, bb] = kern.f_new / kern.response_new(np.asarray(st, float))
            if acf_n is not None or acf_r is not None:
                f_score_t[j, i], f_diff_t[j, i] = kern.noise_factors(acf_n, acf_r)
            _finalise_tile(d[sl], vd[sl], s[sl], vs[sl], np.float32(1e-5 * kern.f_s), lx, ly,
                           cnode, float(f_score_t[j, i]), float(f_diff_t[j, i]),
                           *(out[name][box] for name in names))
            kernels.append(kern)
            per_tile["f_s"][j, i], per_tile["f_d"][j, i] = kern.f_s, kern.f_d
            per_tile["sn"][j, i], per_tile["sr"][j, i] = kern.sigma_new, kern.sigma_ref
            stamps.append(kern.psf_diff)
    good = [st for st in stamps if st is not None]
    if not good:
        raise ValueError("zogy: no tile has a usable pixel (all variances are 0)")
    size = max(st.shape[0] for st in good)
    fill = fit_stamp(good[0], size).astype(np.float32)
    psf_stack = np.stack([fit_stamp(st, size).astype(np.float32) if st is not None else fill
                          for st in stamps]).reshape(nty, ntx, size, size)
    psf_d = TiledPSF(stamps=psf_stack, tile=t, image_shape=(ny, nx))
    return ZogyResult(diff=out["diff"], diff_var=out["diff_var"], score=out["score"],
                      flux=out["flux"], flux_err=out["flux_err"], psf_diff=psf_d,
                      f_s=per_tile["f_s"], f_d=per_tile["f_d"], sigma_new=per_tile["sn"],
                      sigma_ref=per_tile["sr"], score_noise_factor=f_score_t,
                      diff_noise_factor=f_diff_t, kernels=tuple(kernels),
                      kernel_size=int(k), border=int(b))
