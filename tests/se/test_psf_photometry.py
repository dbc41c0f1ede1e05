"""Bright-star PSF fluxes and zeropoints against truth over a grid of PSF shapes.

galsim fields (1024 x 1024 px, 250 stars >= 24 px apart, so most PSF stars have neighbours
within the stamp), FWHM varying 12 % and ellipticity 0.06 across the field. The sky is the
true one, so the PSF-fit amplitude alone is tested (the issue's 0.1-0.3 % excess):
neighbour light entering the model's wings made FLUX_PSF / true +0.2 % (Moffat beta 3,
FWHM 3 px) to +0.4 % (beta 2.5, FWHM 4.5 px, 41 px stamp) before the PSF fit masked and
subtracted neighbours. Zeropoints (aperture-corrected PSF fluxes vs total fluxes) are within
1 mmag for Moffat and Kolmogorov PSFs.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree
from test_psf_synth import make_field

from desgw.se.background import estimate_background
from desgw.se.detect import DetectConfig, detect_sources
from desgw.se.measure import measure_sources
from desgw.se.process_steps import psf_aperture_correction, psf_config_for_seeing
from desgw.se.psf import PSFConfig, fit_psf, select_psf_candidates

GRID = [("moffat", 2.5, 4.5), ("moffat", 3.0, 3.0), ("moffat", 3.5, 3.4), ("moffat", 5.0, 6.0),
        ("kolmogorov", 0.0, 4.0)]


def _run(kind, beta, fwhm):
    stamp = psf_config_for_seeing(PSFConfig(), fwhm).stamp
    f = make_field(shape=(1024, 1024), n_stars=250, n_gal=0, fwhm0=fwhm, beta=beta or 3.0,
                   kind=kind, mag_range=(15.5, 19.0), seed=5, box=stamp)
    dcfg = DetectConfig(filter_fwhm=fwhm)
    bkg = estimate_background(f.image, f.mask)
    det = detect_sources(f.image - bkg.level, bkg.rms, f.mask, config=dcfg)
    c = det.catalog
    xy = np.column_stack([c["xwin"], c["ywin"]])
    cand = select_psf_candidates(det)
    psf = fit_psf(f.image - f.sky, f.weight, f.mask, xy[cand, 0], xy[cand, 1], segmap=det.segmap,
                  neighbour_xy=xy, config=PSFConfig(stamp=stamp))
    cat = measure_sources(f.image, f.weight, f.mask, f.sky, det, psf)
    d, i = cKDTree(xy).query(np.column_stack([f.stars["x"], f.stars["y"]]))
    s = f.stars
    ok = (d < 1.5) & s["isolated"] & ~s["masked"]
    flux = np.asarray(cat["FLUX_PSF"], dtype=np.float64)[i[ok]]
    snr = flux / np.asarray(cat["FLUXERR_PSF"], dtype=np.float64)[i[ok]]
    bright = snr > 300
    assert bright.sum() >= 40
    return (flux[bright], s["flux_box"][ok][bright], s["flux"][ok][bright],
            psf_aperture_correction(psf))


@pytest.mark.parametrize("kind,beta,fwhm", GRID, ids=[f"{k}-b{b}-fwhm{w}" for k, b, w in GRID])
def test_bright_star_psf_flux_and_zeropoint(kind, beta, fwhm):
    flux, flux_box, flux_total, apcor = _run(kind, beta, fwhm)
    ratio = float(np.median(flux / flux_box))
    # FLUX_PSF measures the flux in the model stamp: measured -0.02 ... +0.02 %; +0.02 ... +0.08
    # % before the model was fitted through the photometry's sub-pixel rendering
    assert abs(ratio - 1) < 5e-4, ratio
    # zeropoint from aperture-corrected PSF fluxes vs total fluxes, the mean of the magnitude
    # differences as desgw.se.photocal's default estimator (the median is skewed here: one
    # aperture correction for the whole field, whose FWHM varies 12 %, leaves the stars' light
    # outside the stamp varying +-0.4 % over the field for Moffat beta 2.5)
    dzp = 2.5 * float(np.mean(np.log10(flux * apcor / flux_total)))
    # measured -0.66, -0.16, -0.17, +0.10 mmag (Moffat beta 2.5, 3, 3.5, 5) and -0.13 mmag
    # (Kolmogorov), errors of the mean 0.3-0.6 mmag; -6.1 mmag for Kolmogorov when the
    # aperture correction had only a Moffat-form wing
    assert abs(dzp) < 1e-3, dzp


def test_neighbours_kept_out_of_the_psf_model():
    """A wide stamp (41 px) on a field whose stars are >= 24 px apart: neighbours' light in the
    stamps' outskirts made the model's wings too bright and FLUX_PSF too high (measured +0.39 %
    without the segmentation map and neighbour subtraction, +0.09 % with them)."""
    f = make_field(shape=(1024, 1024), n_stars=250, n_gal=0, fwhm0=4.5, beta=2.5,
                   mag_range=(15.5, 19.0), seed=5, box=41)
    det = detect_sources(f.image - f.sky, np.sqrt(f.sky + f.read_noise ** 2), f.mask,
                         config=DetectConfig(filter_fwhm=4.5))
    c = det.catalog
    xy = np.column_stack([c["xwin"], c["ywin"]])
    cand = select_psf_candidates(det)
    d, i = cKDTree(xy).query(np.column_stack([f.stars["x"], f.stars["y"]]))
    ok = (d < 1.5) & f.stars["isolated"] & ~f.stars["masked"]
    ratios = []
    for kw in ({}, {"segmap": det.segmap, "neighbour_xy": xy}):
        psf = fit_psf(f.image - f.sky, f.weight, f.mask, xy[cand, 0], xy[cand, 1],
                      config=PSFConfig(stamp=41), **kw)
        cat = measure_sources(f.image, f.weight, f.mask, f.sky, det, psf)
        flux = np.asarray(cat["FLUX_PSF"], dtype=np.float64)[i[ok]]
        bright = flux / np.asarray(cat["FLUXERR_PSF"], dtype=np.float64)[i[ok]] > 300
        ratios.append(float(np.median(flux[bright] / f.stars["flux_box"][ok][bright])) - 1)
    without, with_ = ratios
    assert without > 0.0025, ratios
    assert abs(with_) < 0.0015, ratios
