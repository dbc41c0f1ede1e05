"""Detection efficiency of fakes versus magnitude, and the ideal limiting magnitude.

Efficiency (:func:`efficiency_curve`)
-------------------------------------
The recovered fraction of fakes per magnitude bin, with Wilson score intervals (a binomial
interval that stays inside [0, 1] and behaves at 0 and 100 %), and an unbinned
maximum-likelihood fit (each fake a Bernoulli trial) of one of two models::

    logistic:  eff(m) = A / (1 + exp((m - m50) / w))
    erf:       eff(m) = A * 0.5 * erfc((m - m50) / (sqrt(2) w))

``A`` is the plateau (bright-end efficiency, <= 1), ``m50`` the magnitude where the efficiency
is half the plateau and ``w`` the width (mag). Parameter errors are the square roots of the
diagonal of the inverse Fisher information ``I = sum_i grad p_i grad p_i^T / (p_i (1 - p_i))``.

Ideal limit (:func:`ideal_limit_mag`)
-------------------------------------
The 5-sigma PSF-fit limit of a difference image in background-limited white noise. A
PSF-weighted flux ``F = sum P D / sum P^2`` on an image with per-pixel noise ``sigma`` has
``var F = sigma^2 NEA`` with the noise-equivalent area ``NEA = 1 / sum P^2`` (pixel-integrated
PSF of unit sum). For a Gaussian PSF ``NEA = 4 pi (s^2 + 1/12)`` (``s = FWHM / 2.3548`` px; the
1/12 px^2 is the pixel response); for a Moffat ``NEA = pi a^2 (2 beta - 1) / (beta - 1)^2``
before pixelisation (here computed numerically on a pixel grid for both).

Template noise after PSF matching: the image with the narrower PSF (usually the template) is
convolved with a kernel ``K`` to the wider PSF ``P``; its white noise ``sigma_t`` becomes
correlated, and its contribution to the PSF-fit flux variance is
``sigma_t^2 sum (P * K)^2 / (sum P^2)^2``. With Gaussians (``s_K^2 = s_P^2 - s_narrow^2``)
this is ``sigma_t^2 NEA f`` with::

    f = (s_P^2 + 1/12) / (2 s_P^2 - s_narrow^2 + 1/12)

so ``f = 1`` for equal PSFs (no smoothing) and ``f -> 1/2`` for a much sharper template. In
total ``sigma_F^2 = NEA (sigma_wide^2 + f sigma_narrow^2)``, ``F_lim = nsigma sigma_F`` and
``m_lim = -2.5 log10(F_lim) + zp``. The noise of the source itself is not included: a source
of flux ``F_lim`` is found half of the time whatever its own Poisson noise, so ``m_lim`` is
the ideal ``m50`` of a ``nsigma`` detection threshold (the Moffat factor ``f`` uses the
Gaussian formula with the same FWHM, an approximation good to a few per cent).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from astropy.table import Table
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize
from scipy.special import erf, erfc

__all__ = [
    "EFFICIENCY_MODELS",
    "EfficiencyCurve",
    "IdealLimit",
    "efficiency_curve",
    "efficiency_model",
    "ideal_limit_mag",
    "noise_equivalent_area",
    "wilson_interval",
]

log = logging.getLogger(__name__)

#: Fit models of :func:`efficiency_curve`.
EFFICIENCY_MODELS: tuple[str, ...] = ("logistic", "erf")

_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


@dataclass(frozen=True)
class EfficiencyCurve:
    """Result of :func:`efficiency_curve`.

    Attributes
    ----------
    table : astropy.table.Table
        Per bin: ``mag_lo``, ``mag_hi``, ``mag`` (mean magnitude of the fakes in the bin),
        ``n``, ``n_recovered``, ``efficiency``, ``err_lo``, ``err_hi`` (Wilson interval
        bounds minus/plus, i.e. ``efficiency - lower`` and ``upper - efficiency``),
        ``model`` (the fit at ``mag``). ``meta`` repeats the fit results.
    model : str
        ``"logistic"`` or ``"erf"``.
    m50, m50_err : float
        Magnitude of half the plateau efficiency and its 1-sigma error (mag).
    width, width_err : float
        Transition width (mag).
    plateau, plateau_err : float
        Bright-end efficiency; ``plateau_err`` is 0 when it was fixed or hit 1.
    n_fakes : int
        Fakes used.
    converged : bool
        Whether the optimiser reported success.
    """

    table: Table
    model: str
    m50: float
    m50_err: float
    width: float
    width_err: float
    plateau: float
    plateau_err: float
    n_fakes: int
    converged: bool

    def __call__(self, mag: ArrayLike) -> NDArray[np.float64]:
        """The fitted efficiency at ``mag``."""
        return efficiency_model(mag, self.m50, self.width, self.plateau, model=self.model)


@dataclass(frozen=True)
class IdealLimit:
    """Result of :func:`ideal_limit_mag`.

    Attributes
    ----------
    mag : float
        Limiting magnitude (AB) of an ``nsigma`` PSF-fit detection.
    flux_e : float
        Limiting flux (e-).
    flux_err_e : float
        1-sigma PSF-fit flux error (e-) on the difference image.
    nea_pix : float
        Noise-equivalent area of the difference-image PSF (px).
    template_noise_factor : float
        ``f``: the PSF-matched image's variance enters as ``f sigma^2 NEA``.
    difference_fwhm_px : float
        FWHM of the difference-image PSF (the wider of the two).
    """

    mag: float
    flux_e: float
    flux_err_e: float
    nea_pix: float
    template_noise_factor: float
    difference_fwhm_px: float


# ----------------------------------------------------------------------------- efficiency
def wilson_interval(k: ArrayLike, n: ArrayLike, *, z: float = 1.0
                    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Wilson score interval of a binomial proportion ``k / n``.

    Parameters
    ----------
    k, n : array_like
        Successes and trials (``n > 0``).
    z : float
        Normal quantile (1.0: 68.3 % interval).

    Returns
    -------
    (lower, upper) : numpy.ndarray
        Interval bounds in [0, 1]; NaN where ``n == 0``.
    """
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k / n
        denom = 1.0 + z * z / n
        centre = (p + z * z / (2 * n)) / denom
        half = z / denom * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)


