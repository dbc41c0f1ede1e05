"""A nominal zeropoint of a DECam CCD from the instrument alone: the last-resort calibration.

When no zeropoint can be measured (no usable Gaia star on the CCD) and no flux ratio to
another epoch either (the difference imaging's relative scale, :mod:`desgw.diff.relscale`),
the zeropoint can still be predicted from what is known of the instrument and the night:

    zp = ZP_1(band) + 2.5 log10(T_ccd / T_avg) - k(band) (X - 1) + 2.5 log10(t_exp)

* ``ZP_1``: the AB magnitude giving 1 e-/s at airmass 1 for the focal-plane average
  (:data:`desgw.se.quality.NOMINAL_ZP`: DES's fitted zeropoints of season 57373, i.e. DECam's
  measured on-sky throughput);
* ``T_ccd / T_avg``: the CCD's response relative to the average, from DECam's per-detector
  throughput curves (:func:`desgw.instrument.throughput.relative_ccd_throughput`,
  photon-weighted; within +-1.5 %). The curves' absolute scale is not an efficiency, so the
  band's absolute level comes from ``ZP_1``, not from integrating them;
* ``k``: the standard extinction coefficient of the band (:data:`desgw.se.quality.
  EXTINCTION`, mag per airmass) and ``X`` the airmass;
* ``t_exp``: the exposure time. desgw's images are in electrons, so the gain does not enter
  (a zeropoint of an image in ADU adds ``2.5 log10(gain)``).

It assumes a clear sky: clouds make the true zeropoint fainter. Its error,
:data:`NOMINAL_ZP_ERROR`, is the scatter measured against the official Legacy Surveys
zeropoints (``ccdzpt``) of the 21 real DECam Community Pipeline cut-outs in
``shared/realdata`` (g, r, z; 2013-2018; airmass 1.34-2.19): nominal minus ccdzpt (for e-)
has mean +0.004 mag and rms 0.152 mag, extremes -0.172 and +0.356 (a cloudy exposure);
``tests/realdata/test_realdata_nominal_zp.py`` checks it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from desgw.errors import NoWorkFoundError
from desgw.instrument.bands import validate_band
from desgw.instrument.throughput import has_throughput, relative_ccd_throughput

from .quality import NOMINAL_ZP, nominal_zeropoint

__all__ = ["NOMINAL_ZP_ERROR", "NominalZeropoint", "NominalZeropointError",
           "nominal_ccd_zeropoint"]

#: 1-sigma error of a nominal zeropoint (mag): rms of nominal minus official ccdzpt over the
#: shared real CP cut-outs (module docstring).
NOMINAL_ZP_ERROR = 0.15


class NominalZeropointError(NoWorkFoundError, ValueError):
    """A nominal zeropoint cannot be computed (unknown band, CCD, exposure time or airmass):
    there is nothing to predict it from, and retrying does not help."""


@dataclass(frozen=True)
class NominalZeropoint:
    """A predicted zeropoint (module docstring).

    Attributes
    ----------
    zp : float
        AB magnitude of 1 e- summed over the exposure (desgw's zeropoint convention).
    zp_err : float
        Its 1-sigma error (mag), :data:`NOMINAL_ZP_ERROR`.
    zp_per_second : float
        AB magnitude giving 1 e-/s at the exposure's airmass.
    ccd_offset : float
        ``2.5 log10(T_ccd / T_avg)`` (mag).
    airmass : float
    exptime : float
        Seconds.
    """

    zp: float
    zp_err: float
    zp_per_second: float
    ccd_offset: float
    airmass: float
    exptime: float


def nominal_ccd_zeropoint(band: str, ccdnum: int, exptime: float,
                          airmass: float) -> NominalZeropoint:
    """The nominal clear-sky zeropoint of one CCD of an exposure (module docstring).

    Parameters
    ----------
    band : str
        DES band (g, r, i, z, Y).
    ccdnum : int
        DECam CCD number (1-62).
    exptime : float
        Exposure time (s), > 0.
    airmass : float
        Airmass (>= 1).

    Returns
    -------
    NominalZeropoint

    Raises
    ------
    NominalZeropointError
        A band without a nominal zeropoint or throughput curves, a CCD number outside 1-62,
        a non-positive exposure time or an airmass below 1 or not finite.
    """
    try:
        validate_band(band, tuple(NOMINAL_ZP), what="band with a nominal zeropoint")
    except ValueError as exc:
        raise NominalZeropointError(str(exc)) from None
    if not has_throughput(band):
        raise NominalZeropointError(f"no DECam throughput curves for band {band!r}")
    if not 1 <= int(ccdnum) <= 62:
        raise NominalZeropointError(f"CCD number {ccdnum} is not a DECam science CCD (1-62)")
    t = float(exptime)
    if not (math.isfinite(t) and t > 0):
        raise NominalZeropointError(f"exposure time must be > 0 s, got {exptime!r}")
    x = float(airmass)
    if not (math.isfinite(x) and x >= 1.0):
        raise NominalZeropointError(f"airmass must be finite and >= 1, got {airmass!r}")
    offset = 2.5 * math.log10(float(relative_ccd_throughput(band)[int(ccdnum) - 1]))
    per_s = nominal_zeropoint(band, x) + offset
    return NominalZeropoint(zp=per_s + 2.5 * math.log10(t), zp_err=NOMINAL_ZP_ERROR,
                            zp_per_second=per_s, ccd_offset=offset, airmass=x, exptime=t)
