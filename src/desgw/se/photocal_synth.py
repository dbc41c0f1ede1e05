"""Synthetic CCD catalogs and Gaia tables with a known zeropoint, for tests and demonstrations.

:func:`make_calibration_field` draws stars (Gaia G, BP, RP with a realistic high-latitude
colour distribution), predicts their true DES magnitude with
:func:`desgw.refcat.transforms.gaia_to_des` plus an intrinsic scatter, observes them with a
known zeropoint (Poisson and sky noise, a few blends and saturated stars) and adds galaxies
without Gaia counterparts. It returns the SExtractor-style catalog, the Gaia-style table and
the truth, so that calibration code can be checked against the zeropoint that made the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table
from numpy.typing import NDArray

from desgw.instrument.camera import PIXEL_SCALE_ARCSEC
from desgw.refcat.transforms import des_minus_g
from desgw.se import maskbits

__all__ = ["SyntheticField", "draw_gaia_stars", "make_calibration_field"]

#: DECam pixel scale at the field centre (arcsec/pixel).
PIXEL_SCALE = PIXEL_SCALE_ARCSEC
#: Number of SExtractor apertures in a DES fullcat (FLUX_APER has this many columns).
N_APER = 12


@dataclass(frozen=True, eq=False)
class SyntheticField:
    """A synthetic CCD calibration field.

    Attributes
    ----------
    catalog : astropy.table.Table
        SExtractor-style catalog (NUMBER, ALPHAWIN_J2000, DELTAWIN_J2000, FLUX_PSF, FLUXERR_PSF,
        MAG_PSF, MAGERR_PSF, FLUX_AUTO, FLUXERR_AUTO, MAG_AUTO, MAGERR_AUTO, FLUX_APER (N, 12),
        FLUXERR_APER, SPREAD_MODEL, SPREADERR_MODEL, CLASS_STAR, FLAGS, IMAFLAGS_ISO,
        FWHM_WORLD); fluxes in electrons over the exposure, MAG_* with ``sex_mag_zeropoint``.
    gaia : astropy.table.Table
        Gaia-style table (source_id, ra, dec, phot_g_mean_mag, phot_bp_mean_mag,
        phot_rp_mean_mag) of the stars, plus faint stars that are not in the catalog;
        source_id is unique across seeds (fields of different seeds can be stacked).
    true_mag : ndarray of float64, shape (len(catalog),)
        True DES magnitude of each catalog row (NaN for galaxies).
    is_star : ndarray of bool, shape (len(catalog),)
    bp_rp : ndarray of float64, shape (len(catalog),)
        True Gaia colour of each catalog row (NaN for galaxies).
    zp : float
        True zeropoint: ``m = -2.5 log10(FLUX_PSF_true [e-]) + zp``.
    corners_ra, corners_dec : ndarray of float64, shape (4,)
        Corners of the field (deg).
    """

    catalog: Table
    gaia: Table
    true_mag: NDArray[np.float64] = field(repr=False)
    is_star: NDArray[np.bool_] = field(repr=False)
    bp_rp: NDArray[np.float64] = field(repr=False)
    zp: float
    corners_ra: NDArray[np.float64] = field(repr=False)
    corners_dec: NDArray[np.float64] = field(repr=False)


def draw_gaia_stars(rng: np.random.Generator, n: int, *,
                    g_range: tuple[float, float] = (16.0, 20.5), red_fraction: float = 0.2
                    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """True Gaia G, BP, RP of ``n`` field stars at high Galactic latitude.

    G follows number counts rising as ``10**(0.25 G)`` within ``g_range``; BP-RP is a mixture
    of main-sequence turn-off / G-K dwarfs (normal, mean 0.85, sd 0.25, kept in 0.3..1.6) and a
    ``red_fraction`` of M dwarfs (uniform 1.6..3.0). BP and RP are placed with
    ``G - RP = 0.05 + 0.5 (BP-RP)`` (only BP-RP and G enter the transformations).

    Returns
    -------
    g, bp, rp : ndarray of float64, shape (n,)
    """
    lo, hi = g_range
    a = 0.25 * math.log(10.0)
    u = rng.uniform(size=n)
    g = np.log(np.exp(a * lo) + u * (np.exp(a * hi) - np.exp(a * lo))) / a
    red = rng.uniform(size=n) < red_fraction
    c = np.clip(rng.normal(0.85, 0.25, size=n), 0.3, 1.6)
    c[red] = rng.uniform(1.6, 3.0, size=int(red.sum()))
    rp = g - (0.05 + 0.5 * c)
    bp = rp + c
    return g, bp, rp


def make_calibration_field(*, band: str = "r", zp: float = 31.5, n_stars: int = 80,
                           n_galaxies: int = 40, n_faint_gaia: int = 10, n_saturated: int = 3,
                           blend_fraction: float = 0.03, intrinsic_scatter: float = 0.015,
                           ra0: float = 150.0, dec0: float = -30.0, fwhm_arcsec: float = 1.0,
                           sky_e_per_pixel: float = 1000.0, read_noise_e: float = 6.0,
                           astrometric_noise_arcsec: float = 0.05, gaia_mag_noise: float = 0.002,
                           sex_mag_zeropoint: float = 25.0, red_fraction: float = 0.2,
                           aper8_fraction: float = 0.95, gaia_errors: str = "constant",
                           variable_fraction: float = 0.0, seed: int = 0) -> SyntheticField:
    """A CCD-sized (0.15 x 0.30 deg) synthetic catalog and Gaia table with a known zeropoint.

    Parameters
    ----------
    band : str
        DES band with a Gaia transformation (g, r, i, z).
    zp : float
        True zeropoint: AB magnitude of 1 e- over the exposure.
    n_stars, n_galaxies : int
        Catalog stars (all with a Gaia entry) and galaxies (none).
    n_faint_gaia : int
        Gaia stars too faint to be in the catalog (G 21-21.5).
    n_saturated : int
        Extra bright stars (G ~ 14) marked saturated (FLAGS bit 4, IMAFLAGS SAT) with clipped
        fluxes: a correct calibration must ignore them.
    blend_fraction : float
        Fraction of stars made 0.3-1.0 mag too bright (unflagged blends): outliers to clip.
    intrinsic_scatter : float
        RMS (mag) of true DES magnitudes about the Gaia transformation.
    ra0, dec0 : float
        Field centre (deg).
    fwhm_arcsec, sky_e_per_pixel, read_noise_e : float
        Seeing, sky level per pixel over the exposure (e-) and read noise (e-), for the noise.
    astrometric_noise_arcsec : float
        Per-axis catalog position noise (arcsec).
    gaia_mag_noise : float
        Noise on Gaia G, BP and RP (mag) (the true colours enter the truth).
    sex_mag_zeropoint : float
        Zeropoint of the MAG_* columns.
    red_fraction : float
        Fraction of M dwarfs (see :func:`draw_gaia_stars`).
    aper8_fraction : float
        FLUX_APER[:, 7] (the DES ``MAG_APER_8`` aperture) holds this fraction of the PSF flux.
    gaia_errors : {"constant", "gaia"}
        ``"constant"``: ``gaia_mag_noise`` on every magnitude, no error columns. ``"gaia"``:
        errors growing with G as Gaia's (G: ``sqrt(0.0003^2 + (0.005 10^(0.2 (G - 20)))^2)``
        mag, BP and RP 12x and 8x the photon term, as in Gaia DR3's bright-to-faint trend),
        and the ``phot_{g,bp,rp}_mean_flux_over_error`` columns that state them.
    variable_fraction : float
        Fraction of the stars that are variable: tonight's magnitude differs from Gaia's mean
        by ``A sin(phase)`` with ``A`` uniform in 0.05-0.3 mag; Gaia flags them
        (``phot_variable_flag`` "VARIABLE", the others "NOT_AVAILABLE"). With 0 the table has
        no flag column.
    seed : int
        Random seed.

    Returns
    -------
    SyntheticField
    """
    rng = np.random.default_rng(seed)
    half_ra = 0.075 / math.cos(math.radians(dec0))
    half_dec = 0.15
    n_sat = int(n_saturated)
    n_tot_stars = n_stars + n_sat
    g, bp, rp = draw_gaia_stars(rng, n_tot_stars, red_fraction=red_fraction)
    g[n_stars:] = rng.uniform(13.5, 14.5, size=n_sat)
    c_true = bp - rp
    true_mag_star = g + des_minus_g(band, c_true) + rng.normal(0, intrinsic_scatter, n_tot_stars)

    star_ra = ra0 + rng.uniform(-half_ra, half_ra, n_tot_stars)
    star_dec = dec0 + rng.uniform(-half_dec, half_dec, n_tot_stars)
    gal_ra = ra0 + rng.uniform(-half_ra, half_ra, n_galaxies)
    gal_dec = dec0 + rng.uniform(-half_dec, half_dec, n_galaxies)
    gal_mag = rng.uniform(17.0, 21.5, n_galaxies)

    ra = np.concatenate([star_ra, gal_ra])
    dec = np.concatenate([star_dec, gal_dec])
    # a variable's Gaia magnitudes (g, bp, rp) are its means; tonight it is brighter or fainter
    variable = np.zeros(n_tot_stars, dtype=bool)
    if variable_fraction > 0:
        variable = rng.uniform(size=n_tot_stars) < variable_fraction
        nv = int(variable.sum())
        true_mag_star[variable] += (rng.uniform(0.05, 0.3, nv)
                                    * np.sin(rng.uniform(0.0, 2.0 * math.pi, nv)))
    mag_true = np.concatenate([true_mag_star, gal_mag])
    is_star = np.concatenate([np.ones(n_tot_stars, bool), np.zeros(n_galaxies, bool)])
    n = ra.size
    flux_true = 10.0 ** (-0.4 * (mag_true - zp))
    sigma_pix = fwhm_arcsec / 2.3548 / PIXEL_SCALE
    npix = 4.0 * math.pi * sigma_pix ** 2
    var = flux_true + npix * (sky_e_per_pixel + read_noise_e ** 2)
    fluxerr = np.sqrt(var)
    flux = flux_true + rng.normal(0, 1, n) * fluxerr
    blend = is_star & (rng.uniform(size=n) < blend_fraction)
    blend[n_stars:n_tot_stars] = False
    flux[blend] *= 10.0 ** (0.4 * rng.uniform(0.3, 1.0, int(blend.sum())))
    flags = np.zeros(n, np.int16)
    imaflags = np.zeros(n, np.int32)
    flags[n_stars:n_tot_stars] = 4
    imaflags[n_stars:n_tot_stars] = maskbits.SAT
    flux[n_stars:n_tot_stars] = np.minimum(flux[n_stars:n_tot_stars], 3.0e6)
    flags[rng.uniform(size=n) < 0.1] |= 2  # some blended-flag objects (tolerated)
    flux_auto = flux * (1.0 + rng.normal(0, 0.005, n))
    flux_aper = np.outer(flux, np.linspace(0.3, 1.05, N_APER))
    flux_aper[:, 7] = flux * aper8_fraction
    ferr_aper = np.outer(fluxerr, np.ones(N_APER))

    cat_ra = ra + rng.normal(0, astrometric_noise_arcsec, n) / 3600.0 / math.cos(math.radians(dec0))
    cat_dec = dec + rng.normal(0, astrometric_noise_arcsec, n) / 3600.0
    with np.errstate(invalid="ignore", divide="ignore"):
        mag_psf = np.where(flux > 0, -2.5 * np.log10(flux) + sex_mag_zeropoint, 99.0)
        mag_auto = np.where(flux_auto > 0, -2.5 * np.log10(flux_auto) + sex_mag_zeropoint, 99.0)
        magerr = np.where(flux > 0, 1.0857 * fluxerr / flux, 99.0)
    class_star = np.where(is_star, rng.uniform(0.85, 1.0, n), rng.uniform(0.0, 0.5, n))
    spread = np.where(is_star, rng.normal(0, 0.002, n), rng.uniform(0.012, 0.05, n))
    fwhm_world = np.where(is_star, fwhm_arcsec, fwhm_arcsec * 1.6) * (1 + rng.normal(0, 0.03, n))
    order = rng.permutation(n)
    cat = Table()
    cat["NUMBER"] = np.arange(1, n + 1, dtype=np.int32)
    cat["ALPHAWIN_J2000"] = cat_ra[order]
    cat["DELTAWIN_J2000"] = cat_dec[order]
    cat["FLUX_PSF"] = flux[order].astype(np.float32)
    cat["FLUXERR_PSF"] = fluxerr[order].astype(np.float32)
    cat["MAG_PSF"] = mag_psf[order].astype(np.float32)
    cat["MAGERR_PSF"] = magerr[order].astype(np.float32)
    cat["FLUX_AUTO"] = flux_auto[order].astype(np.float32)
    cat["FLUXERR_AUTO"] = fluxerr[order].astype(np.float32)
    cat["MAG_AUTO"] = mag_auto[order].astype(np.float32)
    cat["MAGERR_AUTO"] = magerr[order].astype(np.float32)
    cat["FLUX_APER"] = flux_aper[order].astype(np.float32)
    cat["FLUXERR_APER"] = ferr_aper[order].astype(np.float32)
    cat["SPREAD_MODEL"] = spread[order].astype(np.float32)
    cat["SPREADERR_MODEL"] = np.full(n, 0.002, np.float32)
    cat["CLASS_STAR"] = class_star[order].astype(np.float32)
    cat["FLAGS"] = flags[order]
    cat["IMAFLAGS_ISO"] = imaflags[order]
    cat["FWHM_WORLD"] = (fwhm_world[order] / 3600.0).astype(np.float32)

    # Gaia: the stars (observed with noise) plus faint ones not in the catalog
    f_ra = ra0 + rng.uniform(-half_ra, half_ra, n_faint_gaia)
    f_dec = dec0 + rng.uniform(-half_dec, half_dec, n_faint_gaia)
    fg, fbp, frp = draw_gaia_stars(rng, n_faint_gaia, g_range=(21.0, 21.5))
    gaia = Table()
    gaia["source_id"] = (np.arange(n_tot_stars + n_faint_gaia, dtype=np.int64) + 10**15
                         + (int(seed) % 10**8) * 10**6)  # unique across seeds
    gaia["ra"] = np.concatenate([star_ra, f_ra])
    gaia["dec"] = np.concatenate([star_dec, f_dec])
    if gaia_errors == "constant":
        noise = rng.normal(0, gaia_mag_noise, (3, n_tot_stars))
    elif gaia_errors == "gaia":
        photon = 0.005 * 10.0 ** (0.2 * (g - 20.0))
        sig = np.array([np.hypot(0.0003, photon), 12.0 * photon, 8.0 * photon])
        noise = rng.normal(0.0, 1.0, (3, n_tot_stars)) * sig
        fphoton = 0.005 * 10.0 ** (0.2 * (fg - 20.0))
        fsig = np.array([np.hypot(0.0003, fphoton), 12.0 * fphoton, 8.0 * fphoton])
    else:
        raise ValueError(f"gaia_errors must be 'constant' or 'gaia', got {gaia_errors!r}")
    gaia["phot_g_mean_mag"] = np.concatenate([g + noise[0], fg])
    gaia["phot_bp_mean_mag"] = np.concatenate([bp + noise[1], fbp])
    gaia["phot_rp_mean_mag"] = np.concatenate([rp + noise[2], frp])
    if gaia_errors == "gaia":
        for i, b in enumerate(("g", "bp", "rp")):
            gaia[f"phot_{b}_mean_flux_over_error"] = np.concatenate(
                [1.0857 / sig[i], 1.0857 / fsig[i]]).astype(np.float32)
    if variable_fraction > 0:
        gaia["phot_variable_flag"] = np.where(
            np.concatenate([variable, np.zeros(n_faint_gaia, bool)]), "VARIABLE", "NOT_AVAILABLE")

    c_row = np.concatenate([c_true, np.full(n_galaxies, np.nan)])
    true_row = np.where(is_star, mag_true, np.nan)
    cr = np.array([ra0 - half_ra, ra0 + half_ra, ra0 + half_ra, ra0 - half_ra])
    cd = np.array([dec0 - half_dec, dec0 - half_dec, dec0 + half_dec, dec0 + half_dec])
    return SyntheticField(catalog=cat, gaia=gaia, true_mag=true_row[order], is_star=is_star[order],
                          bp_rp=c_row[order], zp=float(zp), corners_ra=cr, corners_dec=cd)
