"""NOIRLab Community Pipeline (CP) InstCal products: already detrended DECam CCDs.

A CP exposure comes as three files, image ``*_ooi_*``, data-quality mask ``*_ood_*`` and
weight (inverse variance) ``*_oow_*``, each multi-extension with one HDU per CCD (EXTNAME =
DETPOS, keyword CCDNUM), possibly fpacked. The extension headers carry a TPV WCS, GAINA/B,
SATURATE, FWHM, AVSKY...; the primary header the exposure keywords.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning
from astropy.wcs import WCS, FITSFixedWarning

from desgw.errors import DataTypeError, HeaderError, MissingCCDError, MissingFileError

from ._fitsutil import (header_float, header_int, header_str, hdu_label, index_ccds, open_fits,
                        read_hdu_pixels)

__all__ = ["InstCalCCD", "read_instcal", "instcal_companion_paths", "merge_headers"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InstCalCCD:
    """One CCD of a CP InstCal exposure.

    Attributes
    ----------
    image : numpy.ndarray
        float32, shape (NAXIS2, NAXIS1); CP units (ADU, sky not subtracted).
    mask : numpy.ndarray
        int32 CP data-quality codes (0 = good), same shape.
    weight : numpy.ndarray
        float32 inverse variance (1/ADU^2), 0 where unusable, same shape.
    header : astropy.io.fits.Header
        The primary header updated with the image extension header (extension wins).
    wcs : astropy.wcs.WCS
        Celestial WCS of the image (TPV distortion included).
    ccdnum : int
    detpos : str
    expnum : int or None
    band : str or None
        BAND, or the first token of FILTER.
    mjd_obs : float
    exptime : float
        Seconds.
    gain : float or None
        e-/ADU: ARAWGAIN, else the mean of GAINA and GAINB, else GAIN.
    saturate : float or None
        SATURATE (ADU), else the smaller of SATURATA/SATURATB.
    fwhm_pix : float or None
        FWHM (pixels) measured by the CP.
    sky_adu : float or None
        AVSKY, the CP mean sky level (ADU).
    image_path, mask_path, weight_path : str
    """

    image: np.ndarray = field(repr=False)
    mask: np.ndarray = field(repr=False)
    weight: np.ndarray = field(repr=False)
    header: fits.Header = field(repr=False)
    wcs: WCS = field(repr=False)
    ccdnum: int
    detpos: str
    expnum: int | None
    band: str | None
    mjd_obs: float
    exptime: float
    gain: float | None
    saturate: float | None
    fwhm_pix: float | None
    sky_adu: float | None
    image_path: str
    mask_path: str
    weight_path: str

    @property
    def shape(self) -> tuple[int, int]:
        """Numpy shape of the image."""
        return self.image.shape


def merge_headers(primary: fits.Header, extension: fits.Header) -> fits.Header:
    """The primary header with the extension's non-structural cards added or overriding."""
    skip = {"SIMPLE", "XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "PCOUNT",
            "GCOUNT", "BZERO", "BSCALE", "INHERIT", "NEXTEND"}
    out = fits.Header()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VerifyWarning)
        _merge_into(out, (primary, extension), skip)
    return out


def _merge_into(out: fits.Header, headers: tuple[fits.Header, ...], skip: set[str]) -> None:
    for src in headers:
        for card in src.cards:
            key = card.keyword
            if key in skip:
                continue
            if key in ("COMMENT", "HISTORY", ""):
                out.append(card, end=True)
            else:
                out[key] = (card.value, card.comment)


