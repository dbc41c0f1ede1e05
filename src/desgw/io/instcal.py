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

from ._fitsutil import (
    hdu_label,
    header_float,
    header_int,
    header_str,
    index_ccds,
    open_fits,
    read_hdu_pixels,
)

__all__ = [
    "DecamFileKind",
    "InstCalCCD",
    "decam_file_kind",
    "find_instcal_image",
    "instcal_ccdnums",
    "instcal_companion_paths",
    "instcal_gain_columns",
    "instcal_plane",
    "merge_headers",
    "read_instcal",
]

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
        e-/ADU: the mean of GAINA and GAINB (the gains the CP applied per amplifier, which the
        weights follow), else GAIN, else ARAWGAIN (the raw average gain, 10-15 % above GAINA/B
        in the V4.8 CP files: not the gain of these images). Per-column gains:
        :func:`instcal_gain_columns`.
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
    ga = header_float(header, "GAINA", path=ipath, hdu=label, required=False)
    gb = header_float(header, "GAINB", path=ipath, hdu=label, required=False)
    if ga is not None and gb is not None:
        gain: float | None = 0.5 * (ga + gb)
    else:
        gain = header_float(header, "GAIN", path=ipath, hdu=label, required=False)
        if gain is None:
            gain = header_float(header, "ARAWGAIN", path=ipath, hdu=label, required=False)
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


def instcal_gain_columns(header: fits.Header, ncols: int, ccdnum: int, *,
                         path: str | os.PathLike[str] | None = None) -> np.ndarray:
    """Gain (e-/ADU) of each image column of a CP InstCal CCD, from GAINA / GAINB.

    The CP multiplies each amplifier's pixels by its gain and divides by GAINA/GAINB again
    (``FLATMEDA/B`` = ``GAINA/B``), so ADU -> e- is GAINA on amplifier A's columns and GAINB
    on B's. The amplifier of a column comes from :func:`desgw.instrument.get_ccd` (trimmed
    column ``x - LTV1``; the CP image starts ``-LTV1`` columns into the trimmed CCD).

    Parameters
    ----------
    header : astropy.io.fits.Header
        Merged header of the CCD (GAINA, GAINB, LTV1).
    ncols : int
        Image columns.
    ccdnum : int
    path : path, optional
        For error messages.

    Returns
    -------
    numpy.ndarray
        float32 (ncols,).

    Raises
    ------
    HeaderError
        GAINA or GAINB missing or not positive.
    """
    from desgw.instrument import get_ccd

    gains = {}
    for amp in ("A", "B"):
        g = header_float(header, f"GAIN{amp}", path=path, hdu=None, required=False)
        if g is None or not g > 0:
            raise HeaderError(path, None, f"CCD {ccdnum}: GAIN{amp} missing or not positive "
                              f"({g!r}): cannot convert ADU to electrons per amplifier",
                              keyword=f"GAIN{amp}")
        gains[amp] = g
    ltv1 = header_float(header, "LTV1", path=path, hdu=None, required=False) or 0.0
    x_trim = np.arange(int(ncols)) - int(round(ltv1))
    amps = get_ccd(int(ccdnum)).amp_at(x_trim)
    return np.where(amps == "A", gains["A"], gains["B"]).astype(np.float32)


def instcal_ccdnums(image_path: str | os.PathLike[str]) -> list[int]:
    """CCDNUMs of the image HDUs of a CP InstCal file (ascending)."""
    p = Path(image_path)
    with open_fits(p) as hdul:
        _, by_ccdnum, _ = index_ccds(hdul, p)
    return sorted(by_ccdnum)


#: What :func:`decam_file_kind` recognises.
DecamFileKind = str

_CAL_OBSTYPES = {"zero", "bias", "dome flat", "flat", "dark", "sky flat", "twilight flat"}


def decam_file_kind(primary: fits.Header) -> DecamFileKind:
    """What a DECam file is, from its primary header.

    Returns
    -------
    str
        ``"instcal"``: a Community Pipeline InstCal product (PROCTYPE ``InstCal``; PRODTYPE
        ``image``, ``dqmask`` or ``wtmap``: see :func:`instcal_plane`); ``"cp_calibration"``:
        a CP master calibration (PROCTYPE ``MasterCal``); ``"raw"``: a raw exposure (PROCTYPE
        ``raw``, or no PROCTYPE and DECam's raw keywords); ``"calibration"``: a raw
        calibration exposure (OBSTYPE zero/dome flat/dark...); ``"other"`` otherwise (e.g.
        resampled or stacked CP products).
    """
    proctype = str(primary.get("PROCTYPE", "") or "").strip().lower()
    obstype = str(primary.get("OBSTYPE", "") or "").strip().lower()
    if proctype == "instcal":
        return "instcal"
    if proctype in ("mastercal", "master_cal", "mastercalib"):
        return "cp_calibration"
    if proctype in ("", "raw"):
        if obstype in _CAL_OBSTYPES:
            return "calibration"
        return "raw"
    return "other"


def instcal_plane(primary: fits.Header) -> str:
    """``"image"``, ``"mask"`` or ``"weight"`` of a CP InstCal file (PRODTYPE image / dqmask /
    wtmap), ``"unknown"`` otherwise."""
    prod = str(primary.get("PRODTYPE", "") or "").strip().lower()
    return {"image": "image", "dqmask": "mask", "wtmap": "weight"}.get(prod, "unknown")


def find_instcal_image(directory: str | os.PathLike[str], expnum: int) -> Path:
    """The CP InstCal image file (``*_ooi_*.fits[.fz]``) of an exposure under a folder.

    Files are matched by EXPNUM in their primary header (CP names carry the date and time,
    not the exposure number), searched recursively.

    Raises
    ------
    MissingFileError
        None found, or several (the message lists them).
    """
    d = Path(directory)
    hits = []
    for p in sorted(d.rglob("*_ooi_*.fits*")):
        if not p.name.endswith((".fits", ".fits.fz", ".fits.gz")):
            continue
        try:
            hdr = fits.getheader(p, 0)
        except OSError:
            continue
        if hdr.get("EXPNUM") is not None and int(hdr["EXPNUM"]) == int(expnum):
            hits.append(p)
    if not hits:
        raise MissingFileError(d, None, f"no CP InstCal image (*_ooi_*.fits[.fz]) with EXPNUM "
                               f"{expnum} under this folder")
    if len(hits) > 1:
        raise MissingFileError(d, None, f"several CP InstCal images of exposure {expnum}: "
                               f"{[str(h) for h in hits]}")
    return hits[0]
