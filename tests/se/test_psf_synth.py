"""Synthetic CCD fields with known truth for the background/detect/PSF/measure tests.

``make_field`` draws galsim Moffat stars whose FWHM and ellipticity vary across the CCD, Sersic
galaxies, a sky with a gradient, Gaussian noise with the right variance (sky + read noise +
source photons) and masked pixels. The module also tests that the truth it returns is
self-consistent, so a wrong fixture cannot pass silently.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import galsim
import numpy as np
import sep

from desgw.se import maskbits
from desgw.se.measure import DES_APERTURE_DIAMETERS

PIXEL_SCALE = 0.263  # arcsec / pix


@dataclass(frozen=True)
class PSFTruth:
    """FWHM(x, y) = fwhm0 (1 + gx (x/nx - 0.5) + gy (y/ny - 0.5)); e1/e2 linear likewise."""

    fwhm0: float
    gx: float
    gy: float
    e1_0: float
    e1_x: float
    e2_0: float
    e2_y: float
    beta: float
    shape: tuple[int, int]
    kind: str = "moffat"  # or "kolmogorov" (beta unused)

    def fwhm(self, x, y):
        ny, nx = self.shape
        return self.fwhm0 * (1 + self.gx * (np.asarray(x) / nx - 0.5) + self.gy * (np.asarray(y) / ny - 0.5))

    def e1(self, x, y):
        return self.e1_0 + self.e1_x * (np.asarray(x) / self.shape[1] - 0.5)

    def e2(self, x, y):
        return self.e2_0 + self.e2_y * (np.asarray(y) / self.shape[0] - 0.5)

    def profile(self, x, y):
        fwhm = float(self.fwhm(x, y))
        prof = (galsim.Kolmogorov(fwhm=fwhm) if self.kind == "kolmogorov"
                else galsim.Moffat(beta=self.beta, fwhm=fwhm))
        return prof.shear(e1=float(self.e1(x, y)), e2=float(self.e2(x, y)))


@dataclass(frozen=True)
class Field:
    image: np.ndarray      # sky + objects + noise, float32, e-
    noiseless: np.ndarray  # objects only, float32, e-
    sky: np.ndarray        # sky level, float32
    weight: np.ndarray     # inverse variance of sky + read noise, 0 where masked
    mask: np.ndarray       # int32 mask bits
    psf: PSFTruth
    stars: dict            # x, y (0-based), flux, flux_box (in the PSF stamp box), flux_aper (own
    #                        flux in the DES apertures, no neighbours), isolated, masked, cr
    galaxies: dict         # x, y, flux, hlr_arcsec
    read_noise: float
    box: int               # stamp size the flux_box refers to


def _draw(img, prof, x, y, half):
    ix, iy = int(round(x)), int(round(y))
    n = 2 * half + 1
    st = prof.drawImage(nx=n, ny=n, scale=1.0, offset=(x - ix, y - iy)).array
    ny, nx = img.shape
    y0, y1, x0, x1 = iy - half, iy + half + 1, ix - half, ix + half + 1
    sy0, sx0 = max(0, -y0), max(0, -x0)
    sy1, sx1 = n - max(0, y1 - ny), n - max(0, x1 - nx)
    img[max(y0, 0):min(y1, ny), max(x0, 0):min(x1, nx)] += st[sy0:sy1, sx0:sx1]
    return st


@functools.lru_cache(maxsize=8)
def make_field(shape=(2048, 2048), n_stars=600, n_gal=150, fwhm0=4.0, gx=0.12, gy=-0.08,
               beta=3.0, sky=1200.0, read_noise=7.0, seed=1, box=25, mag_range=(15.0, 21.5),
               min_sep=24.0, gal_hlr=(0.5, 1.5), n_masked_stars=8, kind="moffat"):
    """A synthetic CCD (cached; treat the arrays as read-only)."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    psf = PSFTruth(fwhm0=fwhm0, gx=gx, gy=gy, e1_0=0.02, e1_x=0.06, e2_0=-0.01, e2_y=0.05,
                   beta=beta, shape=shape, kind=kind)
    # Star positions on a jittered grid so most are isolated; galaxies in between.
    n_tot = n_stars + n_gal
    xs, ys = [], []
    while len(xs) < n_tot:
        x = rng.uniform(30, nx - 31)
        y = rng.uniform(30, ny - 31)
        if xs:
            d = np.hypot(np.array(xs) - x, np.array(ys) - y).min()
            if d < min_sep:
                continue
        xs.append(x)
        ys.append(y)
    xs, ys = np.array(xs), np.array(ys)
    sx, sy = xs[:n_stars], ys[:n_stars]
    gxp, gyp = xs[n_stars:], ys[n_stars:]
    mags = rng.uniform(*mag_range, n_stars)
    sflux = 10 ** (-0.4 * (mags - 30.0))  # zp 30 e-
    noiseless = np.zeros(shape, dtype=np.float64)
    half = max(3 * box // 2, 40)
    flux_box = np.empty(n_stars)
    radii = 0.5 * np.asarray(DES_APERTURE_DIAMETERS)
    flux_aper = np.empty((n_stars, len(radii)))
    hb = box // 2
    for i in range(n_stars):
        prof = psf.profile(sx[i], sy[i]).withFlux(float(sflux[i]))
        st = _draw(noiseless, prof, sx[i], sy[i], half)
        flux_box[i] = st[half - hb:half + hb + 1, half - hb:half + hb + 1].sum()
        cx = half + sx[i] - round(sx[i])
        cy = half + sy[i] - round(sy[i])
        flux_aper[i] = sep.sum_circle(np.ascontiguousarray(st, dtype=np.float64), np.full(len(radii), cx),
                                      np.full(len(radii), cy), radii, subpix=11)[0]
    gflux = 10 ** (-0.4 * (rng.uniform(17.5, 20.5, n_gal) - 30.0))
    hlr = rng.uniform(*gal_hlr, n_gal)
    gq = rng.uniform(0.4, 1.0, n_gal)
    gpa = rng.uniform(0, np.pi, n_gal)
    nser = rng.choice([1.0, 1.5, 2.5], n_gal)
    gsp = galsim.GSParams(maximum_fft_size=8192)
    for i in range(n_gal):
        gal = galsim.Sersic(n=float(nser[i]), half_light_radius=float(hlr[i] / PIXEL_SCALE),
                            flux=float(gflux[i]), trunc=float(8 * hlr[i] / PIXEL_SCALE), gsparams=gsp)
        gal = gal.shear(q=float(gq[i]), beta=float(gpa[i]) * galsim.radians)
        conv = galsim.Convolve(gal, psf.profile(gxp[i], gyp[i]), gsparams=gsp)
        _draw(noiseless, conv, gxp[i], gyp[i], half)
    yy, xx = np.mgrid[:ny, :nx]
    skyimg = sky * (1 + 0.05 * (xx / nx - 0.5) + 0.03 * (yy / ny - 0.5) ** 2)
    var = skyimg + read_noise ** 2 + np.maximum(noiseless, 0)
    image = skyimg + noiseless + rng.normal(size=shape) * np.sqrt(var)
    weight = 1.0 / (skyimg + read_noise ** 2)
    mask = np.zeros(shape, dtype=np.int32)
    # Two bad columns and a few cosmic rays on stars (garbage values, masked).
    for col in (nx // 3, 2 * nx // 3):
        mask[:, col] |= maskbits.BADPIX
    star_masked = np.zeros(n_stars, dtype=bool)
    cr_stars = rng.choice(n_stars, n_masked_stars, replace=False)
    for i in cr_stars:
        cy, cx = int(round(sy[i])) + 2, int(round(sx[i])) + 1
        mask[cy:cy + 2, cx:cx + 3] |= maskbits.CRAY
    image[mask != 0] = 5e4
    weight[mask != 0] = 0.0
    for i in range(n_stars):
        iy, ix = int(round(sy[i])), int(round(sx[i]))
        star_masked[i] = mask[iy - 12:iy + 13, ix - 12:ix + 13].any()
    dist = np.hypot(xs[:, None] - xs[None, :], ys[:, None] - ys[None, :])
    np.fill_diagonal(dist, np.inf)
    isolated = dist.min(axis=1)[:n_stars] > 30
    stars = dict(x=sx, y=sy, flux=sflux, flux_box=flux_box, flux_aper=flux_aper, mag=mags, isolated=isolated,
                 masked=star_masked, cr=np.isin(np.arange(n_stars), cr_stars))
    galaxies = dict(x=gxp, y=gyp, flux=gflux, hlr_arcsec=hlr)
    return Field(image=image.astype(np.float32), noiseless=noiseless.astype(np.float32),
                 sky=skyimg.astype(np.float32), weight=weight.astype(np.float32), mask=mask,
                 psf=psf, stars=stars, galaxies=galaxies, read_noise=read_noise, box=box)


@dataclass(frozen=True)
class PipelineRun:
    field: Field
    background: object
    detections: object
    psf: object
    catalog: object
    star_index: np.ndarray   # detection row of each truth star (-1 if unmatched)
    gal_index: np.ndarray


@functools.lru_cache(maxsize=4)
def run_pipeline(**kwargs):
    """Background (two passes), detection, PSF fit on selected candidates and measurement."""
    from scipy.spatial import cKDTree

    from desgw.se.background import estimate_background
    from desgw.se.detect import DetectConfig, detect_sources
    from desgw.se.measure import measure_sources
    from desgw.se.psf import fit_psf, select_psf_candidates

    f = make_field(**kwargs)
    fwhm = f.psf.fwhm0
    dcfg = DetectConfig(filter_fwhm=fwhm)
    bkg0 = estimate_background(f.image, f.mask)
    det0 = detect_sources(f.image - bkg0.level, bkg0.rms, f.mask, config=dcfg)
    bkg = estimate_background(f.image, f.mask, objects=det0.segmap)
    det = detect_sources(f.image - bkg.level, bkg.rms, f.mask, config=dcfg)
    cand = select_psf_candidates(det)
    c = det.catalog
    psf = fit_psf(f.image - bkg.level, f.weight, f.mask, c["xwin"][cand], c["ywin"][cand],
                  segmap=det.segmap, neighbour_xy=np.column_stack([c["xwin"], c["ywin"]]))
    cat = measure_sources(f.image, f.weight, f.mask, bkg, det, psf)
    tree = cKDTree(np.column_stack([c["xwin"], c["ywin"]]))
    d, i = tree.query(np.column_stack([f.stars["x"], f.stars["y"]]))
    star_index = np.where(d < 1.5, i, -1)
    d, i = tree.query(np.column_stack([f.galaxies["x"], f.galaxies["y"]]))
    gal_index = np.where(d < 3.0, i, -1)
    return PipelineRun(field=f, background=bkg, detections=det, psf=psf, catalog=cat,
                       star_index=star_index, gal_index=gal_index)


def test_field_truth_consistent():
    f = make_field(shape=(512, 512), n_stars=40, n_gal=5, seed=3)
    total = f.stars["flux"].sum() + f.galaxies["flux"].sum()
    # Drawn flux (stamps truncated at +-40 px) within 1% of the truth.
    assert abs(f.noiseless.sum() / total - 1) < 0.01
    assert np.all(f.stars["flux_box"] < f.stars["flux"])
    assert np.all(f.stars["flux_box"] > 0.9 * f.stars["flux"])
    assert f.image.dtype == np.float32 and f.mask.dtype == np.int32
    assert np.all(f.weight[f.mask != 0] == 0)
