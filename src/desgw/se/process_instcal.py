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
3. **Background, detection, seeing** as :func:`~desgw.se.process.process_ccd` (the background
   mesh shrinks to a quarter of the image side on cut-outs smaller than 4 meshes); the seeing
   defaults to the CP header ``FWHM`` when too few stars give their own.
4. **PSF** (desgw's, :func:`desgw.se.process.fit_ccd_psf`, with the sparse-field fallbacks),
   **measurement**, **astrometry**: the CP TPV WCS refined against Gaia
   (:func:`desgw.se.process.solve_ccd_wcs`: the polynomial fit, or a shift with few stars;
   with no matched star at all the CP WCS is kept, flagged), **zeropoint** and **QC**.

No L.A.Cosmic pass is run: the CP has flagged cosmic rays (code 5).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from desgw.errors import HeaderError
from desgw.instrument import CCD_SHAPE
from desgw.io.instcal import InstCalCCD, instcal_gain_columns
from desgw.refcat.quality import gaia_quality_mask
from desgw.se import maskbits
from desgw.se.astrometry import AstrometryError, AstrometryResult
from desgw.se.background import estimate_background
from desgw.se.detect import detect_sources
from desgw.se.measure import measure_sources
from desgw.se.process import (
    CCDResult,
    SEConfig,
    _apply_psf_aperture_correction,
    _astrometry_rows,
    _pixel_scale_arcsec,
    _zeropoint,
    fit_ccd_psf,
    flag_quality,
    solve_ccd_wcs,
)
from desgw.se.process_header import ccd_product_header
from desgw.se.process_steps import (
    detect_config_for_seeing,
    estimate_seeing,
    psf_aperture_correction,
    psf_config_for_seeing,
    weight_rescale_factor,
)
from desgw.se.process_wcs import ccd_corners
from desgw.se.psf_columns import psf_fwhm_at
from desgw.se.quality import QC_BANDS, assess_quality, compute_qc_metrics

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


def _corners(wcs: WCS, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Corners as :func:`desgw.se.process_wcs.ccd_corners` for a full CCD; for a cut-out its
    outer pixel corners (1-based (0.5, 0.5) ... (nx + 0.5, ny + 0.5))."""
    if tuple(shape) == tuple(CCD_SHAPE):
        return ccd_corners(wcs)
    ny, nx = shape
    x = np.array([0.5, nx + 0.5, nx + 0.5, 0.5])
    y = np.array([0.5, 0.5, ny + 0.5, ny + 0.5])
    ra, dec = wcs.all_pix2world(x, y, 1)
    return np.asarray(ra, dtype=np.float64) % 360.0, np.asarray(dec, dtype=np.float64)


def _unrefined(wcs: WCS, n_det: int, n_ref: int) -> AstrometryResult:
    z = np.zeros(0, dtype=np.intp)
    return AstrometryResult(wcs=wcs, n_detections=n_det, n_refs=n_ref, n_matched=0, n_used=0,
                            rms_ra_arcsec=math.nan, rms_dec_arcsec=math.nan,
                            rms_arcsec=math.nan, sip_order=0, fit_order=0,
                            wcs_max_error_arcsec=0.0, src_index=z, ref_index=z,
                            used=np.zeros(0, dtype=bool), offset_ra_arcsec=0.0,
                            offset_dec_arcsec=0.0, rotation_deg=0.0, scale_ratio=1.0, bic={},
                            inverse_max_error_pix=0.0)


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
    t_start = t0 = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t0
        t1 = time.perf_counter()
        timings[name] = timings.get(name, 0.0) + (t1 - t0)
        t0 = t1

    path = ccd.image_path
    band = ccd.band
    if band not in QC_BANDS:
        raise HeaderError(path, 0, f"FILTER/BAND {band!r} is not a DES band "
                          f"({', '.join(QC_BANDS)}): cannot calibrate", keyword="FILTER")
    if ccd.ccdnum < 1:
        raise HeaderError(path, ccd.detpos or None, "no CCDNUM in the CCD header",
                          keyword="CCDNUM")
    ny, nx = ccd.shape
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
    lap("units")

    bcfg = config.background
    if min(ny, nx) < 4 * bcfg.mesh:
        bcfg = replace(bcfg, mesh=max(8, min(ny, nx) // 4))
    bkg1 = estimate_background(image, mask, config=bcfg)
    sub = image - bkg1.level
    det1 = detect_sources(sub, bkg1.rms, mask, config=config.detect)
    cp_fwhm = float(ccd.fwhm_pix) if ccd.fwhm_pix and ccd.fwhm_pix > 0 else 4.0
    max_peak = config.psf_max_peak_fraction * sat_e - bkg1.global_level
    seeing = estimate_seeing(det1, sub, max_peak=max_peak, default_fwhm=cp_fwhm,
                             half_size=max(3, min(15, (min(ny, nx) - 1) // 2 - 1)))
    lap("first_pass")

    bkg = estimate_background(image, mask, objects=det1.segmap, config=bcfg)
    np.subtract(image, bkg.level, out=sub)
    wscale = (weight_rescale_factor(sub, weight, mask, det1.segmap)
              if config.rescale_weight else 1.0)
    if not (math.isfinite(wscale) and wscale > 0):
        wscale = 1.0
    if wscale != 1.0:
        weight *= np.float32(1.0 / wscale)
    det_cfg = detect_config_for_seeing(config.detect, seeing.fwhm_px, snr=config.detect_snr,
                                       minarea=config.detect_minarea)
    with np.errstate(divide="ignore"):
        variance = np.where(weight > 0, 1.0 / weight, np.inf).astype(np.float32)
    det = detect_sources(sub, variance, mask, noise_type="variance", config=det_cfg)
    lap("detect")

    from desgw.se.psf import select_psf_candidates

    flags: dict[str, str] = {}
    cand = select_psf_candidates(det, max_peak=config.psf_max_peak_fraction * sat_e
                                 - bkg.global_level)
    psf_cfg = psf_config_for_seeing(config.psf, seeing.fwhm_px, stamp_fwhm=config.psf_stamp_fwhm)
    source = "the first-pass seeing" if seeing.n_stars else "the CP header FWHM"
    det_xy = np.column_stack([np.asarray(det.catalog["xwin"], dtype=np.float64),
                              np.asarray(det.catalog["ywin"], dtype=np.float64)])
    psf = fit_ccd_psf(sub, weight, mask, det_xy[cand, 0], det_xy[cand, 1], psf_cfg, config,
                      seeing.fwhm_px, flags, fwhm_source=source, segmap=det.segmap,
                      neighbour_xy=det_xy)
    lap("psf")

    init_wcs = ccd.wcs
    mcfg = replace(config.measure, zeropoint=config.sex_mag_zeropoint)
    catalog = measure_sources(image, weight, mask, bkg, det, psf, wcs=init_wcs, exptime=None,
                              config=mcfg)
    margin = min(100.0, 0.25 * min(ny, nx))
    apcor = psf_aperture_correction(psf, margin=margin) if config.psf_aperture_correction \
        else 1.0
    _apply_psf_aperture_correction(catalog, apcor, config.sex_mag_zeropoint)
    lap("measure")

    rows = _astrometry_rows(catalog)
    ref = refcat[gaia_quality_mask(refcat, cuts=config.gaia_quality)]
    x = np.asarray(catalog["XWIN_IMAGE"], dtype=np.float64)[rows] - 1.0
    y = np.asarray(catalog["YWIN_IMAGE"], dtype=np.float64)[rows] - 1.0
    try:
        astro = solve_ccd_wcs(x, y, ref, init_wcs,
                              flux=np.asarray(catalog["FLUX_AUTO"])[rows],
                              xy_err=np.asarray(catalog["ERRAWIN_IMAGE"], dtype=np.float64)[rows],
                              image_shape=image.shape, config=config, flags=flags,
                              max_shift_arcsec=CP_WCS_MAX_SHIFT_ARCSEC)
    except AstrometryError as exc:
        if not config.sparse_fallbacks:
            raise
        flags["wcs"] = f"CP WCS not refined: {exc.reason}"
        astro = _unrefined(init_wcs, int(rows.size), len(ref))
    wcs = astro.wcs
    if len(catalog):
        ra, dec = wcs.all_pix2world(np.asarray(catalog["XWIN_IMAGE"]) - 1.0,
                                    np.asarray(catalog["YWIN_IMAGE"]) - 1.0, 0)
        catalog["ALPHAWIN_J2000"] = ra
        catalog["DELTAWIN_J2000"] = dec
    scale_deg = float(np.sqrt(np.prod(proj_plane_pixel_scales(wcs.celestial))))
    catalog["FWHM_WORLD"] = (np.asarray(catalog["FWHM_IMAGE"], dtype=np.float64)
                             * scale_deg).astype(np.float32)
    fwhm_psf = psf_fwhm_at(psf, np.asarray(catalog["XWIN_IMAGE"]) - 1.0,
                           np.asarray(catalog["YWIN_IMAGE"]) - 1.0)
    catalog["FWHMPSF_IMAGE"] = fwhm_psf
    catalog["FWHMPSF_IMAGE"].unit = u.pix
    catalog["FWHMPSF_WORLD"] = (fwhm_psf.astype(np.float64) * scale_deg).astype(np.float32)
    catalog["FWHMPSF_WORLD"].unit = u.deg
    lap("astrometry")

    zp, zp_reason = _zeropoint(catalog, ref, band, config, flags)
    lap("zeropoint")

    xc, yc = (nx - 1) / 2.0, (ny - 1) / 2.0
    pixscale = _pixel_scale_arcsec(wcs, xc, yc)
    fwhm_px = float(psf.fwhm_at(xc, yc))
    am = ccd.header.get("AIRMASS")
    airmass = float(am) if isinstance(am, int | float) and am >= 1 else 1.0
    metrics = compute_qc_metrics(band=band, exptime=float(ccd.exptime), airmass=airmass,
                                 fwhm_arcsec=fwhm_px * pixscale, sky_level_e=bkg.global_level,
                                 zp=zp.zp if zp is not None else math.nan,
                                 astrometric_rms_arcsec=astro.rms_arcsec, n_stars=astro.n_used,
                                 pixel_scale_arcsec=pixscale)
    qc = assess_quality(metrics, thresholds=config.qc)
    if zp_reason is not None:
        qc = replace(qc, passed=False, reasons=(*qc.reasons, zp_reason))
    qc = flag_quality(qc, flags)
    corners = _corners(wcs, image.shape)
    lap("qc")

    base = fits.Header()
    base["CCDNUM"] = (int(ccd.ccdnum), "CCD number")
    base["DETPOS"] = (ccd.detpos, "detector position")
    header = ccd_product_header(base, wcs, {
        "EXPNUM": (int(ccd.expnum or 0), "DECam exposure number"),
        "BAND": (band, "DES band"),
        "FILTER": (str(ccd.header.get("FILTER", band)), "filter of the exposure"),
        "EXPTIME": (float(ccd.exptime), "[s] exposure time"),
        "MJD-OBS": (float(ccd.mjd_obs), "MJD of the shutter opening"),
        "AIRMASS": (airmass, "airmass"),
        "BUNIT": ("electrons", "image unit"),
        "GAIN": (1.0, "[e-/unit] image is in electrons"),
        "CPGAINA": (float(ccd.header["GAINA"]), "[e-/ADU] CP gain of amplifier A, applied"),
        "CPGAINB": (float(ccd.header["GAINB"]), "[e-/ADU] CP gain of amplifier B, applied"),
        "CPIMAGE": (str(ccd.image_path).rsplit("/", 1)[-1][-68:], "CP InstCal image file"),
        "SATURATE": (float(sat_e), "[e-] lowest amplifier saturation level"),
        "RDNOISE": (read_noise, "[e-] mean amplifier read noise"),
        "AVSKY": (float(bkg.global_level), "[e-] median sky level"),
        "SKYSIGMA": (float(bkg.global_rms), "[e-] median sky noise"),
        "WGTSCALE": (wscale, "sky var measured/model (weight divided by it)"),
        "FWHM": (fwhm_px, "[pix] PSF FWHM at the CCD centre"),
        "FWHMASEC": (fwhm_px * pixscale, "[arcsec] PSF FWHM at the CCD centre"),
        "PSFNSTAR": (psf.n_stars, "stars in the PSF model"),
        "PSFSTAMP": (psf.stamp_size, "[pix] PSF model stamp side"),
        "PSFAPCOR": (apcor, "total / PSF-stamp flux, applied to FLUX_PSF"),
        "NOBJECT": (len(catalog), "catalog rows"),
        "ASTRNMAT": (astro.n_used, "Gaia stars in the astrometric fit"),
        "ASTRRMS": (astro.rms_arcsec, "[arcsec] astrometric rms vs Gaia"),
        "ASTRORD": (astro.sip_order, "SIP order of the WCS (0: shift or none)"),
        "MAGZERO": (zp.zp if zp is not None else math.nan,
                    f"AB zeropoint of {config.mags_type} flux in e-"),
        "MAGZERR": (zp.zp_err if zp is not None else math.nan, "error of MAGZERO"),
        "MAGZNSTR": (zp.n_used if zp is not None else 0, "stars in the zeropoint"),
        "COLTERMS": (bool(config.use_color_terms), "Gaia colour terms in the zeropoint"),
        "SEXMAGZP": (config.sex_mag_zeropoint, "zeropoint of the catalog MAG_ columns"),
        "QCPASS": (bool(qc.passed), "single-epoch quality check passed"),
        "DEGRADED": (",".join(sorted(flags)) or "none", "steps degraded for lack of stars"),
        "DESGWCFG": (config.hash(), "hash of the SEConfig settings"),
    })
    timings["total"] = time.perf_counter() - t_start
    log.info("CP CCD %d: %d objects, FWHM %.2f\", astrometry %s, ZP %s, QC %s (%.2f s)",
             ccd.ccdnum, len(catalog), fwhm_px * pixscale,
             f"{1e3 * astro.rms_arcsec:.0f} mas ({astro.n_used} stars)",
             "none" if zp is None else f"{zp.zp:.4f}",
             "pass" if qc.passed else "FAIL: " + "; ".join(qc.reasons), timings["total"])
    return CCDResult(ccdnum=int(ccd.ccdnum), image=image, mask=mask, weight=weight, wcs=wcs,
                     header=header, catalog=catalog, psf=psf, background=bkg, astrometry=astro,
                     zeropoint=zp, qc=qc, timings=timings, corners=corners, flags=flags)
