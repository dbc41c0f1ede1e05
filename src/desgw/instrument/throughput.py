"""DECam's per-detector system throughput (``data/{band}_band_per_detector_throughput.fits``).

The files hold, per band, the throughput against wavelength averaged over the focal plane and
for each of the 62 science CCDs (column ``throughput_ccd``, index ``CCDNUM - 1``). Their
absolute normalisation is not a physical efficiency (the z curve peaks at 1.04), so only
ratios are taken from them: :func:`relative_ccd_throughput` is the response of each CCD in a
band relative to the focal-plane average.
"""

from __future__ import annotations

import functools
import logging

import numpy as np
from numpy.typing import NDArray

from .camera import _data_file

__all__ = ["has_throughput", "relative_ccd_throughput"]

log = logging.getLogger(__name__)

_N_CCDS = 62


def _file_name(band: str) -> str:
    return f"{band}_band_per_detector_throughput.fits"


def has_throughput(band: str) -> bool:
    """Whether the package has per-detector throughput curves for ``band``."""
    return bool(_data_file(_file_name(band)).is_file())


@functools.cache
def relative_ccd_throughput(band: str, *, per_photon: bool = True) -> NDArray[np.float64]:
    """Response of each science CCD in a band relative to the focal-plane average.

    Parameters
    ----------
    band : str
        DECam band with a throughput file (g, r, i, z, Y).
    per_photon : bool, optional
        True (default): the ratio of photon-counting integrals ``int S(lambda) dlambda /
        lambda``, i.e. of the electrons a flat-spectrum (AB) source gives; False: the ratio of
        plain integrals ``int S(lambda) dlambda``.

    Returns
    -------
    numpy.ndarray, shape (62,)
        Dimensionless ratios, index ``CCDNUM - 1`` (within about +-1.5 % of 1).

    Raises
    ------
    FileNotFoundError
        No throughput file for ``band`` (:func:`has_throughput`).
    """
    from astropy.io import fits

    path = _data_file(_file_name(band))
    if not path.is_file():
        raise FileNotFoundError(f"no DECam per-detector throughput for band {band!r} "
                                f"({_file_name(band)} is not in desgw.instrument's data)")
    with path.open("rb") as fh, fits.open(fh) as hdul:
        data = hdul[1].data
        lam = np.asarray(data["lambda"], dtype=np.float64)
        avg = np.asarray(data["throughput_avg"], dtype=np.float64)
        per = np.asarray(data["throughput_ccd"], dtype=np.float64)
    if per.shape != (lam.size, _N_CCDS):
        raise ValueError(f"{_file_name(band)}: throughput_ccd has shape {per.shape}, "
                         f"expected ({lam.size}, {_N_CCDS})")
    w = 1.0 / lam if per_photon else np.ones_like(lam)
    out = np.trapezoid(per * w[:, None], lam, axis=0) / np.trapezoid(avg * w, lam)
    return np.asarray(out, dtype=np.float64)
