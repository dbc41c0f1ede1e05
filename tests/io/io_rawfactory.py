"""Build synthetic raw DECam headers and pixels for the io tests (real DECam layout)."""

from __future__ import annotations

import numpy as np
from astropy.io import fits

NX_RAW, NY_RAW = 2160, 4146


def primary_header(expnum: int = 668439, band: str = "r") -> fits.Header:
    h = fits.Header()
    h["EXPNUM"] = expnum
    h["OBSTYPE"] = "object"
    h["FILTER"] = f"{band} DECam SDSS c0002 6415.0 1480.0"
    h["BAND"] = band
    h["EXPTIME"] = 90.0
    h["MJD-OBS"] = 58598.1234567
    h["DATE-OBS"] = "2019-04-25T02:57:46.659"
    h["TELRA"] = "12:34:56.78"
    h["TELDEC"] = "-05:06:07.8"
    h["RA"] = "12:34:56.00"
    h["DEC"] = "-05:06:00.0"
    h["AIRMASS"] = 1.23
    h["PROPID"] = "2019A-0205"
    h["OBJECT"] = "S190425z hex 12"
    h["INSTRUME"] = "DECam"
    return h


def ccd_header(ccdnum: int, detpos: str, *, nx: int = NX_RAW, ny: int = NY_RAW,
               pre: int = 6, over: int = 50) -> fits.Header:
    """DECam-like CCD header for a raw array of nx x ny with two side-by-side amps."""
    ndat = (nx - 2 * (pre + over)) // 2
    nyd = ny - 50 if ny > 100 else ny - 10
    xb0 = pre + over + 1
    h = fits.Header()
    h["CCDNUM"] = ccdnum
    h["DETPOS"] = detpos
    h["PRESECB"] = f"[1:{pre},1:{nyd}]"
    h["BIASSECB"] = f"[{pre + 1}:{pre + over},1:{nyd}]"
    h["DATASECB"] = f"[{xb0}:{xb0 + ndat - 1},1:{nyd}]"
    h["DATASECA"] = f"[{xb0 + ndat}:{xb0 + 2 * ndat - 1},1:{nyd}]"
    h["BIASSECA"] = f"[{xb0 + 2 * ndat}:{xb0 + 2 * ndat + over - 1},1:{nyd}]"
    h["PRESECA"] = f"[{xb0 + 2 * ndat + over}:{nx},1:{nyd}]"
    h["DATASEC"] = f"[{xb0}:{xb0 + 2 * ndat - 1},1:{nyd}]"
    h["TRIMSEC"] = h["DATASEC"]
    h["DETSEC"] = f"[1:{2 * ndat},1:{nyd}]"
    h["CCDSEC"] = f"[1:{2 * ndat},1:{nyd}]"
    h["GAINA"] = 4.025
    h["GAINB"] = 4.077
    h["RDNOISEA"] = 6.1
    h["RDNOISEB"] = 5.9
    h["SATURATA"] = 44144.0
    h["SATURATB"] = 43448.0
    h["CTYPE1"] = "RA---TAN"
    h["CTYPE2"] = "DEC--TAN"
    h["CRVAL1"] = 188.7
    h["CRVAL2"] = -5.1
    h["CRPIX1"] = 1000.0
    h["CRPIX2"] = 2000.0
    h["CD1_1"] = 0.0
    h["CD1_2"] = 7.3e-5
    h["CD2_1"] = -7.3e-5
    h["CD2_2"] = 0.0
    return h


def ccd_pixels(header: fits.Header, seed: int = 0, *, nx: int = NX_RAW,
               ny: int = NY_RAW) -> np.ndarray:
    """uint16 raw pixels: overscan level ~1000 (A) / ~1200 (B), data = level + sky + gradient."""
    rng = np.random.default_rng(seed)
    a = np.empty((ny, nx), np.uint16)
    a[:] = 1000
    from desgw.io.sections import parse_section
    for amp, level in (("A", 1000), ("B", 1200)):
        b = parse_section(header[f"BIASSEC{amp}"]).slices
        a[b] = level + rng.integers(-5, 6, size=a[b].shape)
        d = parse_section(header[f"DATASEC{amp}"]).slices
        shape = a[d].shape
        a[d] = level + 500 + np.arange(shape[1])[None, :] + rng.integers(0, 20, size=shape)
    return a
