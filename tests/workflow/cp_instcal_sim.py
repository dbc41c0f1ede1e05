"""Simulated exposures written as NOIRLab Community Pipeline (CP) InstCal triplets, for tests
that mix raw and CP exposures.

:func:`write_cp_instcal` turns desgw's single-epoch products of a simulated raw exposure (the
immask: electrons with the sky in, desgw mask bits, inverse variance in e-**-2, fitted WCS)
into the three files the NOIRLab archive serves (``c4d_*_ooi_*`` image in ADU, ``_ood_``
data-quality codes, ``_oow_`` inverse variance in 1/ADU**2), with per-amplifier gains
GAINA/GAINB, and a WCS offset by a known amount (the CP WCS is the start of desgw's
refinement against Gaia).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from desgw.instrument import get_ccd
from desgw.se import maskbits

#: desgw mask bits -> CP data-quality codes (the inverse of desgw.se.process_instcal's map).
_CP_CODES = ((maskbits.BADPIX | maskbits.BADAMP | maskbits.EDGE, 1), (maskbits.SAT, 3),
             (maskbits.TRAIL | maskbits.EDGEBLEED, 4), (maskbits.CRAY, 5),
             (maskbits.STREAK, 8))


def cp_codes(bits: np.ndarray) -> np.ndarray:
    """desgw mask bits -> CP data-quality codes (int16; the last matching rule wins)."""
    out = np.zeros(bits.shape, dtype=np.int16)
    for bit, code in _CP_CODES:
        out[(bits & bit) != 0] = code
    return out


def _gain_columns(ccdnum: int, ncols: int, gains: tuple[float, float]) -> np.ndarray:
    amps = get_ccd(int(ccdnum)).amp_at(np.arange(ncols))
    return np.where(amps == "A", gains[0], gains[1]).astype(np.float32)


def write_cp_instcal(immasks: Mapping[int, Path], primary: fits.Header, folder: Path, *,
                     stamp: str, gains: tuple[float, float] = (3.9, 4.1),
                     wcs_offset_arcsec: tuple[float, float] = (0.0, 0.0)) -> dict[str, Path]:
    """Write the CP InstCal triplet of one exposure from desgw immask products.

    Parameters
    ----------
    immasks : mapping of CCDNUM to path
        ``..._immask.fits.fz`` of the exposure's CCDs.
    primary : astropy.io.fits.Header
        The raw exposure's primary header (EXPNUM, FILTER, MJD-OBS, pointing...).
    folder : Path
        Where the ``c4d_{stamp}_oo{i,d,w}_{band}_v1.fits.fz`` files go.
    stamp : str
        ``YYMMDD_hhmmss`` of the archive name.
    gains : (float, float)
        GAINA, GAINB (e-/ADU) the image is divided by.
    wcs_offset_arcsec : (float, float)
        Added to the WCS reference point: (RA * cos(dec), Dec) in arcsec.

    Returns
    -------
    dict
        ``{"ooi": path, "ood": path, "oow": path}``.
    """
    band = str(primary.get("BAND", str(primary["FILTER"]).split()[0]))
    planes: dict[str, list[fits.hdu.base.ExtensionHDU]] = {"ooi": [], "ood": [], "oow": []}
    for ccdnum, path in sorted(immasks.items()):
        with fits.open(path) as h:
            sci, bits, wgt = (np.asarray(h[e].data) for e in ("SCI", "MSK", "WGT"))
            hdr = h["SCI"].header
        g = _gain_columns(ccdnum, sci.shape[1], gains)[None, :]
        wcs = WCS(hdr, relax=True)
        dec0 = float(wcs.wcs.crval[1])
        wcs.wcs.crval = (wcs.wcs.crval[0] + wcs_offset_arcsec[0] / 3600.0
                         / math.cos(math.radians(dec0)),
                         dec0 + wcs_offset_arcsec[1] / 3600.0)
        ext = wcs.to_header(relax=True)
        detpos = str(hdr["DETPOS"]).strip()
        ext["CCDNUM"], ext["DETPOS"] = int(ccdnum), detpos
        ext["GAINA"], ext["GAINB"] = gains
        ext["SATURATA"] = ext["SATURATB"] = float(hdr["SATURATE"]) / max(gains)
        ext["RDNOISEA"] = ext["RDNOISEB"] = float(hdr["RDNOISE"])
        ext["FWHM"] = float(hdr["FWHM"])
        ext["AVSKY"] = float(hdr["AVSKY"]) / float(np.mean(gains))
        planes["ooi"].append(fits.CompImageHDU((sci / g).astype(np.float32), header=ext,
                                               name=detpos, compression_type="RICE_1"))
        planes["ood"].append(fits.CompImageHDU(cp_codes(bits), header=ext, name=detpos,
                                               compression_type="GZIP_2"))
        planes["oow"].append(fits.CompImageHDU((wgt * g ** 2).astype(np.float32), header=ext,
                                               name=detpos, compression_type="RICE_1"))
    out = {}
    folder.mkdir(parents=True, exist_ok=True)
    for kind, prodtype in (("ooi", "image"), ("ood", "dqmask"), ("oow", "wtmap")):
        prim = primary.copy()
        prim["PROCTYPE"], prim["PRODTYPE"] = "InstCal", prodtype
        out[kind] = folder / f"c4d_{stamp}_{kind}_{band}_v1.fits.fz"
        fits.HDUList([fits.PrimaryHDU(header=prim), *planes[kind]]).writeto(out[kind])
    return out
