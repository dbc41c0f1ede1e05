"""Tests of desgw.diff.resample: mapping accuracy, flux/centroid/shape of resampled stars,
noise propagation and correlation, masks, NaN, edges."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import galsim
import numpy as np
import pytest
from astropy.wcs import WCS

from desgw.diff.resample import (
    ResampleConfig,
    noise_correlation_factor,
    resample_to_grid,
)
from desgw.diff.resample_kernels import lanczos_table
from desgw.diff.resample_mapping import exact_mapping, mapping_grid
from desgw.errors import DataTypeError
from desgw.se.maskbits import BADPIX, CRAY, EDGE, SUSPECT, UNUSABLE

sys.path.insert(0, str(Path(__file__).parent))
from test_resample_support import (
    SHAPE,
    box_sum,
    decam_wcs,
    render_stars,
    windowed_centroid,
)
import itertools

RA0, DEC0 = 150.0, -30.0


@pytest.fixture(scope="module")
def wcs_pair() -> tuple[WCS, WCS]:
    """Template (input) and search (output) WCS of CCD 28: offset ~0.03 deg, rotated 0.1 deg."""
    return decam_wcs(28, RA0, DEC0, 0.0), decam_wcs(28, RA0 + 0.02, DEC0 - 0.03, 0.1)


def shifted_wcs(wcs: WCS, dx: float, dy: float, scale: float = 1.0) -> WCS:
    """Plain-TAN copy of a WCS whose pixel grid is shifted by (dx, dy) px, pixels scaled."""
    w = wcs.deepcopy()
    w.wcs.crpix = w.wcs.crpix + np.array([dx, dy])
    w.wcs.cd = w.wcs.cd * scale
    w.sip = None
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.set()
    return w


def white_noise(shape: tuple[int, int], sigma: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, sigma, shape).astype(np.float32)


# ---------------------------------------------------------------- mapping

@pytest.mark.parametrize("step", [32, 64])
def test_mapping_grid_interpolation_error_below_1e3_px(step: int) -> None:
    # a corner CCD (strongest distortion gradient) against a rotated, offset pointing
    w_in = decam_wcs(1, RA0, DEC0, 0.0)
    w_out = decam_wcs(1, RA0 + 0.01, DEC0 + 0.02, 0.1)
    m = mapping_grid(w_in, w_out, SHAPE, step=step)
    rng = np.random.default_rng(3)
    x = rng.uniform(0, SHAPE[1] - 1, 20000)
    y = rng.uniform(0, SHAPE[0] - 1, 20000)
    xe, ye = exact_mapping(w_in, w_out, x, y)
    xi, yi, area = m.evaluate(x, y)
    err = np.hypot(xi - xe, yi - ye)
    assert np.all(np.isfinite(err))
    assert err.max() < 1e-3
    # the area ratio is that of the local CD/SIP Jacobians: close to 1 for the same CCD
    assert np.all(np.abs(area - 1.0) < 0.01)


@pytest.mark.parametrize("shape", [SHAPE, (100, 20)])
def test_mapping_area_is_the_exact_local_jacobian(shape: tuple[int, int]) -> None:
    # the node areas (from the nodes by five-point stencils on a CCD-sized grid; from
    # central differences of the exact mapping on a grid too small for them) against
    # |det J| of the exact mapping at the nodes, edge nodes included, on a corner CCD
    # (strongest distortion gradient) rotated and offset
    w_in = decam_wcs(1, RA0, DEC0, 0.0)
    w_out = decam_wcs(1, RA0 + 0.01, DEC0 + 0.02, 0.1)
    m = mapping_grid(w_in, w_out, shape)
    nyg, nxg = m.area.shape
    gx, gy = np.meshgrid(m.x0 + m.step * np.arange(nxg), m.y0 + m.step * np.arange(nyg))
    d = 2.0
    xi, yi = exact_mapping(w_in, w_out, np.stack([gx + d, gx - d, gx, gx]),
                           np.stack([gy, gy, gy + d, gy - d]))
    det = ((xi[0] - xi[1]) * (yi[2] - yi[3]) - (xi[2] - xi[3]) * (yi[0] - yi[1])) / (2 * d) ** 2
    np.testing.assert_allclose(m.area, np.abs(det), rtol=1e-7)
    if shape == SHAPE:
        assert min(m.area.shape) >= 5
        assert np.ptp(m.area) > 5e-5  # the distortion makes the area vary
    else:
        assert m.area.shape[1] < 5


def test_area_ratio_matches_pixel_scale_ratio() -> None:
    w_in = shifted_wcs(decam_wcs(28, RA0, DEC0, 0.0), 0.0, 0.0)  # plain TAN copy
    w_out = shifted_wcs(w_in, 3.3, -2.7, scale=1.02)  # output pixels 2 % larger
    m = mapping_grid(w_in, w_out, SHAPE)
    _, _, a = m.evaluate(np.array([100.0, 1000.0, 2000.0]), np.array([50.0, 2000.0, 4000.0]))
    np.testing.assert_allclose(a, 1.02 ** 2, rtol=2e-4)


# ---------------------------------------------------------------- stars

@pytest.fixture(scope="module")
def star_case(wcs_pair):
    w_in, w_out = wcs_pair
    rng = np.random.default_rng(11)
    n = 40
    # output positions inside the overlap, 50 px from every edge of both CCDs
    xo = rng.uniform(60, SHAPE[1] - 60, 4 * n)
    yo = rng.uniform(60, SHAPE[0] - 60, 4 * n)
    xi, yi = exact_mapping(w_in, w_out, xo, yo, tolerance=1e-10)
    ok = (xi > 60) & (xi < SHAPE[1] - 60) & (yi > 60) & (yi < SHAPE[0] - 60)
    xo, yo = xo[ok], yo[ok]
    keep: list[int] = []  # isolated stars: no neighbour within 80 px
    for i in range(len(xo)):
        if all(np.hypot(xo[i] - xo[j], yo[i] - yo[j]) > 80 for j in keep):
            keep.append(i)
    xo, yo = xo[keep][:n], yo[keep][:n]
    ra, dec = w_out.all_pix2world(xo, yo, 0)
    flux = rng.uniform(2e4, 2e5, len(xo))
    img_in = render_stars(w_in, ra, dec, flux).astype(np.float32)
    direct = render_stars(w_out, ra, dec, flux)
    weight = np.full(SHAPE, 1e-2, dtype=np.float32)
    res = resample_to_grid(img_in, None, weight, w_in, w_out, SHAPE)
    return res, direct, xo, yo, flux


def test_resampled_stars_match_direct_rendering(star_case) -> None:
    res, direct, xo, yo, _flux = star_case
    worst = 0.0
    for x, y in zip(xo, yo):
        ix, iy = int(round(x)), int(round(y))
        sl = (slice(iy - 15, iy + 16), slice(ix - 15, ix + 16))
        diff = np.abs(res.image[sl] - direct[sl]).max() / direct[sl].max()
        worst = max(worst, diff)
    assert worst < 0.01, worst


def test_resampled_star_flux_conserved(star_case) -> None:
    res, direct, xo, yo, flux = star_case
    ratio = np.array([box_sum(res.image, x, y, 25) / box_sum(direct, x, y, 25)
                      for x, y in zip(xo, yo)])
    assert np.abs(ratio - 1).max() < 1e-3, np.abs(ratio - 1).max()
    # and against the true total flux (box of 61 px holds > 99.99 % of this Moffat)
    total = np.array([box_sum(res.image, x, y, 30) for x, y in zip(xo, yo)]) / flux
    assert np.abs(total - 1).max() < 1e-3, np.abs(total - 1).max()


def test_resampled_star_centroids(star_case) -> None:
    res, direct, xo, yo, _ = star_case
    shifts, direct_shifts = [], []
    for x, y in zip(xo, yo):
        cx, cy = windowed_centroid(res.image, x, y)
        dx, dy = windowed_centroid(direct, x, y)
        shifts.append(np.hypot(cx - x, cy - y))
        direct_shifts.append(np.hypot(dx - x, dy - y))
    assert max(direct_shifts) < 0.002  # the centroid itself is unbiased on the direct render
    assert max(shifts) < 0.005, max(shifts)


def test_resampled_output_is_clean_where_covered(star_case) -> None:
    res, *_ = star_case
    assert res.image.dtype == np.float32 and res.weight.dtype == np.float32
    assert res.mask.dtype == np.int32 and res.coverage.dtype == np.bool_
    assert np.all(np.isfinite(res.image)) and np.all(np.isfinite(res.weight))
    # uncovered pixels: EDGE, zero weight, zero value; covered interior: no flags
    assert np.all(res.mask[~res.coverage] == EDGE)
    assert np.all(res.weight[~res.coverage] == 0) and np.all(res.image[~res.coverage] == 0)
    assert 0.5 < res.coverage.mean() < 0.95
    assert np.all(res.mask[res.coverage & (res.weight > 0)] == 0)
    pickle.loads(pickle.dumps(res))


# ---------------------------------------------------------------- constant and scale

@pytest.mark.parametrize("kernel", ["lanczos3", "lanczos4"])
def test_constant_image_scaled_by_area_ratio(kernel: str) -> None:
    w_in = shifted_wcs(decam_wcs(28, RA0, DEC0), 0.0, 0.0, scale=1.0)
    w_out = shifted_wcs(w_in, 5.37, -3.81, scale=1.01)
    shape = (512, 256)
    img = np.full(SHAPE, 1000.0, dtype=np.float32)
    res = resample_to_grid(img, None, np.ones(SHAPE, np.float32), w_in, w_out, shape,
                           kernel=kernel)
    inner = res.image[20:-20, 20:-20]
    np.testing.assert_allclose(inner, 1000.0 * 1.01 ** 2, rtol=2e-5)


# ---------------------------------------------------------------- noise

def _autocov_sum(img: np.ndarray, maxlag: int = 7) -> tuple[float, float]:
    """(lag-0 variance, sum of the autocovariance over lags |dx|, |dy| <= maxlag)."""
    z = img - img.mean()
    ny, nx = z.shape
    f = np.fft.rfft2(z, s=(ny + maxlag, nx + maxlag))
    acf = np.fft.irfft2(f * np.conj(f), s=(ny + maxlag, nx + maxlag))
    total = 0.0
    for dy in range(-maxlag, maxlag + 1):
        for dx in range(-maxlag, maxlag + 1):
            total += acf[dy % acf.shape[0], dx % acf.shape[1]] / ((ny - abs(dy)) * (nx - abs(dx)))
    return float(acf[0, 0] / (ny * nx)), total


def test_noise_per_pixel_variance_and_correlation_rotated(wcs_pair) -> None:
    w_in, w_out = wcs_pair
    sigma = 10.0
    img = white_noise(SHAPE, sigma, 5)
    res = resample_to_grid(img, None, np.full(SHAPE, sigma ** -2, np.float32), w_in, w_out, SHAPE)
    good = res.weight > 0
    z = res.image[good] * np.sqrt(res.weight[good])
    assert abs(np.mean(z ** 2) - 1) < 0.05
    # the per-pixel variance varies with the sub-pixel phase; the weight map follows it
    pred = 1.0 / res.weight[good]
    edges = np.quantile(pred, [0, 0.25, 0.5, 0.75, 1.0])
    for lo, hi in itertools.pairwise(edges):
        sel = (pred >= lo) & (pred <= hi)
        assert abs(np.mean(z[sel] ** 2) - 1) < 0.05
    assert pred.max() / pred.min() > 1.5  # the test is not trivial
    # large-area sums: variance per pixel = sum of the autocovariance
    block = res.image[1500:2500, 300:1300].astype(np.float64)
    assert np.all(res.weight[1500:2500, 300:1300] > 0)
    _var0, acsum = _autocov_sum(block)
    per_pixel = float(np.mean(1.0 / res.weight[1500:2500, 300:1300]))
    measured_factor = acsum / per_pixel
    assert abs(measured_factor / res.noise_correlation_factor - 1) < 0.05
    # large-area variance per pixel equals the input variance (area ratio ~1)
    assert abs(acsum / sigma ** 2 - 1) < 0.03
    assert 1.15 < res.noise_correlation_factor < 1.4
    assert abs(noise_correlation_factor() / res.noise_correlation_factor - 1) < 0.05


def test_noise_pure_subpixel_shift() -> None:
    w_in = shifted_wcs(decam_wcs(28, RA0, DEC0), 0.0, 0.0, scale=1.0)
    w_out = shifted_wcs(w_in, -0.3, -0.5)  # output pixel (x, y) -> input (x + 0.3, y + 0.5)
    shape = (1024, 1024)
    sigma = 7.0
    img = white_noise(SHAPE, sigma, 9)
    res = resample_to_grid(img, None, np.full(SHAPE, sigma ** -2, np.float32), w_in, w_out,
                           shape)
    xi, yi, _ = res.mapping.evaluate(100.0, 100.0)
    np.testing.assert_allclose([xi - 100, yi - 100], [0.3, 0.5], atol=1e-6)
    tab = lanczos_table(3).astype(np.float64)
    s_x = (tab[int(round(0.3 * (len(tab) - 1)))] ** 2).sum()
    s_y = (tab[int(round(0.5 * (len(tab) - 1)))] ** 2).sum()
    np.testing.assert_allclose(1.0 / res.weight[10:-10, 10:-10], sigma ** 2 * s_x * s_y,
                               rtol=1e-5)
    block = res.image[10:-10, 10:-10].astype(np.float64)
    var0, acsum = _autocov_sum(block)
    assert abs(var0 / (sigma ** 2 * s_x * s_y) - 1) < 0.05
    expected = noise_correlation_factor(0.3, 0.5)
    assert abs(res.noise_correlation_factor / expected - 1) < 1e-3
    assert abs(acsum / (sigma ** 2 * s_x * s_y) / expected - 1) < 0.05


def test_integer_shift_is_exact_copy() -> None:
    w_in = shifted_wcs(decam_wcs(28, RA0, DEC0), 0.0, 0.0, scale=1.0)
    w_out = shifted_wcs(w_in, -3.0, -7.0)
    img = white_noise(SHAPE, 5.0, 2)
    res = resample_to_grid(img, None, np.full(SHAPE, 0.04, np.float32), w_in, w_out, (256, 256))
    np.testing.assert_allclose(res.image, img[7:263, 3:259], atol=1e-4)
    assert abs(res.noise_correlation_factor - 1.0) < 1e-4


# ---------------------------------------------------------------- masks, NaN, edges

def test_masks_nan_and_edges(wcs_pair) -> None:
    w_in, w_out = wcs_pair
    img = np.full(SHAPE, 1000.0, dtype=np.float32)
    weight = np.full(SHAPE, 1e-3, dtype=np.float32)
    mask = np.zeros(SHAPE, dtype=np.int32)
    mask[:15, :] |= EDGE
    mask[-15:, :] |= EDGE
    mask[:, :15] |= EDGE
    mask[:, -15:] |= EDGE
    cr = (2000, 1000)                    # cosmic ray: huge value, masked
    img[cr] = 1e7
    mask[cr] |= CRAY
    nanpix = (1500, 700)                 # NaN with no mask bit and positive weight
    img[nanpix] = np.nan
    zerow = (2600, 1200)                 # zero weight, no mask bit
    weight[zerow] = 0.0
    img[zerow] = -1e6
    sus = (3000, 900)                    # informational bit only: stays usable
    mask[sus] |= SUSPECT
    mask[:, 1600] |= BADPIX              # bad column
    img[:, 1600] = np.inf
    res = resample_to_grid(img, mask, weight, w_in, w_out, SHAPE)
    assert np.all(np.isfinite(res.image)) and np.all(np.isfinite(res.weight))
    unusable = (res.mask & UNUSABLE) != 0
    assert np.all(res.weight[unusable] == 0)
    assert np.all(res.weight[~unusable & res.coverage] > 0)
    # every covered, unflagged pixel is the constant times the area ratio (~1)
    _, _, area = res.mapping.evaluate(1000.0, 2000.0)
    ok = res.coverage & ~unusable
    np.testing.assert_allclose(res.image[ok], 1000.0 * area, rtol=0.01)
    # near an isolated bad pixel: flagged footprint is compact and includes the nearest pixel
    yy, xx = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    for (r, c), bit in [(cr, CRAY), (nanpix, BADPIX), (zerow, BADPIX), (sus, SUSPECT)]:
        has = (res.mask & bit) != 0
        # output position of the bad input pixel
        xo, yo = w_out.all_world2pix(*w_in.all_pix2world([c], [r], 0), 0)
        sel = has & (np.abs(xx - xo[0]) < 40) & (np.abs(yy - yo[0]) < 40)
        ys, xs = np.nonzero(sel)
        xi, yi, _ = res.mapping.evaluate(xs.astype(float), ys.astype(float))
        assert 1 <= len(xs) <= 36
        assert np.all((np.abs(xi - c) < 3) & (np.abs(yi - r) < 3))
        # the output pixel nearest to the bad pixel's position is flagged
        d = (xi - c) ** 2 + (yi - r) ** 2
        region = (slice(ys.min() - 3, ys.max() + 4), slice(xs.min() - 3, xs.max() + 4))
        sub_x, sub_y = np.meshgrid(np.arange(region[1].start, region[1].stop),
                                   np.arange(region[0].start, region[0].stop))
        sxi, syi, _ = res.mapping.evaluate(sub_x.astype(float), sub_y.astype(float))
        k = np.argmin((sxi - c) ** 2 + (syi - r) ** 2)
        assert has[sub_y.ravel()[k], sub_x.ravel()[k]]
        assert d.min() < 0.5
    sel = ((res.mask & SUSPECT) != 0)
    assert np.all(res.weight[sel] > 0)
    # the input EDGE band and the uncovered area are EDGE in the output
    xs = np.arange(0, SHAPE[1], 7, dtype=float)
    ys = np.arange(0, SHAPE[0], 7, dtype=float)
    gx, gy = np.meshgrid(xs, ys)
    xe, ye = exact_mapping(w_in, w_out, gx, gy)
    inside = (xe >= -0.5) & (xe < SHAPE[1] - 0.5) & (ye >= -0.5) & (ye < SHAPE[0] - 0.5)
    cov = res.coverage[gy.astype(int), gx.astype(int)]
    assert np.mean(cov == inside) > 0.9999
    band = inside & ((xe < 12) | (ye < 12) | (xe > SHAPE[1] - 13) | (ye > SHAPE[0] - 13))
    assert np.all((res.mask[gy.astype(int), gx.astype(int)][band] & EDGE) != 0)
    deep = (xe > 20) & (ye > 20) & (xe < SHAPE[1] - 21) & (ye < SHAPE[0] - 21)
    assert not np.any((res.mask[gy.astype(int), gx.astype(int)][deep] & EDGE) != 0)


def test_no_overlap_gives_all_edge(wcs_pair) -> None:
    w_in, _ = wcs_pair
    w_far = decam_wcs(28, RA0 + 3.0, DEC0, 0.0)
    res = resample_to_grid(np.ones(SHAPE, np.float32), None, np.ones(SHAPE, np.float32),
                           w_in, w_far, (256, 128))
    assert not res.coverage.any()
    assert np.all(res.mask == EDGE) and np.all(res.weight == 0) and np.all(res.image == 0)


def test_bad_inputs_raise(wcs_pair) -> None:
    w_in, w_out = wcs_pair
    with pytest.raises(DataTypeError):
        resample_to_grid(np.ones((10, 10), np.float32), None, np.ones((10, 11), np.float32),
                         w_in, w_out, (8, 8))
    with pytest.raises(DataTypeError):
        resample_to_grid(np.ones((10, 10), np.float32), np.ones((10, 10)),
                         np.ones((10, 10), np.float32), w_in, w_out, (8, 8))
    with pytest.raises(ValueError):
        resample_to_grid(np.ones((10, 10), np.float32), None, np.ones((10, 10), np.float32),
                         w_in, w_out, (8, 8), kernel="bilinear")
    with pytest.raises(ValueError):
        ResampleConfig(grid_step=2)


def test_linear_ramps_reproduced_exactly(wcs_pair) -> None:
    """The kernel reproduces polynomials up to cubic, so a ramp in x (or y) resamples to the
    mapped input coordinate times the area ratio; this also checks the kernel's own mapping
    interpolation against GridMapping.evaluate. Plain Lanczos-3 is off by up to 0.02 px."""
    w_in, w_out = wcs_pair
    yy, xx = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    ys, xs = np.mgrid[1000:1200, 300:500]
    for ramp, axis in ((xx, 0), (yy, 1)):
        res = resample_to_grid(ramp.astype(np.float32), None, np.ones(SHAPE, np.float32),
                               w_in, w_out, SHAPE)
        mapped = res.mapping.evaluate(xs.astype(float), ys.astype(float))
        err = res.image[1000:1200, 300:500] / mapped[2] - mapped[axis]
        assert np.abs(err).max() < 1e-3


@pytest.mark.parametrize("fwhm", [0.8, 1.4])
def test_centroids_other_seeing(wcs_pair, fwhm: float) -> None:
    w_in, w_out = wcs_pair
    rng = np.random.default_rng(int(fwhm * 10))
    xo = 300 + np.arange(12) * 80 + rng.uniform(0, 1, 12)
    yo = 500 + np.arange(12) * 250 + rng.uniform(0, 1, 12)
    ra, dec = w_out.all_pix2world(xo, yo, 0)
    img = render_stars(w_in, ra, dec, np.full(12, 1e5), fwhm_arcsec=fwhm).astype(np.float32)
    res = resample_to_grid(img, None, np.ones(SHAPE, np.float32), w_in, w_out, SHAPE)
    sigma = fwhm / 0.263 / 2.355
    shifts = [np.hypot(*(np.array(windowed_centroid(res.image, x, y, sigma=sigma)) - [x, y]))
              for x, y in zip(xo, yo)]
    assert max(shifts) < 0.005, max(shifts)


def test_partial_overlap_box_gives_the_full_grid_result(wcs_pair) -> None:
    """The kernel runs only on the output box that maps into the input: an input covering a
    corner of the output gives exactly what evaluating every output pixel gives."""
    from desgw.diff.resample import output_box, prepare_input
    from desgw.diff.resample_kernels import box_any, resample_kernel

    _, w_out = wcs_pair
    w_in = shifted_wcs(w_out, 700.0, -1500.0)          # input covers a corner of the output
    shape_in = (1200, 900)
    img = white_noise(shape_in, 3.0, 5) + 50.0
    mask = np.zeros(shape_in, np.int32)
    mask[300:310, 200:260] = CRAY
    weight = np.where(mask == 0, 1 / 9.0, 0).astype(np.float32)
    res = resample_to_grid(img, mask, weight, w_in, w_out, SHAPE)
    box = output_box(res.mapping, shape_in, 3)
    assert 0 < (box[1] - box[0]) * (box[3] - box[2]) < 0.5 * SHAPE[0] * SHAPE[1]
    # reference: every output pixel through the kernel
    pi, pv, pf, pg, pfl = prepare_input(img, mask, weight)
    outs = (np.empty(SHAPE, np.float32), np.empty(SHAPE, np.int32),
            np.empty(SHAPE, np.float32), np.empty(SHAPE, np.uint8))
    m = res.mapping
    resample_kernel(pi, pv, pf, pg, box_any(pfl, 2, 3), m.xin, m.yin, m.area, m.x0, m.y0,
                    float(m.step), lanczos_table(3), 3, ResampleConfig().mask_threshold,
                    int(EDGE), int(UNUSABLE), int(BADPIX), *outs, 0, SHAPE[0], 0, SHAPE[1])
    assert res.coverage.sum() > 1000
    np.testing.assert_array_equal(res.image, outs[0])
    np.testing.assert_array_equal(res.mask, outs[1])
    np.testing.assert_array_equal(res.weight, outs[2])
    np.testing.assert_array_equal(res.coverage, outs[3].view(bool))


def _reference_resample(img: np.ndarray, mask: np.ndarray, weight: np.ndarray, mapping,
                        shape: tuple[int, int], threshold: float, *, exact_variance: bool = False
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Direct per-pixel reference of the module docstring's rules (float64, no fast path):
    value, variance and mask of each covered output pixel from the nearest-bin Lanczos-3 taps
    of its mapped input position. Where the 6 x 6 tap box lies inside the input and holds no
    flagged pixel the outer ring of taps takes the nearest pixel's variance (the module's
    rule), unless ``exact_variance``."""
    table = lanczos_table(3)
    bins = table.shape[0] - 1
    ny_in, nx_in = img.shape
    ok = np.isfinite(img) & np.isfinite(weight) & (weight > 0) & ((mask & UNUSABLE) == 0)
    flag = np.where(~ok & ((mask & UNUSABLE) == 0), mask | BADPIX, mask)
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    xin, yin, area = mapping.evaluate(xs, ys)
    val = np.zeros(shape)
    var = np.zeros(shape)
    bits = np.full(shape, EDGE, np.int64)
    for j, i in itertools.product(range(shape[0]), range(shape[1])):
        x, y, a = xin[j, i], yin[j, i], area[j, i]
        if not (-0.5 <= x < nx_in - 0.5 and -0.5 <= y < ny_in - 0.5):
            continue
        fx, fy = int(np.floor(x)), int(np.floor(y))
        wx = table[int((x - fx) * bins + 0.5)].astype(np.float32).astype(float)
        wy = table[int((y - fy) * bins + 0.5)].astype(np.float32).astype(float)
        acc = accv = accg = 0.0
        b = 0
        clean = (2 <= fy < ny_in - 3 and 2 <= fx < nx_in - 3
                 and bool(np.all(ok[fy - 2:fy + 4, fx - 2:fx + 4]
                                 & (mask[fy - 2:fy + 4, fx - 2:fx + 4] == 0))))
        vnear = 1.0 / float(weight[int(np.floor(y + 0.5)), int(np.floor(x + 0.5))]) if clean \
            else 0.0
        for p, q in itertools.product(range(6), range(6)):
            r, c, w = fy - 2 + p, fx - 2 + q, wy[p] * wx[q]
            if not (0 <= r < ny_in and 0 <= c < nx_in):
                b |= EDGE if abs(w) > threshold else 0
                continue
            b |= int(flag[r, c]) if abs(w) > threshold else 0
            if ok[r, c]:
                acc += w * float(img[r, c])
                ring = clean and not exact_variance and (p in (0, 5) or q in (0, 5))
                accv += w * w * (vnear if ring else 1.0 / float(weight[r, c]))
                accg += w
        val[j, i] = a * acc / accg if accg > 0 else 0.0
        var[j, i] = a * a * accv / accg ** 2 if accg > 0 else 0.0
        bits[j, i] = b
    return val, var, bits


