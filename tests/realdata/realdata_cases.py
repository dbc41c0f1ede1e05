"""Real DECam / ZTF data for the real-data tests and bench/realdata_report.py.

The data live outside the repository (``<repo>/../shared/realdata``, or ``$DESGW_SHARED``
pointing at ``shared/`` or at ``shared/realdata``) and are only read, never copied.

Facts established on these files (see the tests for the numbers):

* CP InstCal images (``ooi``) are in ADU with the sky NOT subtracted (AVSKY ~ pixel median);
  no BUNIT in the V4.8 files, ``BUNIT = 'adu'`` in the V3.6 one (testcase5). The weight
  (``oow``) is 1/variance in 1/ADU**2; the data-quality file (``ood``) holds CP codes
  (0 good, 1 bad pixel, 3 saturated, 4 bleed trail, 5 cosmic ray, ...).
* The Legacy Surveys ``ccdzpt`` is the AB magnitude of 1 ADU/s in these images (legacyzpts
  ``DecamMeasurer``: "DECam CP units: ADU"), measured with PSFEx-model PSF fluxes (model
  normalised to unit sum over its 63x63 stamp) against Pan-STARRS1 (DR9).
* ``ccdraoff = median((ra_gaia - ra_measured) * cos(dec)) * 3600`` and
  ``ccddecoff = median(dec_gaia - dec_measured) * 3600`` (arcsec; Gaia at the image epoch
  minus the CP-WCS position of the fitted star), from legacyzpts ``run_psfphot``.
"""

from __future__ import annotations

import glob
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table, vstack
from astropy.wcs import WCS
from scipy import ndimage

from desgw.io.instcal import InstCalCCD, read_instcal
from desgw.io.psfex import PSFExModel, read_psfex
from desgw.refcat.geometry import mjd_to_jyear, propagate_proper_motion
from desgw.refcat.transforms import des_minus_g, gaia_to_des
from desgw.se import maskbits
from desgw.se.background import BackgroundConfig, estimate_background
from desgw.se.detect import DetectConfig, detect_sources

__all__ = [
    "APERTURE_FWHM",
    "GAIA_MAX_EXCESS_NOISE_MAS",
    "ZP_ERROR_FLOOR",
    "InstCalCase",
    "StarMeasurement",
    "TwoEpochResult",
    "ZTFStamp",
    "cp_mask_to_bits",
    "gaia_sources_for_ingest",
    "lay_out_as_archive",
    "gaia_for",
    "half_max_fwhm",
    "instcal_cases",
    "load_case",
    "measure_gaia_stars",
    "noise_ratio",
    "psfex_for",
    "realdata_root",
    "two_epoch_difference",
    "ztf_stamps",
]

#: Photometric aperture radius in units of the CP FWHM.
APERTURE_FWHM = 3.0
#: Gaia astrometric_excess_noise above which a source is not treated as a point source
#: (mas; the galaxy nucleus in testcase9 has 11 mas, the stars used here <= 1.7 mas).
GAIA_MAX_EXCESS_NOISE_MAS = 3.0
#: Scatter of the Gaia -> DECam polynomials added in quadrature to each star's error (mag).
ZP_ERROR_FLOOR = 0.02


def realdata_root() -> Path | None:
    """The ``shared/realdata`` folder, or None when it is absent."""
    env = os.environ.get("DESGW_SHARED")
    cands = []
    if env:
        cands += [Path(env) / "realdata", Path(env)]
    cands.append(Path(__file__).resolve().parents[2].parent / "shared" / "realdata")
    for c in cands:
        if (c / "legacypipe").is_dir():
            return c
    return None


@dataclass(frozen=True)
class InstCalCase:
    """One CP InstCal cutout and its Legacy Surveys CCD-table row."""

    testcase: str
    testcase_dir: str
    image_path: str
    expnum: int
    ccdname: str
    band: str
    ccdzpt: float
    zpt: float
    ccdraoff: float
    ccddecoff: float
    ccdrarms: float
    ccddecrms: float
    fwhm: float
    sig1: float
    exptime: float

    @property
    def label(self) -> str:
        return f"{self.testcase}:{self.expnum}-{self.ccdname}-{self.band}"



