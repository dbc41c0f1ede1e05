"""Light curves of the simulated sky: explosive transients and periodic variable stars.

Transients (kilonova-like and SN-like) share one analytic flux model per band::

    f(t) = 0                                                 t <= t_expl
    f(t) = A * (1 - exp(-dt / tau_rise)) * exp(-dt / tau_fall)   dt = t - t_expl > 0

It is zero before the explosion, rises on ``tau_rise`` and, after the peak at
``dt_peak = tau_rise * ln(1 + tau_fall / tau_rise)``, fades by ``1.0857 / tau_fall`` mag per day;
``A`` is set so that the peak magnitude in the band is ``m_peak``. Per-band peak offsets and
decline rates make kilonovae blue at first and red later (g fades fastest), after the
AT2017gfo-like behaviour (peak M ~ -16, fading ~0.5-1 mag/day in griz).

Variable stars are periodic: ``m(t) = m_mean + 0.5 * amp_band * s(phase)`` with ``s`` in [-1, 1]
either a sine or an RR Lyrae-like sawtooth (fast brightening over 15 % of the period, slow
fading); ``amp`` is the peak-to-peak amplitude in r, scaled per band by `VARIABLE_AMP_SCALE`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..instrument.bands import DES_BANDS

__all__ = [
    "BANDS",
    "KILONOVA_PEAK_OFFSET",
    "KILONOVA_DECLINE",
    "SN_PEAK_OFFSET",
    "SN_DECLINE",
    "VARIABLE_AMP_SCALE",
    "rise_fall_peak_dt",
    "rise_fall_mag",
    "periodic_shape",
    "variable_mag",
]

#: Band order used for per-band parameter arrays.
BANDS: tuple[str, ...] = DES_BANDS

#: Kilonova peak magnitude minus r-band peak magnitude (blue at peak).
KILONOVA_PEAK_OFFSET: dict[str, float] = {"g": -0.2, "r": 0.0, "i": 0.1, "z": 0.2, "Y": 0.3}
#: Kilonova decline rate after peak (mag/day), before the per-object random scale.
KILONOVA_DECLINE: dict[str, float] = {"g": 1.0, "r": 0.75, "i": 0.6, "z": 0.5, "Y": 0.4}
#: SN-like peak magnitude minus r-band peak magnitude.
SN_PEAK_OFFSET: dict[str, float] = {"g": 0.1, "r": 0.0, "i": 0.15, "z": 0.2, "Y": 0.25}
#: SN-like decline rate after peak (mag/day).
SN_DECLINE: dict[str, float] = {"g": 0.07, "r": 0.045, "i": 0.035, "z": 0.03, "Y": 0.03}
#: Variable-star amplitude in a band relative to r (pulsators vary most in the blue).
VARIABLE_AMP_SCALE: dict[str, float] = {"g": 1.3, "r": 1.0, "i": 0.8, "z": 0.7, "Y": 0.65}



def rise_fall_peak_dt(tau_rise: ArrayLike, tau_fall: ArrayLike) -> NDArray[np.float64]:
    """Days from explosion to peak flux of the rise/fall model (same shape as the inputs)."""
    tr = np.asarray(tau_rise, dtype=np.float64)
    tf = np.asarray(tau_fall, dtype=np.float64)
    return tr * np.log1p(tf / tr)


def _shape(dt: NDArray[np.float64], tr: NDArray[np.float64], tf: NDArray[np.float64]) -> NDArray[np.float64]:
    return -np.expm1(-dt / tr) * np.exp(-dt / tf)


def rise_fall_mag(mjd: ArrayLike, t_expl: ArrayLike, m_peak: ArrayLike, tau_rise: ArrayLike,
                  tau_fall: ArrayLike) -> NDArray[np.float64]:
    """Magnitude of the rise/fall transient model at ``mjd``.

    Parameters
    ----------
    mjd : array_like or float
        Time of observation (MJD).
    t_expl : array_like, shape (N,)
        Explosion time (MJD).
    m_peak : array_like, shape (N,)
        Peak magnitude in the band (AB).
    tau_rise, tau_fall : array_like, shape (N,)
        Flux rise and fall time scales (days), ``tau_fall > 0``, ``tau_rise > 0``.

    Returns
    -------
    ndarray of float64, shape (N,)
        AB magnitude; NaN at and before the explosion (the source is not there).
    """
    t = np.asarray(mjd, dtype=np.float64)
    t0, mp, tr, tf = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64)
                                           for a in (t_expl, m_peak, tau_rise, tau_fall)))
    dt = t - t0
    out = np.full(np.broadcast(dt, mp).shape, np.nan)
    live = np.broadcast_to(dt > 0, out.shape)
    if np.any(live):
        dtl = np.broadcast_to(dt, out.shape)[live]
        trl, tfl = tr[live], tf[live]
        peak = _shape(rise_fall_peak_dt(trl, tfl), trl, tfl)
        with np.errstate(divide="ignore"):
            out[live] = mp[live] - 2.5 * np.log10(_shape(dtl, trl, tfl) / peak)
    return out


def periodic_shape(phase: ArrayLike, kind: ArrayLike) -> NDArray[np.float64]:
    """Normalised variability shape in [-1, 1] (+1 faintest) at ``phase`` in [0, 1).

    ``kind`` 0: sine; 1: RR Lyrae-like sawtooth (brightens over the first 15 % of the period
    from +1 to -1, then fades linearly back).
    """
    ph = np.mod(np.asarray(phase, dtype=np.float64), 1.0)
    k = np.asarray(kind)
    sine = np.sin(2.0 * np.pi * ph)
    rise = 0.15
    saw = np.where(ph < rise, 1.0 - 2.0 * ph / rise, -1.0 + 2.0 * (ph - rise) / (1.0 - rise))
    return np.where(k == 1, saw, sine)


def variable_mag(mjd: float, band: str, mean_mag: ArrayLike, amp_r: ArrayLike, period_d: ArrayLike,
                 t0: ArrayLike, kind: ArrayLike) -> NDArray[np.float64]:
    """Magnitude of periodic variables at ``mjd`` in ``band``.

    Parameters
    ----------
    mjd : float
        Time (MJD).
    band : str
        One of `BANDS`.
    mean_mag : array_like, shape (N,)
        Mean magnitude in ``band`` (AB).
    amp_r : array_like, shape (N,)
        Peak-to-peak amplitude in r (mag).
    period_d : array_like, shape (N,)
        Period (days).
    t0 : array_like, shape (N,)
        Epoch of phase 0 (MJD).
    kind : array_like of int, shape (N,)
        Shape code of `periodic_shape`.

    Returns
    -------
    ndarray of float64, shape (N,)
    """
    phase = (mjd - np.asarray(t0, dtype=np.float64)) / np.asarray(period_d, dtype=np.float64)
    amp = np.asarray(amp_r, dtype=np.float64) * VARIABLE_AMP_SCALE[band]
    return np.asarray(mean_mag, dtype=np.float64) + 0.5 * amp * periodic_shape(phase, kind)