def test_kernel_matches_direct_reference_around_bad_pixels(wcs_pair) -> None:
    """The kernel reads the input as it is (no cleaned copy): NaN, inf and huge values at bad
    pixels of every kind (unusable bit, zero weight, NaN weight, NaN value without a bit) must
    not leak, and value, variance and mask bits must equal a direct evaluation of the rules,
    pixel by pixel, including the input's edges (a 60 x 50 input on a rotated grid)."""
    w_big, w_out = wcs_pair
    w_in = shifted_wcs(w_big, -1000.0, -2000.0)
    rng = np.random.default_rng(11)
    shape_in = (60, 50)
    img = (rng.normal(0.0, 5.0, shape_in) + 200.0).astype(np.float32)
    img[20:26, 20:26] += 5000.0 * np.exp(-((np.mgrid[0:6, 0:6] - 2.6) ** 2).sum(0) / 3.0)
    weight = (1.0 / rng.uniform(20.0, 30.0, shape_in)).astype(np.float32)
    mask = np.zeros(shape_in, np.int32)
    mask[10, 12], img[10, 12] = CRAY, 1e30          # unusable bit, huge value
    weight[30, 40], img[30, 40] = 0.0, np.nan       # zero weight, NaN value: BADPIX
    img[45, 7] = np.inf                             # inf, no bit: BADPIX
    weight[5, 30] = np.nan                          # NaN weight: BADPIX
    mask[50, 25] = SUSPECT                          # informational bit: usable
    mask[:, 0] |= EDGE                              # input edge column
    res = resample_to_grid(img, mask, weight, w_in, w_out, SHAPE)
    cov = np.argwhere(res.coverage)
    (y0, x0), (y1, x1) = cov.min(axis=0), cov.max(axis=0) + 1
    assert (y1 - y0) * (x1 - x0) < 5000
    sub = res.mapping
    # the reference on the covered box, in that box's frame
    from desgw.diff.resample_mapping import GridMapping

    shifted = GridMapping(x0=sub.x0 - x0, y0=sub.y0 - y0, step=sub.step, xin=sub.xin,
                          yin=sub.yin, area=sub.area, shape_out=(int(y1 - y0), int(x1 - x0)))
    val, var, bits = _reference_resample(img, mask, weight, shifted, shifted.shape_out,
                                         ResampleConfig().mask_threshold)
    box = (slice(y0, y1), slice(x0, x1))
    got_w = res.weight[box].astype(float)
    assert np.all(np.isfinite(res.image)) and np.all(np.isfinite(res.weight))
    np.testing.assert_array_equal(res.mask[box], bits)
    usable = (bits & UNUSABLE) == 0
    assert usable.sum() > 1000 and (~usable & res.coverage[box]).sum() > 50
    np.testing.assert_allclose(res.image[box], val.astype(np.float32), rtol=2e-6, atol=1e-3)
    np.testing.assert_allclose(got_w[usable], 1.0 / var[usable], rtol=2e-5)
    assert np.all(got_w[~usable] == 0)


