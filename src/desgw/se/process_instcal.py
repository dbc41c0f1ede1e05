"""Single-epoch processing of a NOIRLab Community Pipeline (CP) InstCal CCD.

A CP InstCal CCD (:func:`desgw.io.instcal.read_instcal`) is already detrended: overscan, bias,
linearity, flat (dome and star flat), crosstalk, bad pixels, saturation, bleed trails and
cosmic rays are done or flagged by the CP; the pixels are ADU with the sky in, the weight is
1/ADU**2 and the data-quality mask holds CP codes. :func:`process_instcal_ccd` takes it from
there with desgw's own stages, and returns the same :class:`desgw.se.process.CCDResult` as
:func:`desgw.se.process.process_ccd`, so the products (immask, fullcat, PSF model, QC) are
written with the same names and read the same way by ``diffimg`` and ``sediff``:

1. **Units**: ADU -> electrons with the per-amplifier gains GAINA/GAINB
   (:func:`desgw.io.instcal.instcal_gain_columns`); the weight divided by gain**2. ARAWGAIN
   (4.38-4.49 on the shared cut-outs) is not the gain of these images: GAINA/GAINB and the
   weight maps give 3.7-4.1 e-/ADU.
2. **Mask**: CP codes -> desgw bits (:func:`cp_mask_to_bits`); weight 0 on unusable pixels.
3. The rest is the raw path's, shared: :func:`desgw.se.process.process_detrended` (one
   per-CCD core for both input kinds), told what the CP did already and what it knows:

   * bleed trails, cosmic rays and satellite trails are flagged by the CP (codes 4, 5, 8):
     no bleed-trail, L.A.Cosmic, trail or cosmic-ray-leftover step;
   * the seeing defaults to the CP header ``FWHM`` when too few stars give their own, and the
     sparse-PSF flag says so; the background mesh, seeing stamps and aperture-correction
     margin shrink on cut-outs smaller than four meshes;
   * the astrometry refines the CP TPV WCS against Gaia (the polynomial fit, or a shift
     within :data:`CP_WCS_MAX_SHIFT_ARCSEC` with few stars; with no matched star at all the
     CP WCS is kept, flagged);
   * as validated on the real cut-outs: the first detection pass at ``SEConfig.detect``, the
     second given the variance, no mean-sky step.

   Then desgw's PSF, measurement, zeropoint, QC and product header, as for raw data.

No L.A.Cosmic pass is run: the CP has flagged cosmic rays (code 5).
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
from astropy.io import fits
from astropy.table import Table

from desgw.errors import HeaderError
from desgw.io.instcal import InstCalCCD, instcal_gain_columns
from desgw.se import maskbits
from desgw.se.process import CCDResult, DetrendedCCD, SEConfig, process_detrended
from desgw.se.quality import QC_BANDS

__all__ = ["CP_MASK_CODES", "CP_WCS_MAX_SHIFT_ARCSEC", "cp_mask_to_bits", "process_instcal_ccd"]

#: Largest shift searched when the CP WCS is refined from a few stars (arcsec): the CP WCS is
#: good to ~0.1" (ccdraoff/ccddecoff of the legacypipe cut-outs: |offset| < 0.05"); a larger
#: search pairs a detection with an unrelated Gaia star (seen: 27" on a saturated-star cut-out).
CP_WCS_MAX_SHIFT_ARCSEC = 2.0

log = logging.getLogger(__name__)

#: CP data-quality codes (``ood``) -> desgw mask bits. 6 (low weight) and 7 (a source that
#: differs between the exposures of a CP stack: transients too) are kept as SUSPECT, not
#: unusable; unknown non-zero codes are BADPIX.
CP_MASK_CODES: dict[int, int] = {
    1: maskbits.BADPIX,  # bad pixel (BPM)
    2: maskbits.BADPIX,  # no data
    3: maskbits.SAT,  # saturated
    4: maskbits.TRAIL,  # bleed trail
    5: maskbits.CRAY,  # cosmic ray
    6: maskbits.SUSPECT,  # low weight
    7: maskbits.SUSPECT,  # difference detection
    8: maskbits.STREAK,  # satellite / long streak
}


def cp_mask_to_bits(cp_mask: np.ndarray) -> np.ndarray:
    """CP data-quality codes -> desgw mask bits (int32, :data:`CP_MASK_CODES`)."""
    m = np.asarray(cp_mask).astype(np.int64)
    out = np.where(m != 0, maskbits.BADPIX, 0).astype(np.int32)
    for code, bit in CP_MASK_CODES.items():
        out[m == code] = bit
    return out


def process_instcal_ccd(ccd: InstCalCCD, refcat: Table, *, config: SEConfig = SEConfig()
                        ) -> CCDResult:
    """Process one CP InstCal CCD into desgw's image, catalog, PSF, WCS, zeropoint and QC.

    Parameters
    ----------
    ccd : InstCalCCD
        Image (ADU), CP mask and weight (1/ADU**2), header and CP WCS.
    refcat : astropy.table.Table
        Gaia stars around the CCD at the exposure epoch (``ra``, ``dec``, ``phot_*_mean_mag``).
    config : SEConfig
        As for :func:`desgw.se.process.process_ccd` (the detrending, bleed and cosmic-ray
        settings are not used).

    Returns
    -------
    CCDResult
        ``image`` in electrons (sky not subtracted), ``weight`` in e-**-2.

    Raises
    ------
    desgw.errors.HeaderError
        No DES band, no CCDNUM, or GAINA/GAINB missing.
    """
    timings: dict[str, float] = {}
    t_start = time.perf_counter()

    path = ccd.image_path
    band = ccd.band
    if band not in QC_BANDS:
        raise HeaderError(path, 0, f"FILTER/BAND {band!r} is not a DES band "
                          f"({', '.join(QC_BANDS)}): cannot calibrate", keyword="FILTER")
    if ccd.ccdnum < 1:
        raise HeaderError(path, ccd.detpos or None, "no CCDNUM in the CCD header",
                          keyword="CCDNUM")
    nx = ccd.shape[1]
    gain = instcal_gain_columns(ccd.header, nx, ccd.ccdnum, path=path)
    image = (ccd.image.astype(np.float32) * gain[None, :]).astype(np.float32)
    mask = cp_mask_to_bits(ccd.mask)
    weight = (ccd.weight.astype(np.float32) / (gain[None, :] ** 2)).astype(np.float32)
    weight[(mask & maskbits.UNUSABLE) != 0] = 0.0
    weight[~np.isfinite(image)] = 0.0
    image[~np.isfinite(image)] = 0.0
    sats = [ccd.header.get(k) for k in ("SATURATA", "SATURATB")]
    sat_adu = min(float(s) for s in sats if s is not None) if any(
        s is not None for s in sats) else float(ccd.saturate or np.inf)
    sat_e = sat_adu * float(np.min(gain))
    rdn = [float(ccd.header[k]) for k in ("RDNOISEA", "RDNOISEB") if k in ccd.header]
    read_noise = float(np.mean(rdn)) if rdn else math.nan
    timings["units"] = time.perf_counter() - t_start

    am = ccd.header.get("AIRMASS")
    airmass = float(am) if isinstance(am, int | float) and am >= 1 else 1.0
    base = fits.Header()
    base["CCDNUM"] = (int(ccd.ccdnum), "CCD number")
    base["DETPOS"] = (ccd.detpos, "detector position")
    detrended = DetrendedCCD(
        image=image, mask=mask, weight=weight, ccdnum=int(ccd.ccdnum),
        expnum=int(ccd.expnum or 0), band=band,
        filter_name=str(ccd.header.get("FILTER", band)), exptime=float(ccd.exptime),
        mjd_obs=float(ccd.mjd_obs), airmass=airmass, saturation_e=float(sat_e),
        read_noise_e=read_noise, init_wcs=ccd.wcs, refcat=refcat, identity=base,
        header_extra={
            "CPGAINA": (float(ccd.header["GAINA"]), "[e-/ADU] CP gain of amplifier A, applied"),
            "CPGAINB": (float(ccd.header["GAINB"]), "[e-/ADU] CP gain of amplifier B, applied"),
            "CPIMAGE": (str(ccd.image_path).rsplit("/", 1)[-1][-68:], "CP InstCal image file"),
        },
        flagged_upstream=True,
        default_fwhm_px=float(ccd.fwhm_pix) if ccd.fwhm_pix and ccd.fwhm_pix > 0 else 4.0,
        default_fwhm_source="the CP header FWHM",
        wcs_max_shift_arcsec=CP_WCS_MAX_SHIFT_ARCSEC, keep_initial_wcs=True,
        first_pass_detect_base=False, detect_noise="variance", mean_sky=False,
        label="CP CCD")
    return process_detrended(detrended, config=config, timings=timings, t_start=t_start)