def _shape(t: NDArray[np.float64], model: str) -> tuple[NDArray[np.float64],
                                                        NDArray[np.float64]]:
    """s(t) and -ds/dt for the model."""
    if model == "logistic":
        s = 0.5 * (1.0 - np.tanh(0.5 * t))  # 1 / (1 + e^t), overflow-free
        return s, s * (1.0 - s)
    if model == "erf":
        return 0.5 * erfc(t / math.sqrt(2.0)), np.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi)
    raise ValueError(f"model must be one of {EFFICIENCY_MODELS}, got {model!r}")


def efficiency_model(mag: ArrayLike, m50: float, width: float, plateau: float = 1.0, *,
                     model: str = "logistic") -> NDArray[np.float64]:
    """Efficiency model (see the module docstring) at magnitudes ``mag``."""
    t = (np.asarray(mag, dtype=np.float64) - m50) / width
    return plateau * _shape(t, model)[0]


def efficiency_curve(mags: ArrayLike, recovered: ArrayLike, *,
                     bins: int | Sequence[float] | NDArray[np.float64] = 20,
                     model: str = "logistic", fit_plateau: bool = True,
                     z: float = 1.0) -> EfficiencyCurve:
    """Binned efficiency with Wilson errors and an unbinned fit giving ``m50``.

    Parameters
    ----------
    mags : array_like
        (n,) fake magnitudes (AB).
    recovered : array_like
        (n,) bool, fake found.
    bins : int or array_like
        Number of equal bins over the magnitude range, or bin edges (mag).
    model : {"logistic", "erf"}
        Fit model.
    fit_plateau : bool
        Fit the bright-end efficiency ``A`` (else ``A = 1``).
    z : float
        Normal quantile of the Wilson interval (1.0: 68.3 %).

    Returns
    -------
    EfficiencyCurve

    Raises
    ------
    ValueError
        Shapes differ, fewer than 10 fakes, or all or none recovered (no transition to fit).
    """
    m = np.asarray(mags, dtype=np.float64).ravel()
    r = np.asarray(recovered, dtype=bool).ravel()
    if m.shape != r.shape:
        raise ValueError(f"mags {m.shape} and recovered {r.shape} differ in shape")
    good = np.isfinite(m)
    m, r = m[good], r[good]
    if m.size < 10:
        raise ValueError(f"need at least 10 fakes with finite magnitudes, got {m.size}")
    if r.all() or not r.any():
        raise ValueError("all or none of the fakes were recovered: no efficiency transition "
                         "to fit")
    _shape(np.zeros(1), model)  # validates the model name
    edges = (np.linspace(m.min(), m.max() + 1e-9, int(np.asarray(bins)) + 1) if np.ndim(bins) == 0
             else np.asarray(bins, dtype=np.float64))
    idx = np.digitize(m, edges) - 1
    nb = edges.size - 1
    inside = (idx >= 0) & (idx < nb)
    n = np.bincount(idx[inside], minlength=nb)
    k = np.bincount(idx[inside], weights=r[inside].astype(float), minlength=nb)
    msum = np.bincount(idx[inside], weights=m[inside], minlength=nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        eff = k / n
        mcen = np.where(n > 0, msum / np.maximum(n, 1), 0.5 * (edges[:-1] + edges[1:]))
    lo, hi = wilson_interval(k, n, z=z)

    # ---- unbinned maximum likelihood
    plateau0 = float(np.clip(np.nanmax(eff) if np.any(n > 0) else 1.0, 0.05, 1.0))
    below = np.flatnonzero((n > 0) & (eff < 0.5 * plateau0))
    m50_0 = float(mcen[below[0]]) if below.size else float(np.median(m))
    lo_m, hi_m = float(m.min()) - 2.0, float(m.max()) + 2.0
    eps = 1e-12

    def nll(theta: NDArray[np.float64]) -> float:
        a = theta[2] if fit_plateau else 1.0
        p = np.clip(efficiency_model(m, theta[0], theta[1], a, model=model), eps, 1 - eps)
        return float(-np.sum(np.where(r, np.log(p), np.log1p(-p))))

    x0 = np.array([m50_0, 0.2, plateau0] if fit_plateau else [m50_0, 0.2])
    bounds = [(lo_m, hi_m), (0.005, 5.0)] + ([(0.01, 1.0)] if fit_plateau else [])
    res = minimize(nll, x0, method="L-BFGS-B", bounds=bounds)
    # polish from the optimum (L-BFGS-B can stop early on flat likelihoods)
    res = minimize(nll, res.x, method="L-BFGS-B", bounds=bounds)
    m50, width = float(res.x[0]), float(res.x[1])
    plateau = float(res.x[2]) if fit_plateau else 1.0

    # ---- Fisher information
    t = (m - m50) / width
    s, ds = _shape(t, model)
    p = np.clip(plateau * s, eps, 1 - eps)
    grads = [plateau * ds / width, plateau * ds * t / width]
    free_plateau = fit_plateau and plateau < 1.0 - 1e-6
    if free_plateau:
        grads.append(s)
    g = np.stack(grads)
    info = (g / (p * (1 - p))) @ g.T
    try:
        cov = np.linalg.inv(info)
        errs = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    except np.linalg.LinAlgError:
        errs = np.full(len(grads), np.nan)
    table = Table({"mag_lo": edges[:-1], "mag_hi": edges[1:], "mag": mcen, "n": n,
                   "n_recovered": k.astype(np.int64), "efficiency": eff,
                   "err_lo": np.clip(eff - lo, 0.0, None), "err_hi": np.clip(hi - eff, 0.0, None),
                   "model": efficiency_model(mcen, m50, width, plateau, model=model)})
    result = EfficiencyCurve(table=table, model=model, m50=m50, m50_err=float(errs[0]),
                             width=width, width_err=float(errs[1]), plateau=plateau,
                             plateau_err=float(errs[2]) if free_plateau else 0.0,
                             n_fakes=int(m.size), converged=bool(res.success))
    table.meta.update({"MODEL": model, "M50": m50, "M50_ERR": result.m50_err,
                       "WIDTH": width, "PLATEAU": plateau, "N_FAKES": int(m.size)})
    if not res.success:
        log.warning("efficiency fit did not converge: %s", res.message)
    return result


# ----------------------------------------------------------------------------- ideal limit
def noise_equivalent_area(fwhm_px: float, *, profile: str = "gaussian",
                          moffat_beta: float = 3.0, oversample: int = 9) -> float:
    """``1 / sum P^2`` of a pixel-integrated, unit-sum PSF (px).

    Parameters
    ----------
    fwhm_px : float
        PSF FWHM (px).
    profile : {"gaussian", "moffat"}
        Profile shape.
    moffat_beta : float
        Moffat index (> 1).
    oversample : int
        Sub-pixels per pixel side for the pixel integration.
    """
    if not fwhm_px > 0:
        raise ValueError(f"fwhm_px must be > 0, got {fwhm_px}")
    half = math.ceil(6.0 * fwhm_px) + 2
    if profile == "gaussian":
        s = fwhm_px / _FWHM_PER_SIGMA
        edges = np.arange(-half - 0.5, half + 1.0, 1.0)
        c = 0.5 * erf(edges / (math.sqrt(2.0) * s))
        p1 = np.diff(c)
        p1 /= p1.sum()
        return float(1.0 / (np.sum(p1 ** 2) ** 2))  # separable: sum P^2 = (sum p1^2)^2
    if profile == "moffat":
        if not moffat_beta > 1:
            raise ValueError("moffat_beta must be > 1")
        alpha = fwhm_px / (2.0 * math.sqrt(2.0 ** (1.0 / moffat_beta) - 1.0))
        half = max(half, math.ceil(12.0 * fwhm_px))
        sub = (np.arange((2 * half + 1) * oversample) + 0.5) / oversample - (half + 0.5)
        r2 = sub[:, None] ** 2 + sub[None, :] ** 2
        f = (1.0 + r2 / alpha ** 2) ** (-moffat_beta)
        n = 2 * half + 1
        pix = f.reshape(n, oversample, n, oversample).sum(axis=(1, 3))
        pix /= pix.sum()
        return float(1.0 / np.sum(pix ** 2))
    raise ValueError(f"profile must be 'gaussian' or 'moffat', got {profile!r}")


def ideal_limit_mag(search_noise: float, template_noise: float, psf_fwhm: float, zp: float, *,
                    template_fwhm: float | None = None, nsigma: float = 5.0,
                    profile: str = "gaussian", moffat_beta: float = 3.0,
                    psf_stamp: ArrayLike | None = None) -> IdealLimit:
    """Magnitude of an ``nsigma`` PSF-fit detection on the difference image (formula above).

    Parameters
    ----------
    search_noise : float
        Per-pixel white-noise sigma of the search image (e-; sky + read noise).
    template_noise : float
        Per-pixel white-noise sigma of the template *on the search photometric scale*
        (e-, i.e. already multiplied by ``10**(0.4 (zp_search - zp_template))``), before PSF
        matching. 0 for a noiseless template.
    psf_fwhm : float
        Search PSF FWHM (px).
    zp : float
        Search zeropoint (``m_AB = -2.5 log10(FLUX_e) + zp``).
    template_fwhm : float or None
        Template PSF FWHM (px); default equal to ``psf_fwhm``. The image with the narrower PSF
        is the one convolved.
    nsigma : float
        Detection threshold (sigma of the PSF-fit flux).
    profile : {"gaussian", "moffat"}
        PSF profile for the noise-equivalent area.
    moffat_beta : float
        Moffat index when ``profile="moffat"``.
    psf_stamp : array_like or None
        A rendered difference-image PSF stamp (any normalisation); if given its
        ``1 / sum P^2`` (after normalising to unit sum) is the NEA, overriding ``profile``.

    Returns
    -------
    IdealLimit
    """
    for name, v in (("search_noise", search_noise), ("template_noise", template_noise)):
        if not (np.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be finite and >= 0, got {v}")
    if not nsigma > 0:
        raise ValueError("nsigma must be > 0")
    t_fwhm = float(psf_fwhm if template_fwhm is None else template_fwhm)
    s_fwhm = float(psf_fwhm)
    if s_fwhm >= t_fwhm:  # template convolved to the search PSF
        wide_fwhm, narrow_fwhm = s_fwhm, t_fwhm
        wide_noise, narrow_noise = float(search_noise), float(template_noise)
    else:  # search convolved to the template PSF
        wide_fwhm, narrow_fwhm = t_fwhm, s_fwhm
        wide_noise, narrow_noise = float(template_noise), float(search_noise)
    sw2 = (wide_fwhm / _FWHM_PER_SIGMA) ** 2
    sn2 = (narrow_fwhm / _FWHM_PER_SIGMA) ** 2
    f = (sw2 + 1.0 / 12.0) / (2.0 * sw2 - sn2 + 1.0 / 12.0)
    if psf_stamp is not None:
        st = np.asarray(psf_stamp, dtype=np.float64)
        st = st / st.sum()
        nea = float(1.0 / np.sum(st ** 2))
    else:
        nea = noise_equivalent_area(wide_fwhm, profile=profile, moffat_beta=moffat_beta)
    flux_err = math.sqrt(nea * (wide_noise ** 2 + f * narrow_noise ** 2))
    if flux_err == 0:
        raise ValueError("zero noise: the limiting magnitude is infinite")
    flux = nsigma * flux_err
    return IdealLimit(mag=-2.5 * math.log10(flux) + float(zp), flux_e=flux, flux_err_e=flux_err,
                      nea_pix=nea, template_noise_factor=f, difference_fwhm_px=wide_fwhm)
