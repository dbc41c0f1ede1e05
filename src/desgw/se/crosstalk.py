"""Amplifier-to-amplifier crosstalk correction of raw DECam CCDs.

Each DECam amplifier (the *victim*) picks up a small copy of the pixels that other amplifiers
(the *sources*, on the same CCD or on neighbouring CCDs sharing readout electronics) read at
the same moment. ``desgw.instrument.crosstalk`` holds the real DECam coefficients and the
signal model (:meth:`desgw.instrument.CrosstalkTerm.signal`: linear up to ``src_nl``, a cubic
beyond). The correction subtracts, from each victim amplifier's raw data pixels (ADU),

    sum over terms  term.signal(align_source(source_data - source_overscan_row_level))

where the source's overscan level is removed row by row (:func:`overscan_profile`) and
:func:`desgw.instrument.align_source` mirrors the source when the two amplifiers read out from
opposite sides. The source pixels are the *recorded* raw values (a saturated source pixel is
used at its recorded, clipped level, which is what the readout electronics saw). Second-order
terms (crosstalk of crosstalk) are ~1e-6 of the source and ignored.

The linear part of every term is one numba pass over the victim amplifier reading the raw
source pixels in mirrored order (no temporaries); only source pixels above ``src_nl`` (bright
stars) go through ``term.signal``'s non-linear branch. About 15 ms per term on one core.

Victim pixels whose source pixel is saturated (at or above the source amplifier's saturation
level) get the ``SSXTALK`` mask bit: the crosstalk model is least certain there.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit

from desgw.errors import DataTypeError, MissingCCDError
from desgw.instrument import CrosstalkTerm, align_source, terms_for_victim

from . import maskbits
from .detrend_amps import AmpLayout, resolve_layouts
from .detrend_overscan import overscan_profile

__all__ = ["CrosstalkCorrected", "correct_crosstalk", "needed_sources"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CrosstalkCorrected:
    """A raw CCD after crosstalk correction.

    Attributes
    ----------
    ccdnum : int
        The victim CCD.
    pixels : ndarray, float32, raw shape (e.g. (4146, 2160))
        Raw ADU with the crosstalk subtracted from both amplifiers' data pixels; overscan and
        prescan pixels unchanged. Feed it to :func:`desgw.se.detrend.detrend_ccd` with
        ``amps=amps``.
    mask : ndarray, int32, trimmed shape (e.g. (4096, 2048))
        ``SSXTALK`` where a source pixel read at the same time was saturated, else 0.
    amps : tuple of AmpLayout
        The victim's amplifier layouts used.
    n_terms : int
        Number of crosstalk terms applied.
    """

    ccdnum: int
    pixels: np.ndarray
    mask: np.ndarray
    amps: tuple[AmpLayout, ...]
    n_terms: int


def needed_sources(ccdnum: int) -> list[tuple[int, str]]:
    """Source amplifiers ``(ccdnum, amp)`` whose pixels the correction of CCD ``ccdnum`` needs.

    Sorted; includes amplifiers of ``ccdnum`` itself when they leak into each other.
    """
    return sorted({(t.source_ccd, t.source_amp) for t in terms_for_victim(int(ccdnum))})


def feeds_other_ccds(ccdnum: int) -> bool:
    """True when an amplifier of CCD ``ccdnum`` leaks into another CCD (so that CCD's
    correction reads this CCD's raw pixels too)."""
    from desgw.instrument.crosstalk import crosstalk_terms

    ccdnum = int(ccdnum)
    return any(t.source_ccd == ccdnum and t.victim_ccd != ccdnum for t in crosstalk_terms())


def _pixels_of(raw: object) -> np.ndarray:
    pix = raw.pixels if hasattr(raw, "pixels") else raw
    return np.asarray(pix, dtype=np.float32)


@njit(cache=True)
def _subtract_linear(victim, src, level, coeff, flip_x, flip_y):  # pragma: no cover - numba
    """``victim -= coeff * (src - level[row])`` with ``src`` read mirrored as ``align_source``
    would (one pass, no temporaries)."""
    ny, nx = victim.shape
    c = np.float32(coeff)
    for y in range(ny):
        sy = ny - 1 - y if flip_y else y
        lv = level[sy]
        for x in range(nx):
            sx = nx - 1 - x if flip_x else x
            victim[y, x] -= c * (src[sy, sx] - lv)


@njit(cache=True)
def _bright_pixels(src, level, thr):  # pragma: no cover - numba
    """Rows, columns and values of pixels with ``src - level[row] > thr``."""
    ny, nx = src.shape
    n = 0
    for y in range(ny):
        t = thr + level[y]
        for x in range(nx):
            if src[y, x] > t:
                n += 1
    ys = np.empty(n, np.intp)
    xs = np.empty(n, np.intp)
    vals = np.empty(n, np.float32)
    k = 0
    if n:
        for y in range(ny):
            t = thr + level[y]
            for x in range(nx):
                if src[y, x] > t:
                    ys[k] = y
                    xs[k] = x
                    vals[k] = src[y, x] - level[y]
                    k += 1
    return ys, xs, vals


def _flips(samp: AmpLayout, vamp: AmpLayout) -> tuple[bool, bool]:
    """(flip_x, flip_y) that :func:`align_source` applies, read off a 2 x 2 probe so that the
    instrument module stays the one definition of the readout geometry."""
    corner = int(align_source(np.arange(4).reshape(2, 2), samp, vamp)[0, 0])
    return corner % 2 == 1, corner >= 2


def _flip_index(y: np.ndarray, x: np.ndarray, shape: tuple[int, int], samp: AmpLayout,
                vamp: AmpLayout) -> tuple[np.ndarray, np.ndarray]:
    """Source-amp pixel indices mapped to the victim amp as :func:`align_source` aligns them."""
    flip_x, flip_y = _flips(samp, vamp)
    if flip_x:
        x = shape[1] - 1 - x
    if flip_y:
        y = shape[0] - 1 - y
    return y, x


@dataclass(frozen=True)
class _Source:
    data: np.ndarray  # raw data view (ADU)
    level: np.ndarray  # overscan level per row (ADU)
    amp: AmpLayout
    # pixels whose overscan-subtracted value exceeds the lowest src_nl / saturation level of
    # the terms that use this source: (rows, cols, values), source-amp coordinates
    bright_y: np.ndarray
    bright_x: np.ndarray
    bright_s: np.ndarray


def _subtract_term(victim_data: np.ndarray, src: _Source, vamp: AmpLayout,
                   term: CrosstalkTerm) -> None:
    """``victim_data -= term.signal(align_source(src.data - src.level))``, in place.

    ``term.signal`` is linear (``coeff * s``) up to ``src_nl``: the linear part is applied to
    every pixel in one numba pass; the pixels above ``src_nl`` (few: bright stars) are then
    corrected to ``term.signal`` itself.
    """
    samp = src.amp
    flip_x, flip_y = _flips(samp, vamp)
    _subtract_linear(victim_data, src.data, src.level, float(term.coeff), flip_x, flip_y)
    high = src.bright_s > term.src_nl
    if not high.any():
        return
    sv = src.bright_s[high]
    y, x = _flip_index(src.bright_y[high], src.bright_x[high], src.data.shape, samp, vamp)
    victim_data[y, x] += np.float32(term.coeff) * sv - term.signal(sv)


def _trimmed_shape(amps: Sequence[AmpLayout]) -> tuple[int, int]:
    return max(a.trimmed.y1 for a in amps), max(a.trimmed.x1 for a in amps)


def correct_crosstalk(victim: object, sources: Mapping[int, object] | None = None,
                      ccdnum: int | None = None, *,
                      amps: Sequence[AmpLayout] | None = None,
                      terms: Sequence[CrosstalkTerm] | None = None) -> CrosstalkCorrected:
    """Subtract DECam amplifier crosstalk from one raw CCD.

    Parameters
    ----------
    victim : RawCCD or ndarray, shape (NAXIS2, NAXIS1)
        The CCD to correct (raw ADU). A :class:`desgw.io.raw.RawCCD` brings its own header
        sections; for a bare array, ``amps`` or the instrument layout of ``ccdnum`` is used.
    sources : mapping of int to RawCCD or ndarray, optional
        Raw source CCDs keyed by CCDNUM (see :func:`needed_sources`). The victim itself is used
        for its own amplifiers when it is not in the mapping.
    ccdnum : int, optional
        The victim's CCDNUM; taken from ``victim.ccdnum`` for a RawCCD.
    amps : sequence of AmpLayout, optional
        The victim's layouts (default: from its header, or the instrument model).
    terms : sequence of CrosstalkTerm, optional
        Terms to apply (default: :func:`desgw.instrument.terms_for_victim`).

    Returns
    -------
    CrosstalkCorrected

    Raises
    ------
    MissingCCDError
        If a needed source CCD is not given.
    DataTypeError
        If a source amplifier's data shape differs from the victim amplifier's.
    """
    if ccdnum is None:
        ccdnum = getattr(victim, "ccdnum", None)
    if ccdnum is None:
        raise ValueError("correct_crosstalk needs ccdnum= for a bare array")
    ccdnum = int(ccdnum)
    vamps = {a.name: a for a in resolve_layouts(victim, amps, ccdnum)}
    src_map: dict[int, object] = dict(sources or {})
    src_map.setdefault(ccdnum, victim)
    use_terms = list(terms_for_victim(ccdnum) if terms is None else terms)
    path = getattr(victim, "path", None)

    out = _pixels_of(victim).copy()
    mask = np.zeros(_trimmed_shape(list(vamps.values())), dtype=np.int32)
    cache: dict[tuple[int, str], _Source] = {}
    for term in use_terms:
        key = (term.source_ccd, term.source_amp)
        if key not in cache:
            if term.source_ccd not in src_map:
                raise MissingCCDError(path, None, f"crosstalk source CCD {term.source_ccd} "
                                      f"(amp {term.source_amp}) of CCD {ccdnum} was not given",
                                      present=tuple(sorted(src_map)))
            sraw = src_map[term.source_ccd]
            samps = {a.name: a for a in resolve_layouts(sraw, None, term.source_ccd)}
            samp = samps[term.source_amp]
            spix = _pixels_of(sraw)
            level, _ = overscan_profile(spix[samp.overscan.slices], readout_left=samp.readout_left)
            sdata = spix[samp.data.slices]
            bright = min([samp.saturation_adu] + [t.src_nl for t in use_terms
                                                  if (t.source_ccd, t.source_amp) == key])
            by, bx, bs = _bright_pixels(sdata, level, float(bright))
            cache[key] = _Source(sdata, level, samp, by, bx, bs)
        src = cache[key]
        vamp = vamps[term.victim_amp]
        if src.data.shape != vamp.data.shape:
            raise DataTypeError(path, None, f"crosstalk source CCD {term.source_ccd} amp "
                                f"{term.source_amp} has data shape {src.data.shape}, victim "
                                f"CCD {ccdnum} amp {term.victim_amp} has {vamp.data.shape}")
        _subtract_term(out[vamp.data.slices], src, vamp, term)
        sat = src.bright_s >= src.amp.saturation_adu
        if sat.any():
            y, x = _flip_index(src.bright_y[sat], src.bright_x[sat], src.data.shape, src.amp,
                               vamp)
            mask[vamp.trimmed.y0 + y, vamp.trimmed.x0 + x] |= maskbits.SSXTALK
    log.debug("crosstalk CCD %d: %d terms from %d source amps", ccdnum, len(use_terms), len(cache))
    return CrosstalkCorrected(ccdnum=ccdnum, pixels=out, mask=mask, amps=tuple(vamps.values()),
                              n_terms=len(use_terms))
