"""DECam amplifier-to-amplifier crosstalk coefficients (``DECam_xtalk_20130606.txt``).

The file, from the CTIO DECam calibration pages and used by the original pipeline, lists for each
(victim amplifier, source amplifier) pair a linear coefficient ``x``, its error, a source level
``src_nl`` (ADU) above which the response is non-linear, and three polynomial coefficients
``p1..p3``. We model the signal a source pixel of ``s`` ADU (bias-subtracted) induces in the victim
pixel that is read out at the same time as

* ``x * s``                                              for ``s <= src_nl``
* ``x * src_nl + p1*d + p2*d**2 + p3*d**3``, ``d = s - src_nl``   for ``s > src_nl``,

which is continuous at ``src_nl``. Amplifiers that read out on opposite sides of the raw HDU see
each other mirrored in x (as in the CP and LSST DECam crosstalk code).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .camera import _data_file

__all__ = ["CrosstalkTerm", "crosstalk_terms", "terms_for_victim", "source_ccds", "align_source"]


class Readout(Protocol):
    """What :func:`align_source` reads of an amplifier (:class:`Amplifier` and the detrending
    layouts have it): on which sides its serial and parallel readouts start."""

    @property
    def readout_left(self) -> bool: ...

    @property
    def readout_bottom(self) -> bool: ...


@dataclass(frozen=True)
class CrosstalkTerm:
    """One victim/source amplifier pair.

    Attributes
    ----------
    victim_ccd, source_ccd : int
        CCDNUMs.
    victim_amp, source_amp : str
        ``"A"`` or ``"B"``.
    coeff, coeff_err : float
        Linear coefficient (dimensionless, victim ADU per source ADU) and its error.
    src_nl : float
        Source level (ADU) where the non-linear regime starts (1e10 means never).
    poly : tuple[float, float, float]
        ``p1, p2, p3`` of the non-linear regime, in ADU per ADU**k.
    """

    victim_ccd: int
    victim_amp: str
    source_ccd: int
    source_amp: str
    coeff: float
    coeff_err: float
    src_nl: float
    poly: tuple[float, float, float]

    def signal(self, source_adu: np.ndarray) -> np.ndarray:
        """Crosstalk signal (ADU) induced in the victim by source pixels of ``source_adu``.

        Parameters
        ----------
        source_adu : ndarray
            Bias-subtracted source amplifier pixels (ADU), already aligned to the victim's
            readout order (see `align_source`).

        Returns
        -------
        ndarray
            float32 array, same shape: the ADU added to the victim pixels.
        """
        s = np.asarray(source_adu, dtype=np.float32)
        out = np.float32(self.coeff) * s
        if self.src_nl < 1e9:
            high = s > self.src_nl
            if np.any(high):
                d = s[high].astype(np.float64) - self.src_nl
                p1, p2, p3 = self.poly
                out[high] = (self.coeff * self.src_nl + d * (p1 + d * (p2 + d * p3))).astype(np.float32)
        return out


def _parse_amp(token: str) -> tuple[int, str]:
    # tokens look like 'ccd25A'
    return int(token[3:-1]), token[-1]


@functools.cache
def crosstalk_terms() -> tuple[CrosstalkTerm, ...]:
    """All crosstalk terms of the DECam file, in file order."""
    terms = []
    with _data_file("DECam_xtalk_20130606.txt").open() as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            vccd, vamp = _parse_amp(parts[0])
            sccd, samp = _parse_amp(parts[1])
            vals = [float(v) for v in parts[2:8]]
            terms.append(
                CrosstalkTerm(vccd, vamp, sccd, samp, vals[0], vals[1], vals[2], (vals[3], vals[4], vals[5]))
            )
    return tuple(terms)


def terms_for_victim(ccdnum: int) -> list[CrosstalkTerm]:
    """Crosstalk terms whose victim amplifier is on CCD ``ccdnum``."""
    return [t for t in crosstalk_terms() if t.victim_ccd == ccdnum]


def source_ccds(ccdnum: int) -> list[int]:
    """CCDNUMs whose amplifiers leak into CCD ``ccdnum`` (itself included if it does)."""
    return sorted({t.source_ccd for t in terms_for_victim(ccdnum)})


def align_source(source_pixels: np.ndarray, source: Readout, victim: Readout) -> np.ndarray:
    """Put a source amplifier's data pixels in the victim's readout order.

    Parameters
    ----------
    source_pixels : ndarray, shape (4096, 1024)
        The source amplifier's data-section pixels as they lie in its raw HDU.
    source, victim : Amplifier (or anything with its ``readout_left``/``readout_bottom``)
        The two amplifiers.

    Returns
    -------
    ndarray
        A view, flipped in x (y) when the two amplifiers' serial (parallel) readouts start on
        opposite sides of the HDU.
    """
    out = source_pixels
    if source.readout_left != victim.readout_left:
        out = out[:, ::-1]
    if source.readout_bottom != victim.readout_bottom:
        out = out[::-1, :]
    return out
