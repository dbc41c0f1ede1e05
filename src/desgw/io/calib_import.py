"""Import real DECam calibrations into desgw's calibration layout (:mod:`desgw.io.calib`).

The NOIRLab archive serves Community Pipeline master calibrations as multi-extension FITS, one
image HDU per CCD (EXTNAME = DETPOS, keyword CCDNUM), primary ``PROCTYPE = 'MasterCal'``:
the master bias (OBSTYPE ``zero``) and the dome flat of a band (OBSTYPE ``dome flat``). The
DECam bad-pixel masks come as one file per CCD (``DECam_Master_YYYYMMDD_cd_NN.fits``,
keyword CCDNUM) or as one multi-extension file. :func:`import_calibration` reads such files and
writes desgw's ``bias.fits.fz``, ``flat_{band}.fits.fz`` or ``bpm.fits.fz``:

* **bias**: desgw's bias is in electrons after overscan subtraction. An HDU whose ``BUNIT``
  (HDU, else primary) says ADU is multiplied by the amplifier gain of each column (GAINA /
  GAINB of the HDU, amplifiers from :func:`desgw.instrument.get_ccd`); electrons are kept; a
  file without BUNIT needs ``bias_unit`` (no guess: a wrong unit is a 4x error).
* **flat**: each CCD divided by its mean over finite, positive pixels (desgw flats have mean
  1 per CCD; the CCD-to-CCD throughput goes into each CCD's zeropoint).
* **bpm**: integer bit masks kept as they are (0 = good); any non-zero bit flags the pixel
  (``DetrendConfig.bpm_bad_bits``).

Images must be trimmed CCDs, 2048 x 4096; a 2046 x 4094 image (the CP trims one pixel per side,
``LTV1 = LTV2 = -1``) is padded back with the border flagged in the bpm (bias 0, flat 1).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.io import fits

from desgw.errors import DataTypeError, DesgwInputError, HeaderError

from ._fitsutil import hdu_label, open_fits, read_hdu_pixels
from .calib import TRIMMED_SHAPE, write_calib

__all__ = ["import_calibration", "read_ccd_images"]

log = logging.getLogger(__name__)

_ADU = {"adu", "counts", "count", "dn"}
_ELECTRON = {"electron", "electrons", "e-", "e"}


def read_ccd_images(paths: Sequence[str | os.PathLike[str]]
                    ) -> dict[int, tuple[np.ndarray, fits.Header, fits.Header, Path, str | int]]:
    """Every CCD image HDU of the files, by CCDNUM (keyword, else the DECam DETPOS/EXTNAME).

    Returns
    -------
    dict
        CCDNUM -> (pixels, HDU header, primary header, file, HDU label).

    Raises
    ------
    DesgwInputError
        A CCD found twice, or an image HDU that names no CCD.
    """
    from desgw.instrument import get_ccd

    out: dict[int, tuple[np.ndarray, fits.Header, fits.Header, Path, str | int]] = {}
    for path in paths:
        p = Path(path)
        with open_fits(p) as hdul:
            primary = hdul[0].header.copy()
            for i, hdu in enumerate(hdul):
                if not getattr(hdu, "is_image", False) or hdu.header.get("NAXIS", 0) != 2:
                    continue
                label = hdu_label(i, hdu)
                h = hdu.header
                if "CCDNUM" in h:
                    ccd = int(h["CCDNUM"])
                elif "CCDNUM" in primary and len(hdul) <= 2:
                    ccd = int(primary["CCDNUM"])
                else:
                    name = str(h.get("EXTNAME", h.get("DETPOS", ""))).strip()
                    try:
                        ccd = get_ccd(name).ccdnum
                    except KeyError:
                        raise HeaderError(p, label, "image HDU without CCDNUM and without a "
                                          "DECam DETPOS/EXTNAME", keyword="CCDNUM") from None
                if ccd in out:
                    raise DesgwInputError(p, label, f"CCD {ccd} also in {out[ccd][3]} "
                                          f"[{out[ccd][4]}]")
                out[ccd] = (read_hdu_pixels(hdu, p, label), h.copy(), primary, p, label)
    return out


def _to_trimmed(arr: np.ndarray, path: Path, label: str | int, fill: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """(image of TRIMMED_SHAPE, border mask) from a trimmed or CP-trimmed (2 px smaller) CCD."""
    border = np.zeros(TRIMMED_SHAPE, dtype=bool)
    if arr.shape == TRIMMED_SHAPE:
        return arr, border
    if arr.shape == (TRIMMED_SHAPE[0] - 2, TRIMMED_SHAPE[1] - 2):
        out = np.full(TRIMMED_SHAPE, fill, dtype=arr.dtype)
        out[1:-1, 1:-1] = arr
        border[:] = True
        border[1:-1, 1:-1] = False
        return out, border
    raise DataTypeError(path, label, f"image has shape {arr.shape}; expected a trimmed DECam "
                        f"CCD {TRIMMED_SHAPE} or the CP's {(TRIMMED_SHAPE[0] - 2, TRIMMED_SHAPE[1] - 2)}")


def _bias_electrons(arr: np.ndarray, h: fits.Header, primary: fits.Header, ccd: int, path: Path,
                    label: str | int, bias_unit: str | None) -> np.ndarray:
    unit = str(h.get("BUNIT", primary.get("BUNIT", "")) or "").strip().lower()
    if not unit:
        if bias_unit is None:
            raise HeaderError(path, label, "no BUNIT in the bias header: give the unit "
                              "(--bias-unit adu or electron)", keyword="BUNIT")
        unit = bias_unit.lower()
    if unit in _ELECTRON:
        return arr.astype(np.float32)
    if unit not in _ADU:
        raise HeaderError(path, label, f"BUNIT {unit!r} is neither ADU nor electrons",
                          keyword="BUNIT")
    from desgw.instrument import get_ccd

    gains = {}
    for amp in ("A", "B"):
        g = h.get(f"GAIN{amp}", primary.get(f"GAIN{amp}"))
        if g is None or not float(g) > 0:
            raise HeaderError(path, label, f"bias in ADU without a positive GAIN{amp}: cannot "
                              "convert to electrons", keyword=f"GAIN{amp}")
        gains[amp] = float(g)
    amps = get_ccd(ccd).amp_at(np.arange(arr.shape[1]))
    gain = np.where(amps == "A", gains["A"], gains["B"]).astype(np.float32)
    return (arr.astype(np.float32) * gain[None, :]).astype(np.float32)


def import_calibration(kind: str, sources: Sequence[str | os.PathLike[str]],
                       calib_dir: str | os.PathLike[str], *, band: str | None = None,
                       bias_unit: str | None = None, overwrite: bool = False) -> Path:
    """Convert real DECam calibration files into desgw's calibration file of ``kind``.

    Parameters
    ----------
    kind : {"bias", "flat", "bpm"}
    sources : sequence of path
        The CP master (one MEF) or the per-CCD bad-pixel-mask files.
    calib_dir : path
        desgw calibration folder; the output is ``bias.fits.fz``, ``flat_{band}.fits.fz`` or
        ``bpm.fits.fz`` there.
    band : str, optional
        Band of a flat (default: the first token of FILTER in the primary header).
    bias_unit : {"adu", "electron"}, optional
        Unit of a bias whose header has no BUNIT.
    overwrite : bool
        Replace an existing output.

    Returns
    -------
    pathlib.Path
        The file written (atomically).

    Raises
    ------
    DesgwInputError
        Unknown kind, output exists, no CCD image, wrong shape, missing unit/gain/band; each
        message names the file and HDU.
    """
    if kind not in ("bias", "flat", "bpm"):
        raise DesgwInputError(None, None, f"unknown calibration kind {kind!r}: bias, flat or bpm")
    images = read_ccd_images(sources)
    if not images:
        raise DesgwInputError(sources[0] if sources else None, None, "no CCD image HDU found")
    first = next(iter(images.values()))
    if kind == "flat" and band is None:
        filt = str(first[2].get("FILTER", first[1].get("FILTER", "")) or "").split()
        if not filt:
            raise HeaderError(first[3], 0, "no FILTER in the flat's header: give the band",
                              keyword="FILTER")
        band = filt[0]
    name = {"bias": "bias", "flat": f"flat_{band}", "bpm": "bpm"}[kind] + ".fits.fz"
    out_path = Path(calib_dir) / name
    if out_path.exists() and not overwrite:
        raise DesgwInputError(out_path, None, "exists; use --overwrite to replace it")
    out: dict[int, np.ndarray] = {}
    bpm_border: dict[int, np.ndarray] = {}
    for ccd, (arr, h, primary, path, label) in sorted(images.items()):
        if kind == "bpm":
            if not np.issubdtype(arr.dtype, np.integer):
                raise DataTypeError(path, label, f"bad-pixel mask must be integer, got {arr.dtype}")
            img, border = _to_trimmed(arr.astype(np.int32), path, label, 0)
            img = np.where(border, 1, img)
        elif kind == "bias":
            # pad first: the amplifiers are located on the full trimmed width
            padded, border = _to_trimmed(arr.astype(np.float32), path, label, 0.0)
            img = _bias_electrons(padded, h, primary, ccd, path, label, bias_unit)
        else:
            a = arr.astype(np.float64)
            good = np.isfinite(a) & (a > 0)
            if good.sum() < 0.5 * a.size:
                raise DataTypeError(path, label, f"flat has only {int(good.sum())} positive "
                                    f"finite pixels of {a.size}")
            a = np.where(good, a / a[good].mean(), 1.0)
            img, border = _to_trimmed(a.astype(np.float32), path, label, 1.0)
        if border.any():
            bpm_border[ccd] = border
        out[ccd] = img
    hdr = fits.Header()
    hdr["IMPORTED"] = (", ".join(sorted({Path(v[3]).name for v in images.values()}))[-55:],
                       "sources")
    if bpm_border and kind != "bpm":
        log.warning("%s: %d CCDs were CP-trimmed (2046 x 4094): padded; their outer pixel "
                    "ring is flagged only in a bpm imported from CP-trimmed files too",
                    name, len(bpm_border))
    Path(calib_dir).mkdir(parents=True, exist_ok=True)
    return write_calib(out_path, kind, out, header=hdr, quantize_level=None)