def instcal_companion_paths(image_path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The ``ood`` (mask) and ``oow`` (weight) file names of an ``ooi`` image file.

    Raises
    ------
    ValueError
        If the name has no ``_ooi_`` part.
    """
    p = Path(image_path)
    if "_ooi_" not in p.name:
        raise ValueError(f"{p}: not a CP image name (no '_ooi_'); give mask and weight paths")
    return (p.with_name(p.name.replace("_ooi_", "_ood_", 1)),
            p.with_name(p.name.replace("_ooi_", "_oow_", 1)))


def _find_hdu(path: Path, hdul: fits.HDUList, by_ccdnum: dict[int, int], by_name: dict[str, int],
              ccd: int | str | None) -> int:
    image_hdus = sorted(set(by_ccdnum.values()) | set(by_name.values()))
    if ccd is None:
        if len(image_hdus) == 1:
            return image_hdus[0]
        if not image_hdus and len(hdul) > 0 and hdul[0].header.get("NAXIS", 0) == 2:
            return 0
        raise MissingCCDError(path, None, f"the file holds {len(image_hdus)} CCDs "
                              f"({sorted(by_ccdnum)}); choose one with ccd=",
                              present=tuple(sorted(by_ccdnum)))
    if isinstance(ccd, (int, np.integer)):
        if int(ccd) in by_ccdnum:
            return by_ccdnum[int(ccd)]
        raise MissingCCDError(path, None, f"CCD {ccd} is not in the file; CCDNUMs present: "
                              f"{sorted(by_ccdnum)}", present=tuple(sorted(by_ccdnum)))
    name = str(ccd).strip().upper()
    if name in by_name:
        return by_name[name]
    raise MissingCCDError(path, None, f"CCD {ccd!r} is not in the file; EXTNAMEs present: "
                          f"{sorted(by_name)}", present=tuple(sorted(by_ccdnum)))


def _read_plane(path: Path, ccd: int | str | None, what: str
                ) -> tuple[np.ndarray, fits.Header, fits.Header, str | int]:
    with open_fits(path) as hdul:
        primary, by_ccdnum, by_name = index_ccds(hdul, path)
        index = _find_hdu(path, hdul, by_ccdnum, by_name, ccd)
        hdu = hdul[index]
        label = hdu_label(index, hdu)
        data = read_hdu_pixels(hdu, path, label)
        header = hdu.header.copy()
    if what == "mask":
        if not np.issubdtype(data.dtype, np.integer):
            raise DataTypeError(path, label, f"mask must be integer, found {data.dtype}")
        data = data.astype(np.int32, copy=False)
    else:
        if not np.issubdtype(data.dtype, np.floating):
            raise DataTypeError(path, label, f"{what} must be floating point, found "
                                f"{data.dtype}")
        data = data.astype(np.float32, copy=False)
    return data, primary.copy(), header, label


def _ccd_key(header: fits.Header, path: Path, label: str | int) -> int | str:
    if "CCDNUM" in header:
        return header_int(header, "CCDNUM", path=path, hdu=label)
    name = str(header.get("EXTNAME", "") or header.get("DETPOS", "")).strip()
    if not name:
        raise HeaderError(path, label, "image HDU has neither CCDNUM nor EXTNAME/DETPOS",
                          keyword="CCDNUM")
    return name


def read_instcal(image_path: str | os.PathLike[str],
                 mask_path: str | os.PathLike[str] | None = None,
                 weight_path: str | os.PathLike[str] | None = None, *,
                 ccd: int | str | None = None) -> InstCalCCD:
    """Read one CCD of a CP InstCal exposure (image, mask and weight).

    Parameters
    ----------
    image_path : path
        The ``ooi`` file (``.fits`` or ``.fits.fz``).
    mask_path, weight_path : path, optional
        The ``ood`` and ``oow`` files; by default the image name with ``_ooi_`` replaced by
        ``_ood_`` / ``_oow_``.
    ccd : int or str, optional
        CCDNUM (int) or DETPOS/EXTNAME (str). Optional when the file holds a single CCD.
        The same CCD is then found in the mask and weight files (by CCDNUM, else EXTNAME).

    Returns
    -------
    InstCalCCD

    Raises
    ------
    MissingFileError
        A file (including a derived mask/weight name) does not exist.
    MissingCCDError
        The CCD is not in a file, or ``ccd`` is None and the file holds several CCDs.
    CorruptFileError, HeaderError
        Unreadable file; missing or malformed MJD-OBS, EXPTIME, or WCS.
    DataTypeError
        Non-float image/weight, non-integer mask, or planes of different shapes.
    """
    ipath = Path(image_path)
    if mask_path is None or weight_path is None:
        if not ipath.exists():
            raise MissingFileError(ipath, None, "file does not exist")
        try:
            dmask, dweight = instcal_companion_paths(ipath)
        except ValueError as exc:
            raise MissingFileError(ipath, None, str(exc)) from None
        mpath = Path(mask_path) if mask_path is not None else dmask
        wpath = Path(weight_path) if weight_path is not None else dweight
    else:
        mpath, wpath = Path(mask_path), Path(weight_path)

    image, primary, ext, label = _read_plane(ipath, ccd, "image")
    key = _ccd_key(ext, ipath, label)
    mask, _, _mext, mlabel = _read_plane(mpath, key, "mask")
    weight, _, _wext, wlabel = _read_plane(wpath, key, "weight")
    for arr, p, lab, what in ((mask, mpath, mlabel, "mask"), (weight, wpath, wlabel, "weight")):
        if arr.shape != image.shape:
            raise DataTypeError(p, lab, f"{what} has shape {arr.shape} but the image "
                                f"{ipath.name} has {image.shape}")

    header = merge_headers(primary, ext)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(ext, relax=True)
        except Exception as exc:  # astropy/wcslib raise various types
            raise HeaderError(ipath, label, f"cannot build a WCS from the header ({exc})",
                              keyword="CTYPE1") from exc
    if not wcs.has_celestial:
        raise HeaderError(ipath, label, "no celestial WCS in the header", keyword="CTYPE1")
    ccdnum = header_int(header, "CCDNUM", path=ipath, hdu=label, required=False)
    detpos = header_str(header, "DETPOS", path=ipath, hdu=label, required=False) \
        or header_str(ext, "EXTNAME", path=ipath, hdu=label, required=False) or ""
    filt = header_str(header, "FILTER", path=ipath, hdu=label, required=False)
    band = header_str(header, "BAND", path=ipath, hdu=label, required=False)
    if band is None and filt:
        band = filt.split()[0]
    gain = header_float(header, "ARAWGAIN", path=ipath, hdu=label, required=False)
    if gain is None:
        ga = header_float(header, "GAINA", path=ipath, hdu=label, required=False)
        gb = header_float(header, "GAINB", path=ipath, hdu=label, required=False)
        if ga is not None and gb is not None:
            gain = 0.5 * (ga + gb)
        else:
            gain = header_float(header, "GAIN", path=ipath, hdu=label, required=False)
    saturate = header_float(header, "SATURATE", path=ipath, hdu=label, required=False)
    if saturate is None:
        found = [header_float(header, k, path=ipath, hdu=label, required=False)
                 for k in ("SATURATA", "SATURATB")]
        sats = [s for s in found if s is not None]
        saturate = min(sats) if sats else None
    result = InstCalCCD(
        image=image, mask=mask, weight=weight, header=header, wcs=wcs,
        ccdnum=-1 if ccdnum is None else int(ccdnum),
        detpos=detpos,
        expnum=header_int(header, "EXPNUM", path=ipath, hdu=label, required=False),
        band=band,
        mjd_obs=header_float(header, "MJD-OBS", path=ipath, hdu=label),
        exptime=header_float(header, "EXPTIME", path=ipath, hdu=label),
        gain=gain,
        saturate=saturate,
        fwhm_pix=header_float(header, "FWHM", path=ipath, hdu=label, required=False),
        sky_adu=header_float(header, "AVSKY", path=ipath, hdu=label, required=False),
        image_path=str(ipath), mask_path=str(mpath), weight_path=str(wpath),
    )
    log.debug("read InstCal CCD %s (%s) from %s", result.ccdnum, result.detpos, ipath)
    return result
