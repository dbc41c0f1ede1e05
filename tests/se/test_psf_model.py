"""PSF model: FWHM and ellipticity across the CCD against galsim truth, rendering, outlier
rejection, storage (FITS, pickle) and failures."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
from astropy.io import fits

from desgw.errors import DataTypeError
from desgw.se.psf import PSFConfig, PSFFitError, PSFModel, fit_psf, spread_selection
from desgw.se.psf_lanczos import shift_stamp
from test_psf_synth import make_field

POSITIONS = [(60, 60), (1023, 1023), (1990, 60), (60, 1990), (1990, 1990), (1023, 60),
             (60, 1023), (1500, 700)]


def _fit(fwhm0, **kw):
    f = make_field(shape=(2048, 2048), n_stars=350, n_gal=0, fwhm0=fwhm0, mag_range=(16.0, 20.5),
                   seed=11, n_masked_stars=4)
    s = f.stars
    return f, fit_psf(f.image - f.sky, f.weight, f.mask, s["x"], s["y"], config=PSFConfig(**kw))


@pytest.fixture(scope="module", params=[3.0, 4.5, 7.6], ids=lambda v: f"fwhm{v}")
def fitted(request):
    if request.param < 6:
        return _fit(request.param)
    # Wide seeing: a larger stamp, and a lower S/N cut so that as many stars qualify.
    return _fit(request.param, stamp=41, min_snr=25.0)


def test_fwhm_within_2_percent_everywhere(fitted):
    f, model = fitted
    for x, y in POSITIONS:
        truth = float(f.psf.fwhm(x, y))
        assert abs(model.fwhm_at(x, y) / truth - 1) < 0.02, (x, y, model.fwhm_at(x, y), truth)


def test_ellipticity_follows_truth(fitted):
    f, model = fitted
    for x, y in POSITIONS:
        e1, e2 = model.ellipticity_at(x, y)
        assert abs(e1 - f.psf.e1(x, y)) < 0.01, (x, y, e1, f.psf.e1(x, y))
        assert abs(e2 - f.psf.e2(x, y)) < 0.01, (x, y, e2, f.psf.e2(x, y))


def test_model_bookkeeping(fitted):
    f, model = fitted
    assert model.degree == 2 and model.coeffs.shape[0] == 6
    assert model.n_stars > 120
    assert 0.8 < np.median(model.star_chi2) < 1.3
    # Stars with cosmic rays in the stamp were not used.
    cr = f.stars["cr"]
    used = np.hypot(model.star_x[:, None] - f.stars["x"][cr][None], model.star_y[:, None]
                    - f.stars["y"][cr][None]).min(axis=0)
    assert np.all(used > 1.0)


def test_capped_stars_spread_over_the_ccd_keep_the_model():
    # more stars than max_stars: a grid of cells, each cell's brightest first; the model from
    # 48 of them still follows the truth everywhere
    f, model = _fit(4.5, max_stars=48, select_cells=16)
    assert 40 <= model.n_stars <= 48
    cells = (model.star_x // 512).astype(int) + 4 * (model.star_y // 512).astype(int)
    # each 512 px cell of the 2048 px CCD holds 3 (2 after a chi2 rejection); the brightest 48
    # wherever they are gave 2-6 per cell
    counts = np.bincount(cells, minlength=16)
    assert counts.min() >= 2 and counts.max() - counts.min() <= 1, counts
    for x, y in POSITIONS:
        truth = float(f.psf.fwhm(x, y))
        assert abs(model.fwhm_at(x, y) / truth - 1) < 0.02, (x, y, model.fwhm_at(x, y), truth)
        e1, e2 = model.ellipticity_at(x, y)
        assert abs(e1 - f.psf.e1(x, y)) < 0.01 and abs(e2 - f.psf.e2(x, y)) < 0.01, (x, y)


def test_spread_selection_takes_each_cells_best_first():
    # 2 cells (left and right halves of a 100 x 200 image); 10 positions on the left, ranked
    # first, 3 on the right
    x = np.r_[np.full(10, 20.0), np.full(3, 150.0)]
    y = np.linspace(5.0, 95.0, 13)
    np.testing.assert_array_equal(spread_selection(x, y, (100, 200), 4, 2), [0, 1, 10, 11])
    np.testing.assert_array_equal(spread_selection(x, y, (100, 200), 7, 2),
                                  [0, 1, 2, 3, 10, 11, 12])
    np.testing.assert_array_equal(spread_selection(x, y, (100, 200), 13, 2), np.arange(13))
    # one cell: the first k
    np.testing.assert_array_equal(spread_selection(x, y, (100, 200), 5, 1), np.arange(5))
    with pytest.raises(ValueError, match="max_stars"):
        PSFConfig(max_stars=0)


def test_render_normalised_and_centred():
    f, model = _fit(4.0)
    for dx, dy in [(0.0, 0.0), (0.3, -0.2), (-0.5, 0.45)]:
        st = model.render(500.0, 1500.0, dx=dx, dy=dy)
        assert st.dtype == np.float32 and st.shape == (25, 25)
        assert st.sum() == pytest.approx(1.0, abs=1e-5)
        yy, xx = np.mgrid[:25, :25]
        w = np.exp(-((xx - 12 - dx) ** 2 + (yy - 12 - dy) ** 2) / (2 * 1.7 ** 2)) * st
        assert (w * xx).sum() / w.sum() - 12 == pytest.approx(dx, abs=0.02)
        assert (w * yy).sum() / w.sum() - 12 == pytest.approx(dy, abs=0.02)
    big = model.render(500.0, 1500.0, size=31)
    small = model.render(500.0, 1500.0, size=11)
    assert big.shape == (31, 31) and small.shape == (11, 11)
    assert big[3:28, 3:28] == pytest.approx(model.render(500.0, 1500.0), abs=1e-7)
    assert small.sum() == pytest.approx(1.0, abs=1e-5)
    # The model matches a star drawn by galsim at that position (pixel by pixel, 2% of peak).
    truth = f.psf.profile(500.0, 1500.0).drawImage(nx=25, ny=25, scale=1.0, offset=(0.3, -0.2)).array
    truth /= truth.sum()
    diff = np.abs(model.render(500.0, 1500.0, dx=0.3, dy=-0.2) - truth).max()
    assert diff < 0.02 * truth.max()
    with pytest.raises(ValueError):
        model.render(0, 0, size=10)


def test_outlier_stars_rejected():
    f = make_field(shape=(2048, 2048), n_stars=350, n_gal=60, fwhm0=4.0, mag_range=(16.0, 20.5),
                   seed=11, n_masked_stars=4, gal_hlr=(0.8, 1.5))
    s, g = f.stars, f.galaxies
    bright_gal = g["flux"] > 10 ** (-0.4 * (19.0 - 30))
    x = np.concatenate([s["x"], g["x"][bright_gal]])
    y = np.concatenate([s["y"], g["y"][bright_gal]])
    model = fit_psf(f.image - f.sky, f.weight, f.mask, x, y)
    d = np.hypot(model.star_x[:, None] - g["x"][bright_gal][None],
                 model.star_y[:, None] - g["y"][bright_gal][None]).min(axis=0)
    assert bright_gal.sum() >= 10
    assert np.mean(d > 1.0) > 0.9  # galaxies rejected by chi2
    assert abs(model.fwhm_at(1023, 1023) / f.psf.fwhm(1023, 1023) - 1) < 0.02


def test_fits_and_pickle_roundtrip(tmp_path):
    _, model = _fit(4.0)
    buf = io.BytesIO()
    model.to_fits_hdul().writeto(buf)
    buf.seek(0)
    with fits.open(buf) as hdul:
        assert hdul["PSF_DATA"].header["POLNAME1"] == "X_IMAGE"
        assert hdul["PSF_DATA"].header["PSFAXIS3"] == 6
        back = PSFModel.from_fits_hdul(hdul)
    np.testing.assert_array_equal(back.render(100.0, 200.0, dx=0.2), model.render(100.0, 200.0, dx=0.2))
    np.testing.assert_allclose(back.star_x, model.star_x)
    assert back.image_shape == model.image_shape and back.degree == model.degree
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again.render(7.0, 9.0), model.render(7.0, 9.0))
    with pytest.raises(DataTypeError):
        PSFModel.from_fits_hdul(fits.HDUList([fits.PrimaryHDU()]), path="x.psf")


def test_too_few_stars_raises_picklable_error():
    f = make_field(shape=(512, 512), n_stars=20, n_gal=0, fwhm0=4.0, mag_range=(16.0, 17.0), seed=2)
    with pytest.raises(PSFFitError) as exc:
        fit_psf(f.image - f.sky, f.weight, f.mask, f.stars["x"][:2], f.stars["y"][:2])
    err = pickle.loads(pickle.dumps(exc.value))
    assert err.n_candidates == 2 and err.n_usable <= 2 and str(err) == str(exc.value)
    # Few stars: the polynomial degree is lowered instead of over-fitting.
    model = fit_psf(f.image - f.sky, f.weight, f.mask, f.stars["x"][:8], f.stars["y"][:8])
    assert model.degree < 2
    with pytest.raises(DataTypeError):
        fit_psf(f.image, f.weight[:10], f.mask, f.stars["x"], f.stars["y"])


def test_lanczos_shift_roundtrip():
    yy, xx = np.mgrid[:31, :31]
    g = np.exp(-((xx - 15) ** 2 + (yy - 15) ** 2) / (2 * 2.0 ** 2))
    moved = shift_stamp(shift_stamp(g, 0.37, -0.21, 4), -0.37, 0.21, 4)
    assert np.abs(moved - g)[5:-5, 5:-5].max() < 5e-3 * g.max()
    shifted = shift_stamp(g, 0.37, -0.21, 4)
    truth = np.exp(-((xx - 15.37) ** 2 + (yy - 14.79) ** 2) / (2 * 2.0 ** 2))
    assert np.abs(shifted - truth).max() < 3e-3


def test_fwhm_grid_equals_separate_fits(fitted):
    # the grid's fits start from their neighbours' and the centre's cached fit
    _, model = fitted
    ny, nx = model.image_shape
    gx = np.linspace(0.0, nx - 1.0, 3)
    gy = np.linspace(0.0, ny - 1.0, 4)
    fresh = PSFModel(coeffs=model.coeffs, degree=model.degree, x_zero=model.x_zero,
                     x_scale=model.x_scale, y_zero=model.y_zero, y_scale=model.y_scale,
                     image_shape=model.image_shape)
    fresh.fwhm_at((nx - 1) / 2.0, (ny - 1) / 2.0)
    grid = fresh.fwhm_grid(gx, gy)
    separate = np.array([[PSFModel(coeffs=model.coeffs, degree=model.degree,
                                   x_zero=model.x_zero, x_scale=model.x_scale,
                                   y_zero=model.y_zero, y_scale=model.y_scale,
                                   image_shape=model.image_shape).fwhm_at(x, y) for x in gx]
                         for y in gy])
    assert grid.shape == (4, 3)
    np.testing.assert_allclose(grid, separate, rtol=1e-5)
    assert np.ptp(separate) > 1e-3 * separate.mean()  # the FWHM varies over the grid
    assert fresh.fwhm_at(gx[2], gy[3]) == grid[3, 2]  # the grid's fits are cached


def test_same_convolve_equals_linear_convolution():
    # the companion search's circular convolution on n + n // 2 pixels gives the 'same' crop of
    # the linear one (a grid one pixel smaller would wrap the kernel's edge into the crop)
    from scipy.signal import fftconvolve

    from desgw.se.psf import _same_convolve

    rng = np.random.default_rng(3)
    for n in (5, 25, 27, 41):
        a = rng.normal(size=(4, n, n))
        b = rng.normal(size=(4, n, n))
        ka, kb = rng.random((n, n)), rng.random((n, n))
        got = _same_convolve(np.stack([a, b]), np.stack([ka, kb]))
        for g, x, k in ((got[0], a, ka), (got[1], b, kb)):
            want = fftconvolve(x, k[None], mode="same", axes=(1, 2))
            np.testing.assert_allclose(g, want, rtol=0, atol=1e-12 * np.abs(want).max())


def test_fits_bytes_are_astropys():
    """to_fits_bytes writes what to_fits_hdul + writeto write (primary keywords included),
    byte for byte: fitted models of two seeings and stamp sizes, a degree-1 model, one
    without stars and odd header values."""
    import dataclasses

    _, model = _fit(4.0)
    _, wide = _fit(7.6, stamp=41, min_snr=25.0)
    low = dataclasses.replace(model, degree=1, coeffs=model.coeffs[:3])
    none = dataclasses.replace(model, star_x=np.zeros(0), star_y=np.zeros(0),
                               star_flux=np.zeros(0), star_chi2=np.zeros(0), n_candidates=0)
    odd = dataclasses.replace(model, x_zero=1e-17, x_scale=2.0 ** 0.5, lanczos_order=3)
    primary = [("EXPNUM", 880001), ("CCDNUM", 28), ("BAND", "r"), ("CFGHASH", "0123abcd" * 2),
               ("QCPASS", True)]
    for m in (model, wide, low, none, odd):
        hdul = m.to_fits_hdul()
        for key, value in primary:
            hdul[0].header[key] = value
        buf = io.BytesIO()
        hdul.writeto(buf)
        assert m.to_fits_bytes(primary) == buf.getvalue()
    back = PSFModel.from_fits_hdul(fits.HDUList.fromstring(none.to_fits_bytes()))
    assert back.n_stars == 0 and back.coeffs.shape == none.coeffs.shape
