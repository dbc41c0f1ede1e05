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

Victim pixels whose source pixel is saturated (at or above the source amplifier's saturation
level) get the ``SSXTALK`` mask bit: the crosstalk model is least certain there.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from desgw.instrument import CrosstalkTerm, align_source, terms_for_victim
from desgw.io.errors import DataTypeError, MissingCCDError

from . import maskbits
from .detrend_amps import AmpLayout, resolve_layouts
from .detrend_overscan import overscan_profile

__all__ = ["CrosstalkCorrected", "correct_crosstalk", "needed_sources", "source_signal_adu"]

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


def _pixels_of(raw: object) -> np.ndarray:
    pix = raw.pixels if hasattr(raw, "pixels") else raw  # type: ignore[attr-defined]
    return np.asarray(pix, dtype=np.float32)


def source_signal_adu(raw: object, amp: AmpLayout) -> np.ndarray:
    """Overscan-subtracted data pixels (ADU, float32, data shape) of one source amplifier."""
    pix = _pixels_of(raw)
    level, _ = overscan_profile(pix[amp.overscan.slices], readout_left=amp.readout_left)
    return pix[amp.data.slices] - level[:, None]


def _subtract_term(victim_data: np.ndarray, aligned: np.ndarray, term: CrosstalkTerm,
                   source_max: float) -> None:
    """``victim_data -= term.signal(aligned)``, in place, without full-size temporaries.

    ``term.signal`` is linear (``coeff * s``) up to ``src_nl``; the linear part is applied to
    every pixel and only the few pixels above ``src_nl`` go through ``term.signal`` itself.
    """
    victim_data -= np.float32(term.coeff) * aligned
    if source_max > term.src_nl:
        high = aligned > term.src_nl
        s = aligned[high]
        victim_data[high] += np.float32(term.coeff) * s - term.signal(s)


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
    cache: dict[tuple[int, str], tuple[np.ndarray, AmpLayout, float]] = {}
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
            sig = source_signal_adu(sraw, samp)
            cache[key] = (sig, samp, float(sig.max()))
        sig, samp, smax = cache[key]
        vamp = vamps[term.victim_amp]
        if sig.shape != vamp.data.shape:
            raise DataTypeError(path, None, f"crosstalk source CCD {term.source_ccd} amp "
                                f"{term.source_amp} has data shape {sig.shape}, victim CCD "
                                f"{ccdnum} amp {term.victim_amp} has {vamp.data.shape}")
        aligned = align_source(sig, samp, vamp)
        _subtract_term(out[vamp.data.slices], aligned, term, smax)
        if smax >= samp.saturation_adu:
            sat = aligned >= samp.saturation_adu
            mask[vamp.trimmed.slices][sat] |= maskbits.SSXTALK
    log.debug("crosstalk CCD %d: %d terms from %d source amps", ccdnum, len(use_terms), len(cache))
    return CrosstalkCorrected(ccdnum=ccdnum, pixels=out, mask=mask, amps=tuple(vamps.values()),
                              n_terms=len(use_terms))