def ccd_table_row(case: InstCalCase) -> Any:
    """The case's row of its testcase's survey-ccds table."""
    table = _ccd_table(Path(case.testcase_dir))
    names = np.char.strip(np.asarray(table["ccdname"]).astype(str))
    return table[(np.asarray(table["expnum"]) == case.expnum) & (names == case.ccdname)][0]


def _ccd_table(tc_dir: Path) -> Table:
    files = sorted(tc_dir.glob("survey-ccds-1*.fits*"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Table.read(files[0], hdu=1)


def _row_getter(row: Any, colnames: list[str]) -> Callable[[str], float]:
    def col(name: str) -> float:
        return float(row[name]) if name in colnames else float("nan")
    return col


@lru_cache(maxsize=1)
def instcal_cases() -> tuple[InstCalCase, ...]:
    """All CP InstCal cutouts (``*ooi*.fits``) of legacypipe/testcase*, with their CCD rows.

    Every image must have exactly one row in its testcase's survey-ccds table (matched by
    EXPNUM and CCD name from the image header); a missing row raises ``LookupError``.
    """
    root = realdata_root()
    if root is None:
        return ()
    out = []
    for tc_dir in sorted((root / "legacypipe").glob("testcase*")):
        images = sorted(glob.glob(str(tc_dir / "images" / "decam" / "**" / "*_ooi_*.fits"),
                                  recursive=True))
        if not images:
            continue
        table = _ccd_table(tc_dir)
        names = np.char.strip(np.asarray(table["ccdname"]).astype(str))
        for path in images:
            hdr0 = fits.getheader(path, 0)
            hdr1 = fits.getheader(path, 1)
            expnum = int(hdr0["EXPNUM"])
            ccd = str(hdr1.get("DETPOS", hdr1.get("EXTNAME"))).strip()
            rows = table[(np.asarray(table["expnum"]) == expnum) & (names == ccd)]
            if len(rows) != 1:
                raise LookupError(f"{path}: {len(rows)} survey-ccds rows for {expnum}/{ccd}")
            r = rows[0]
            col = _row_getter(r, table.colnames)
            out.append(InstCalCase(
                testcase=tc_dir.name, testcase_dir=str(tc_dir), image_path=path, expnum=expnum,
                ccdname=ccd,
                band=str(r["filter"]).strip(), ccdzpt=col("ccdzpt"), zpt=col("zpt"),
                ccdraoff=col("ccdraoff"), ccddecoff=col("ccddecoff"), ccdrarms=col("ccdrarms"),
                ccddecrms=col("ccddecrms"), fwhm=col("fwhm"), sig1=col("sig1"),
                exptime=col("exptime")))
    return tuple(out)


@lru_cache(maxsize=64)
def load_case(image_path: str) -> InstCalCCD:
    """desgw.io.instcal.read_instcal of one cutout (cached)."""
    return read_instcal(image_path)


@lru_cache(maxsize=16)
def _gaia_table(tc_dir: str) -> Table | None:
    files = sorted(Path(tc_dir).glob("gaia/chunk-*.fits"))
    if not files:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return vstack([Table.read(f) for f in files])


def gaia_for(case: InstCalCase, ccd: InstCalCCD, *, edge: float = 0.0) -> Table:
    """Gaia DR2 rows inside the cutout at the exposure epoch.

    Positions are propagated from ``ref_epoch`` (2015.5) to MJD-OBS with
    :func:`desgw.refcat.geometry.propagate_proper_motion` (missing proper motions count as
    0; parallax is ignored: <= a few mas here). Adds columns ``ra_now``, ``dec_now`` (deg) and
    ``x``, ``y`` (0-based pixels through the CP TPV WCS); keeps rows at least ``edge`` pixels
    inside the image.
    """
    g = _gaia_table(case.testcase_dir)
    if g is None:
        return Table(names=("ra_now", "dec_now", "x", "y"))
    dt = mjd_to_jyear(ccd.mjd_obs) - np.asarray(g["ref_epoch"], dtype=float)
    ra, dec = propagate_proper_motion(g["ra"], g["dec"], np.nan_to_num(np.asarray(g["pmra"])),
                                      np.nan_to_num(np.asarray(g["pmdec"])), dt)
    x, y = ccd.wcs.all_world2pix(ra, dec, 0)
    ny, nx = ccd.shape
    keep = (x >= edge - 0.5) & (x <= nx - 0.5 - edge) & (y >= edge - 0.5) & (y <= ny - 0.5 - edge)
    out = g[keep]
    out["ra_now"], out["dec_now"], out["x"], out["y"] = ra[keep], dec[keep], x[keep], y[keep]
    return out


def cp_mask_to_bits(cp_mask: np.ndarray) -> np.ndarray:
    """CP data-quality codes -> desgw mask bits (int32): 3 -> SAT, 4 -> TRAIL, 5 -> CRAY,
    any other non-zero code -> BADPIX."""
    m = np.where(cp_mask != 0, maskbits.BADPIX, 0)
    m = np.where(cp_mask == 3, maskbits.SAT, m)
    m = np.where(cp_mask == 4, maskbits.TRAIL, m)
    m = np.where(cp_mask == 5, maskbits.CRAY, m)
    return m.astype(np.int32)


def psfex_for(case: InstCalCase) -> PSFExModel | None:
    """The Legacy Surveys PSFEx model of the case's CCD (None when the testcase has none).

    Looks, under the testcase's ``calib/``, for a merged per-exposure table named after the
    image (``<image>-psfex.fits``), a single-CCD file (``<image>-<ccd>-psfex.fits``) or the
    old layout ``decam-<expnum:08d>-<ccd>.fits`` in a ``psfex`` folder.
    """
    tc = Path(case.testcase_dir)
    stem = Path(case.image_path).name.split(f".{case.ccdname}.fits")[0].split(
        f"-{case.ccdname}.fits")[0]
    pats = [f"calib/**/{stem}-psfex.fits", f"calib/**/{stem}-{case.ccdname}-psfex.fits",
            f"calib/**/psfex/**/decam-{case.expnum:08d}-{case.ccdname}.fits"]
    for pat in pats:
        hits = sorted(glob.glob(str(tc / pat), recursive=True))
        if hits:
            return read_psfex(hits[0], ccdname=case.ccdname if "psfex.fits" in hits[0] else None,
                              expnum=case.expnum if "psfex.fits" in hits[0] else None)
    return None


def half_max_fwhm(stamp: np.ndarray, *, upsample: int = 4) -> float:
    """FWHM (pixels) of a background-free, centred stamp from the area above half maximum:
    ``2 sqrt(A / pi)`` with ``A`` counted on a cubic-spline ``upsample``-times finer grid."""
    fine = ndimage.zoom(np.asarray(stamp, dtype=np.float64), upsample, order=3)
    area = np.count_nonzero(fine >= 0.5 * fine.max()) / upsample ** 2
    return float(2.0 * np.sqrt(area / np.pi))


@dataclass(frozen=True)
class StarMeasurement:
    """Our measurements of the usable Gaia stars of one case (arrays of shape (n,)).

    dra_arcsec, ddec_arcsec : Gaia (at epoch) minus our windowed centroid through the CP WCS,
        RA offset times cos(dec): the ccdraoff/ccddecoff convention.
    zp_star : per-star zeropoint for 1 ADU/s, ``m_DECam(Gaia) + 2.5 log10(F / apfrac / t)``.
    zp_err : its 1-sigma error (Gaia G/BP/RP, aperture noise and ZP_ERROR_FLOOR).
    mag_inst : ``-2.5 log10(F / apfrac / t)`` (F in ADU), mag_ref : Gaia -> DECam magnitude.
    fwhm_pix : our half-maximum FWHM of each star (pixels).
    n_gaia_inside : Gaia rows inside the cutout before the star selection.
    """

    case: InstCalCase
    n_gaia_inside: int
    x: np.ndarray
    y: np.ndarray
    dra_arcsec: np.ndarray
    ddec_arcsec: np.ndarray
    mag_inst: np.ndarray
    mag_ref: np.ndarray
    zp_star: np.ndarray
    zp_err: np.ndarray
    ap_fraction: np.ndarray
    fwhm_pix: np.ndarray

    @property
    def n(self) -> int:
        return int(self.x.size)


def _empty(case: InstCalCase, n_inside: int) -> StarMeasurement:
    e = np.zeros(0)
    return StarMeasurement(case, n_inside, e, e, e, e, e, e, e, e, e, e)


@lru_cache(maxsize=64)
def measure_gaia_stars(case: InstCalCase) -> StarMeasurement:
    """Detect, centroid and photometer the usable Gaia stars of a cutout with desgw.se.

    Steps: background (desgw.se.background, 64-px meshes) on the ADU image; detection
    (desgw.se.detect, 5-sigma matched filter at the CP FWHM, variance = 1/weight); a Gaia row is
    used when it lies >= APERTURE_FWHM * FWHM + 2 px from the edges, has finite G/BP/RP, a
    valid Gaia -> DECam colour, astrometric_excess_noise < GAIA_MAX_EXCESS_NOISE_MAS, a
    detection within 1.5 px whose flux_radius is < 0.8 FWHM (point-like), no CP-masked pixel
    within 2 FWHM, and a peak below half the saturation level. Aperture flux (sep) of radius
    APERTURE_FWHM * FWHM at the windowed centroid, divided by the PSFEx-model fraction in
    that aperture (the model normalised as legacyzpts does), gives the total flux in ADU.
    """
    import sep

    ccd = load_case(case.image_path)
    fwhm = float(ccd.fwhm_pix or case.fwhm)
    radius = APERTURE_FWHM * fwhm
    inside = gaia_for(case, ccd)
    gaia = gaia_for(case, ccd, edge=radius + 2)
    if len(gaia) == 0:
        return _empty(case, len(inside))
    img = ccd.image.astype(np.float32)
    mask = cp_mask_to_bits(ccd.mask)
    bkg = estimate_background(img, mask, config=BackgroundConfig(mesh=64))
    sub = (img - bkg.level).astype(np.float32)
    with np.errstate(divide="ignore"):
        var = np.where(ccd.weight > 0, 1.0 / ccd.weight, np.inf).astype(np.float32)
    det = detect_sources(sub, var, mask, noise_type="variance",
                         config=DetectConfig(thresh_sigma=5.0, thresh_type="filtered",
                                             filter_fwhm=fwhm))
    cat = det.catalog
    psf = psfex_for(case)
    g, bp, rp = (np.asarray(gaia[c], dtype=float) for c in
                 ("phot_g_mean_mag", "phot_bp_mean_mag", "phot_rp_mean_mag"))
    tr = gaia_to_des(case.band, g, bp, rp)
    aen = np.nan_to_num(np.asarray(gaia["astrometric_excess_noise"], dtype=float), nan=99.0)
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    rows: list[tuple] = []
    for i in range(len(gaia)):
        if not tr.valid[i] or aen[i] >= GAIA_MAX_EXCESS_NOISE_MAS or len(cat) == 0:
            continue
        d = np.hypot(cat["xwin"] - gaia["x"][i], cat["ywin"] - gaia["y"][i])
        j = int(np.argmin(d))
        if d[j] > 1.5 or cat["flux_radius"][j] >= 0.8 * fwhm:
            continue
        xw, yw = float(cat["xwin"][j]), float(cat["ywin"][j])
        near = np.hypot(xx - xw, yy - yw) <= 2 * fwhm
        if np.any(ccd.mask[near] != 0) or np.any(ccd.weight[near] <= 0):
            continue
        if ccd.saturate and float(img[near].max()) > 0.5 * ccd.saturate:
            continue
        flux, ferr, _ = sep.sum_circle(sub.astype(np.float64), [xw], [yw], radius,
                                       var=np.where(np.isfinite(var), var, 0).astype(np.float64))
        if not flux[0] > 0:
            continue
        apfrac = psf.aperture_fraction(xw, yw, radius) if psf is not None else 1.0
        ra_w, dec_w = ccd.wcs.all_pix2world(xw, yw, 0)
        dra = (gaia["ra_now"][i] - float(ra_w)) * 3600.0 * np.cos(np.radians(gaia["dec_now"][i]))
        ddec = (gaia["dec_now"][i] - float(dec_w)) * 3600.0
        mag_inst = -2.5 * np.log10(flux[0] / apfrac / ccd.exptime)
        # error of the reference magnitude: G and the colour term through the polynomial slope
        c = bp[i] - rp[i]
        slope = float((des_minus_g(case.band, c + 0.01) - des_minus_g(case.band, c - 0.01)) / 0.02)
        sg = 1.0857 / float(gaia["phot_g_mean_flux_over_error"][i])
        sc = 1.0857 * np.hypot(1.0 / float(gaia["phot_bp_mean_flux_over_error"][i]),
                               1.0 / float(gaia["phot_rp_mean_flux_over_error"][i]))
        err = float(np.sqrt(sg ** 2 + (slope * sc) ** 2 + (1.0857 * ferr[0] / flux[0]) ** 2
                            + ZP_ERROR_FLOOR ** 2))
        h = int(np.ceil(2 * fwhm))
        iy, ix = int(round(yw)), int(round(xw))
        stamp = sub[iy - h:iy + h + 1, ix - h:ix + h + 1]
        shifted = ndimage.shift(stamp.astype(np.float64), (iy - yw, ix - xw), order=3)
        rows.append((xw, yw, dra, ddec, mag_inst, tr.mag[i], tr.mag[i] - mag_inst, err, apfrac,
                     half_max_fwhm(shifted)))
    if not rows:
        return _empty(case, len(inside))
    a = np.array(rows, dtype=np.float64).T
    return StarMeasurement(case, len(inside), *a)


def noise_ratio(case: InstCalCase) -> tuple[float, int]:
    """Measured pixel noise over the weight-map noise in blank pixels, and the pixel count.

    Blank = unmasked, weight > 0, outside the sources detected at 1.5 sigma (pixel threshold,
    filter at the CP FWHM) grown by one FWHM. The pixel noise is
    ``1.4826 MAD(I[p] - I[p + 1]) / sqrt(2)`` over horizontal and vertical neighbour pairs of
    blank pixels (insensitive to the smooth light of the large galaxies that fill several
    cutouts); the weight noise is the median of ``1/sqrt(weight)`` there.
    """
    ccd = load_case(case.image_path)
    assert ccd.fwhm_pix is not None, f"{case.image_path}: no FWHM in the header"
    img = ccd.image.astype(np.float32)
    bad = (ccd.mask != 0) | (ccd.weight <= 0)
    mask = cp_mask_to_bits(ccd.mask)
    with np.errstate(divide="ignore"):
        var = np.where(ccd.weight > 0, 1.0 / ccd.weight, np.inf).astype(np.float32)
    sky = float(np.median(img[~bad]))
    det = detect_sources(img - sky, var, mask, noise_type="variance",
                         config=DetectConfig(thresh_sigma=1.5, filter_fwhm=float(ccd.fwhm_pix)))
    grown = ndimage.binary_dilation(det.segmap > 0, iterations=int(np.ceil(ccd.fwhm_pix)))
    blank = ~bad & ~grown
    diffs = []
    for dy, dx in ((0, 1), (1, 0)):
        ny, nx = img.shape
        a, b = img[:ny - dy, :nx - dx], img[dy:, dx:]
        ok = blank[:ny - dy, :nx - dx] & blank[dy:, dx:]
        diffs.append((a - b)[ok].astype(np.float64))
    d = np.concatenate(diffs)
    pix = 1.4826 * float(np.median(np.abs(d - np.median(d)))) / np.sqrt(2.0)
    wnoise = float(np.median(1.0 / np.sqrt(ccd.weight[blank])))
    return pix / wnoise, int(blank.sum())


def _pixel_area_arcsec2(wcs: WCS, x: float, y: float) -> float:
    r0, d0 = wcs.all_pix2world(x, y, 0)
    r1, d1 = wcs.all_pix2world(x + 1, y, 0)
    r2, d2 = wcs.all_pix2world(x, y + 1, 0)
    c = np.cos(np.radians(d0))
    jac = np.array([[(r1 - r0) * c, (r2 - r0) * c], [d1 - d0, d2 - d0]]) * 3600.0
    return float(abs(np.linalg.det(jac)))


@dataclass(frozen=True)
class TwoEpochResult:
    """A naive difference ``A - s * B(reprojected)`` of two cutouts of the same sky.

    overlap_fraction : fraction of A's pixels that map inside B.
    scale : s = 10**(0.4 (ccdzpt_A - ccdzpt_B)) t_A / t_B * (pixel area A / pixel area B).
    shift_arcsec : residual misregistration of B on A after the reprojection (arcsec), from a
        linear least-squares fit of the difference with B's image gradients near the star.
    wing_ratio : sum(D) / sum(A - sky_A) over unmasked pixels 20-35 px from the Gaia star.
    wing_ratio_unscaled : the same with s = 1 (no photometric scaling).
    inner_ratio : the same ratio 10-20 px from the star (PSF-mismatch dominated).
    far_chi : rms of D / sigma_D beyond 35 px of the star (sigma from both weight maps).
    fwhm_a, fwhm_b : CP FWHM (pixels).
    """

    label: str
    overlap_fraction: float
    scale: float
    shift_arcsec: float
    wing_ratio: float
    wing_ratio_unscaled: float
    inner_ratio: float
    far_chi: float
    fwhm_a: float
    fwhm_b: float


def two_epoch_difference(a_case: InstCalCase, b_case: InstCalCase) -> TwoEpochResult:
    """Reproject cutout B onto A's pixels (CP TPV WCSs, cubic spline) and difference them.

    Sky: each image's CP AVSKY. B's masked pixels are spread by linear interpolation of the bad
    map (any weight > 0 masks the A pixel). Ratios are measured around the single Gaia star
    of the cutouts (testcase6).
    """
    a, b = load_case(a_case.image_path), load_case(b_case.image_path)
    assert a.sky_adu is not None and a.fwhm_pix is not None, f"{a_case.image_path}: no AVSKY/FWHM"
    assert b.sky_adu is not None and b.fwhm_pix is not None, f"{b_case.image_path}: no AVSKY/FWHM"
    ny, nx = a.shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    ra, dec = a.wcs.all_pix2world(xx, yy, 0)
    bx, by = b.wcs.all_world2pix(ra, dec, 0)
    inside = (bx >= 0) & (bx <= b.shape[1] - 1) & (by >= 0) & (by <= b.shape[0] - 1)
    b_img = ndimage.map_coordinates(b.image.astype(np.float64) - b.sky_adu, [by, bx], order=3,
                                    mode="nearest")
    b_bad = ndimage.map_coordinates(((b.mask != 0) | (b.weight <= 0)).astype(np.float64),
                                    [by, bx], order=1, mode="constant", cval=1.0) > 0
    with np.errstate(divide="ignore"):
        b_var = ndimage.map_coordinates(np.where(b.weight > 0, 1.0 / b.weight, 0.0), [by, bx],
                                        order=1)
        a_var = np.where(a.weight > 0, 1.0 / a.weight, np.inf)
    area = _pixel_area_arcsec2(a.wcs, nx / 2, ny / 2) / _pixel_area_arcsec2(
        b.wcs, b.shape[1] / 2, b.shape[0] / 2)
    s = 10 ** (0.4 * (a_case.ccdzpt - b_case.ccdzpt)) * a.exptime / b.exptime * area
    a_img = a.image.astype(np.float64) - a.sky_adu
    bad = (a.mask != 0) | (a.weight <= 0) | b_bad | ~inside
    diff = a_img - s * b_img
    star = gaia_for(a_case, a)
    i = int(np.argmin(star["phot_g_mean_mag"]))
    gx, gy = float(star["x"][i]), float(star["y"][i])
    r = np.hypot(xx - gx, yy - gy)

    def ratio(lo: float, hi: float, scale: float) -> float:
        sel = (r >= lo) & (r < hi) & ~bad
        return float(np.sum(a_img[sel] - scale * b_img[sel]) / np.sum(a_img[sel]))

    far = (r >= 35) & ~bad
    chi = diff[far] / np.sqrt(a_var[far] + s ** 2 * b_var[far])
    # residual misregistration: least squares A - sB = s (gx dx + gy dy) + c over the
    # unmasked pixels within 35 px of the star, with the gradients of sB
    gy_b, gx_b = np.gradient(s * b_img)
    sel = (r >= 5) & (r < 35) & ~bad
    design = np.column_stack([-gx_b[sel], -gy_b[sel], np.ones(sel.sum())])
    (dx, dy, _), *_ = np.linalg.lstsq(design, diff[sel], rcond=None)
    shift = float(np.hypot(dx, dy)) * np.sqrt(_pixel_area_arcsec2(a.wcs, gx, gy))
    return TwoEpochResult(
        label=f"{a_case.label} - {b_case.label}", overlap_fraction=float(inside.mean()),
        scale=float(s), shift_arcsec=shift, wing_ratio=ratio(20, 35, s),
        wing_ratio_unscaled=ratio(20, 35, 1.0), inner_ratio=ratio(10, 20, s),
        far_chi=float(np.sqrt(np.mean(chi ** 2))), fwhm_a=float(a.fwhm_pix),
        fwhm_b=float(b.fwhm_pix))


@dataclass(frozen=True)
class ZTFStamp:
    """One ZTF alert: 63x63 science/template/difference stamps (DN) and the alert record."""

    object_id: str
    tns_class: str
    science: np.ndarray
    template: np.ndarray
    difference: np.ndarray
    candidate: dict


def ztf_stamps() -> tuple[ZTFStamp, ...]:
    """The ZTF transients of shared/realdata/ztf_transients (empty when absent)."""
    root = realdata_root()
    if root is None or not (root / "ztf_transients").is_dir():
        return ()
    out = []
    for meta_path in sorted((root / "ztf_transients").glob("*_meta.json")):
        meta = json.loads(meta_path.read_text())
        base = str(meta_path)[: -len("_meta.json")]
        planes = []
        for kind in ("science", "template", "difference"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                planes.append(np.asarray(fits.getdata(f"{base}_{kind}.fits"), dtype=np.float64))
        science, template, difference = planes
        out.append(ZTFStamp(meta["objectId"], str(meta.get("tns_class")), science, template,
                            difference, candidate=dict(meta["candidate"])))
    return tuple(out)


def lay_out_as_archive(testcase_dir: Path, raw: Path) -> list[Path]:
    """Each cut-out triplet fpacked into ``raw`` under its archive name (``.fits.fz``)."""
    raw.mkdir(parents=True, exist_ok=True)
    out = []
    for f in sorted(testcase_dir.glob("images/**/*_oo[idw]_*.fits")):
        with fits.open(f) as h, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hdus = [fits.PrimaryHDU(header=h[0].header)]
            for e in h[1:]:
                kind = "RICE_1" if e.data.dtype.kind == "f" else "GZIP_2"
                hdus.append(fits.CompImageHDU(e.data, header=e.header, compression_type=kind))
            p = raw / (f.name[: -len(".fits")] + ".fits.fz")
            fits.HDUList(hdus).writeto(p)
            out.append(p)
    return out


def gaia_sources_for_ingest(testcase_dir: Path, tmp: Path) -> list[str]:
    """The testcase's Gaia chunk files, or an empty Gaia-format table written in ``tmp``."""
    chunks = sorted(str(p) for p in testcase_dir.glob("gaia/chunk-*.fits"))
    if chunks:
        return chunks
    empty = tmp / "no_gaia.fits"  # testcase5 ships no Gaia rows: an empty catalog
    cols = ["source_id", "ra", "dec", "pmra", "pmdec", "ref_epoch", "phot_g_mean_mag",
            "phot_bp_mean_mag", "phot_rp_mean_mag"]
    Table({c: np.zeros(0, dtype=np.int64 if c == "source_id" else np.float64)
           for c in cols}).write(empty)
    return [str(empty)]