@pytest.mark.parametrize("beta", [2.5, 4.5, 0.0])
def test_outer_ring_variance_bounded_on_a_star(wcs_pair, beta: float) -> None:
    """The fast path's outer ring of taps takes the nearest pixel's variance. On a bright
    star's Poisson variance (sky 400 e-, peak 20000 e-, FWHM 3.5 px, Moffat beta 2.5 and 4.5
    and a Kolmogorov profile drawn by galsim: ``beta`` 0)
    the output weights stay within 0.5 % of the exact propagation, the sum of the output
    variances over the star within 1e-5 (the ring's errors on either side of the nearest
    pixel cancel), and on flat sky 18 px from the star within 2e-5."""
    w_big, w_out = wcs_pair
    w_in = shifted_wcs(w_big, -1000.0, -2000.0)
    shape_in = (60, 50)
    yy, xx = np.mgrid[0:shape_in[0], 0:shape_in[1]]
    if beta > 0:
        alpha = 3.5 / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
        star = 20000.0 * (1.0 + ((xx - 25.3) ** 2 + (yy - 30.6) ** 2) / alpha ** 2) ** (-beta)
    else:
        im = galsim.ImageD(shape_in[1], shape_in[0], scale=1.0)
        galsim.Kolmogorov(fwhm=3.5).drawImage(
            image=im, offset=(25.3 - (shape_in[1] - 1) / 2, 30.6 - (shape_in[0] - 1) / 2))
        star = 20000.0 * im.array / im.array.max()
    img = star.astype(np.float32)
    weight = (1.0 / (400.0 + star)).astype(np.float32)
    mask = np.zeros(shape_in, np.int32)
    res = resample_to_grid(img, mask, weight, w_in, w_out, SHAPE)
    cov = np.argwhere(res.coverage)
    (y0, x0), (y1, x1) = cov.min(axis=0), cov.max(axis=0) + 1
    from desgw.diff.resample_mapping import GridMapping

    sub = res.mapping
    shifted = GridMapping(x0=sub.x0 - x0, y0=sub.y0 - y0, step=sub.step, xin=sub.xin,
                          yin=sub.yin, area=sub.area, shape_out=(int(y1 - y0), int(x1 - x0)))
    threshold = ResampleConfig().mask_threshold
    _, var_rule, _ = _reference_resample(img, mask, weight, shifted, shifted.shape_out,
                                         threshold)
    _, var_exact, bits = _reference_resample(img, mask, weight, shifted, shifted.shape_out,
                                             threshold, exact_variance=True)
    got = res.weight[y0:y1, x0:x1].astype(float)
    use = ((bits & UNUSABLE) == 0) & (var_exact > 0)
    xin, yin, _ = shifted.evaluate(*np.meshgrid(np.arange(x1 - x0, dtype=float),
                                                np.arange(y1 - y0, dtype=float)))
    interior = use & (xin > 4) & (xin < shape_in[1] - 5) & (yin > 4) & (yin < shape_in[0] - 5)
    assert interior.sum() > 1500
    np.testing.assert_allclose(got[use], 1.0 / var_rule[use], rtol=2e-5)
    rel = got[interior] * var_exact[interior] - 1.0
    assert 1e-4 < np.abs(rel).max() < 5e-3  # acts: 1.7e-3, 2.4e-3, 2.7e-3 measured
    flux_var = np.sum(1.0 / got[interior]) / np.sum(var_exact[interior]) - 1.0
    assert abs(flux_var) < 1e-5  # measured 4e-9, 3e-8, 1.5e-8
    d = np.hypot(xin - 25.3, yin - 30.6)[interior]
    assert np.abs(rel[d > 18]).max() < 2e-5
