"""FITS headers of simulated raw DECam exposures: the primary header and the per-CCD headers.

The CCD headers carry the amplifier sections from `desgw.instrument` (1-based FITS sections of the
raw 2160 x 4146 HDU), the amplifier gains, read noises and saturation levels, and an approximate
TAN WCS as real raw DECam headers have: CRVAL at the *header* pointing (which is wrong by the
pointing error of `ExposureSpec.header_pointing`), CRPIX at the raw pixel where the optical axis
falls and a CD matrix from the plate scale at the optical axis, the CCD's rotation and the
header's sky rotation. The distortion is neglected, so the WCS is off by up to ~20 arcsec at the
edge of the field on top of the pointing error, as for real raw data.
"""

from __future__ import annotations

import numpy as np
from astropy.coordinates import Angle
from astropy.io import fits
from astropy.time import Time

from ..instrument import CCD_SHAPE, PIXEL_SIZE_MM, ccds, focal_to_pixel, get_ccd
from .model import ExposureSpec

__all__ = ["DECAM_FILTERS", "exposure_primary_header", "ccd_header", "raw_wcs_cards"]

#: FILTER keyword values of real DECam raw headers.
DECAM_FILTERS: dict[str, str] = {
    "u": "u DECam c0006 3500.0 1000.0",
    "g": "g DECam SDSS c0001 4720.0 1520.0",
    "r": "r DECam SDSS c0002 6415.0 1480.0",
    "i": "i DECam SDSS c0003 7835.0 1470.0",
    "z": "z DECam SDSS c0004 9260.0 1520.0",
    "Y": "Y DECam c0005 10095.0 1130.0",
}


def _sexagesimal_ra(ra_deg: float) -> str:
    return Angle(ra_deg % 360.0, unit="deg").to_string(unit="hourangle", sep=":", precision=3, pad=True)


def _sexagesimal_dec(dec_deg: float) -> str:
    return Angle(dec_deg, unit="deg").to_string(unit="deg", sep=":", precision=2, pad=True,
                                                alwayssign=True)


def exposure_primary_header(spec: ExposureSpec) -> fits.Header:
    """Primary header of a simulated raw exposure, in real DECam style.

    The pointing keywords (TELRA/TELDEC, RA/DEC, sexagesimal) are the *header* pointing.
    """
    h = fits.Header()
    t = Time(spec.mjd, format="mjd", scale="utc")
    hp = spec.header_pointing
    h["OBSERVAT"] = ("CTIO", "Observatory")
    h["TELESCOP"] = ("CTIO 4.0-m telescope", "Telescope")
    h["INSTRUME"] = ("DECam", "Instrument")
    h["EXPNUM"] = (int(spec.expnum), "DECam exposure number")
    h["OBSTYPE"] = (spec.obstype, "Observation type")
    h["PROPID"] = (spec.propid, "Proposal ID")
    h["OBJECT"] = (spec.object_name, "Object name")
    h["FILTER"] = (DECAM_FILTERS.get(spec.band, spec.band), "Unique filter identifier")
    h["BAND"] = (spec.band, "Band")
    h["EXPTIME"] = (float(spec.exptime), "[s] Exposure time")
    h["EXPREQ"] = (float(spec.exptime), "[s] Requested exposure duration")
    h["MJD-OBS"] = (float(spec.mjd), "MJD of observation start")
    h["DATE-OBS"] = (t.isot, "UTC date of observation start")
    h["TIME-OBS"] = (t.isot.split("T")[1], "UTC time of observation start")
    h["TELRA"] = (_sexagesimal_ra(hp.ra_deg), "[HH:MM:SS] Telescope RA")
    h["TELDEC"] = (_sexagesimal_dec(hp.dec_deg), "[DD:MM:SS] Telescope Dec")
    h["RA"] = (_sexagesimal_ra(hp.ra_deg), "[HH:MM:SS] Target RA")
    h["DEC"] = (_sexagesimal_dec(hp.dec_deg), "[DD:MM:SS] Target Dec")
    h["TELEQUIN"] = (2000.0, "Equinox of tel coords")
    h["AIRMASS"] = (float(spec.airmass), "Airmass")
    h["DESGWSIM"] = (True, "simulated by desgw.sim")
    return h


def _detsec_origin() -> tuple[float, float]:
    xs = [c.x_center_mm for c in ccds()]
    ys = [c.y_center_mm for c in ccds()]
    return min(xs), min(ys)


