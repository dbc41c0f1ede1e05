"""Amplifier layout of a raw CCD as the pixel-level steps need it (sections, gain, readout side).

The detrend and crosstalk steps work on the raw pixel array (numpy shape ``(NAXIS2, NAXIS1)``,
ADU) and need, per amplifier, where its data and serial-overscan pixels lie, where the data land
in the trimmed image, its gain, read noise and saturation level, and on which sides of the HDU
its serial and parallel readout start. :class:`AmpLayout` holds exactly that, built either

* from a :class:`desgw.io.raw.RawCCD` (sections and amplifier values from the CCD header, the
  source of truth for a file), with :func:`layouts_from_raw`, or
* from the DECam instrument model for a bare array, with :func:`layouts_for_ccd`.

Readout sides: the serial readout side comes from the header geometry (the overscan lies on
the side of the data where the serial register reads out). The parallel readout side is not
in a raw header; it is taken from the instrument model (``desgw.instrument``) for science
CCDs, and otherwise inferred from whether rows lie below the data section (DECam stores the
parallel overscan after the last row read).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from desgw.instrument import Box, get_ccd

if TYPE_CHECKING:  # pragma: no cover
    from desgw.io.raw import RawCCD

__all__ = ["AmpLayout", "layouts_from_raw", "layouts_for_ccd", "resolve_layouts"]


@dataclass(frozen=True)
class AmpLayout:
    """One amplifier of a raw CCD array.

    Attributes
    ----------
    name : str
        ``"A"`` or ``"B"``.
    data : Box
        Data pixels in the raw array (0-based, half-open).
    overscan : Box
        Serial-overscan columns in the raw array (the same rows as ``data``).
    trimmed : Box
        Where ``data`` lands in the trimmed CCD image (shape (4096, 2048) for DECam).
    gain : float
        Electrons per ADU.
    read_noise_e : float
        Read noise in electrons.
    saturation_adu : float
        Saturation level in ADU above the overscan level.
    readout_left : bool
        The serial register reads out at the low-x side (the overscan lies left of the data).
    readout_bottom : bool
        The first row read out is the lowest data row of the raw array.
    """

    name: str
    data: Box
    overscan: Box
    trimmed: Box
    gain: float
    read_noise_e: float
    saturation_adu: float
    readout_left: bool
    readout_bottom: bool


def _readout_bottom(ccdnum: int, name: str, data_y0: int) -> bool:
    try:
        return get_ccd(ccdnum).amps[name].readout_bottom
    except KeyError:
        return data_y0 == 0


def layouts_from_raw(raw: RawCCD) -> tuple[AmpLayout, ...]:
    """Amplifier layouts of a raw CCD from its header sections and amplifier keywords.

    Parameters
    ----------
    raw : desgw.io.raw.RawCCD

    Returns
    -------
    tuple of AmpLayout
        In the order of ``raw.amps`` (A, B).
    """
    out = []
    u = raw.datasec
    for name, amp in raw.amps.items():
        d, b = amp.data_section, amp.bias_section
        data = Box(d.xmin - 1, d.xmax, d.ymin - 1, d.ymax)
        over = Box(b.xmin - 1, b.xmax, b.ymin - 1, b.ymax)
        trimmed = Box(d.xmin - u.xmin, d.xmax - u.xmin + 1, d.ymin - u.ymin, d.ymax - u.ymin + 1)
        out.append(AmpLayout(
            name=name, data=data, overscan=over, trimmed=trimmed, gain=float(amp.gain),
            read_noise_e=float(amp.read_noise_e), saturation_adu=float(amp.saturation_adu),
            readout_left=over.x0 < data.x0,
            readout_bottom=_readout_bottom(raw.ccdnum, name, data.y0),
        ))
    return tuple(out)


def layouts_for_ccd(ccdnum: int) -> tuple[AmpLayout, ...]:
    """Amplifier layouts of a DECam science CCD from the instrument model (A, B).

    Raises
    ------
    KeyError
        If ``ccdnum`` is not a science CCD (1..62).
    """
    ccd = get_ccd(ccdnum)
    return tuple(
        AmpLayout(name=a.name, data=a.raw_data, overscan=a.raw_overscan, trimmed=a.trimmed,
                  gain=a.gain, read_noise_e=a.read_noise_e, saturation_adu=a.saturation_adu,
                  readout_left=a.readout_left, readout_bottom=a.readout_bottom)
        for a in (ccd.amps["A"], ccd.amps["B"])
    )


def resolve_layouts(raw: object, amps: Sequence[AmpLayout] | None,
                    ccdnum: int | None) -> tuple[AmpLayout, ...]:
    """Layouts for a RawCCD (its header) or a bare array (``amps`` or the instrument model).

    Raises
    ------
    ValueError
        If ``raw`` is an array and neither ``amps`` nor ``ccdnum`` is given.
    """
    if amps is not None:
        return tuple(amps)
    if hasattr(raw, "amps") and hasattr(raw, "datasec"):
        return layouts_from_raw(raw)  # type: ignore[arg-type]
    if ccdnum is None:
        raise ValueError("a bare raw array needs amps= (AmpLayout list) or ccdnum=")
    return layouts_for_ccd(int(ccdnum))