def raw_wcs_cards(spec: ExposureSpec, ccdnum: int) -> dict[str, float | str]:
    """Approximate TAN WCS of a CCD's raw HDU (raw 1-based pixels), as real raw headers carry."""
    ccd = get_ccd(ccdnum)
    data = ccd.raw_datasec
    xc, yc = focal_to_pixel(ccdnum, 0.0, 0.0)  # optical axis, trimmed 0-based
    sd = spec.distortion.scale_deg_per_mm
    t = np.deg2rad(ccd.rotation_deg)
    pix_to_mm = PIXEL_SIZE_MM * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    mm_to_tan = sd * np.array([[0.0, 1.0], [-1.0, 0.0]])
    r = np.deg2rad(spec.header_pointing.rotation_deg)
    rot = np.array([[np.cos(r), -np.sin(r)], [np.sin(r), np.cos(r)]])
    cd = rot @ mm_to_tan @ pix_to_mm
    return {
        "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN",
        "CUNIT1": "deg", "CUNIT2": "deg",
        "CRVAL1": float(spec.header_pointing.ra_deg), "CRVAL2": float(spec.header_pointing.dec_deg),
        "CRPIX1": float(xc) + data.x0 + 1.0, "CRPIX2": float(yc) + data.y0 + 1.0,
        "CD1_1": float(cd[0, 0]), "CD1_2": float(cd[0, 1]),
        "CD2_1": float(cd[1, 0]), "CD2_2": float(cd[1, 1]),
        "EQUINOX": 2000.0, "RADESYS": "ICRS",
    }


def _range(lo: int, hi: int, forward: bool) -> str:
    return f"{lo}:{hi}" if forward else f"{hi}:{lo}"


def ccd_header(spec: ExposureSpec, ccdnum: int) -> fits.Header:
    """Extension header of one CCD of a simulated raw exposure.

    Holds CCDNUM, DETPOS, EXTNAME, DATASEC/TRIMSEC, DETSEC, CCDSEC, per-amplifier DATASEC,
    BIASSEC (serial overscan), PRESEC, CCDSEC, AMPSEC (readout order), GAIN, RDNOISE, SATURAT,
    and the approximate TAN WCS (`raw_wcs_cards`).
    """
    ccd = get_ccd(ccdnum)
    h = fits.Header()
    h["EXTNAME"] = ccd.detpos
    h["CCDNUM"] = (ccdnum, "CCD number")
    h["DETPOS"] = (ccd.detpos, "detector position")
    data = ccd.raw_datasec
    h["DATASEC"] = (data.fits_section(), "data section")
    h["TRIMSEC"] = (data.fits_section(), "trim section")
    x0, y0 = _detsec_origin()
    dx = int(round((ccd.x_center_mm - x0) / PIXEL_SIZE_MM * 1.0)) + 1
    dy = int(round((ccd.y_center_mm - y0) / PIXEL_SIZE_MM * 1.0)) + 1
    ny, nx = CCD_SHAPE
    h["DETSEC"] = (f"[{dx}:{dx + nx - 1},{dy}:{dy + ny - 1}]", "mosaic section (approximate)")
    h["CCDSEC"] = (f"[1:{nx},1:{ny}]", "CCD section")
    for name in sorted(ccd.amps):
        amp = ccd.amps[name]
        tr = amp.trimmed
        h[f"DATASEC{name}"] = (amp.raw_data.fits_section(), f"data section amp {name}")
        h[f"BIASSEC{name}"] = (amp.raw_overscan.fits_section(), f"overscan section amp {name}")
        h[f"PRESEC{name}"] = (amp.raw_prescan.fits_section(), f"prescan section amp {name}")
        h[f"POSTSEC{name}"] = (amp.raw_parallel_overscan.fits_section(),
                               f"parallel overscan amp {name}")
        h[f"CCDSEC{name}"] = (tr.fits_section(), f"CCD section amp {name}")
        h[f"AMPSEC{name}"] = (f"[{_range(1, tr.x1 - tr.x0, amp.readout_left)},"
                              f"{_range(1, tr.y1 - tr.y0, amp.readout_bottom)}]",
                              f"amp section (readout order) amp {name}")
        h[f"GAIN{name}"] = (float(amp.gain), f"[e-/ADU] gain amp {name}")
        h[f"RDNOISE{name}"] = (float(amp.read_noise_e), f"[e-] read noise amp {name}")
        h[f"SATURAT{name}"] = (float(amp.saturation_adu), f"[ADU] saturation amp {name}")
    for key, value in raw_wcs_cards(spec, ccdnum).items():
        h[key] = value
    h["DESGWSIM"] = (True, "simulated by desgw.sim")
    return h
