"""ZOGY filters and tiled subtraction against analytic limits and white-noise statistics."""

from __future__ import annotations

import numpy as np
import pytest

from desgw.diff.zogy import ZogyConfig, zogy, zogy_kernels
from desgw.diff.zogy_psf import ConstantPSF, TiledPSF, fit_stamp, stamp_fwhm
from desgw.diff.zogy_synth import MoffatPSFField, add_sources

SHAPE = (512, 512)
CFG = ZogyConfig(tile=256, border=48)


def _moffat(fwhm: float, e1: float = 0.0) -> np.ndarray:
    return MoffatPSFField(fwhm, e1=e1, image_shape=SHAPE).render(0, 0).astype(float)


@pytest.mark.parametrize("var_ref, expect", [(1e-8, "new"), (1e8, "ref")])
def test_psf_diff_limits(var_ref, expect):
    """Noiseless reference -> P_D = P_n; noiseless new image -> P_D = P_r (paper eq. 14)."""
    pn, pr = _moffat(4.2, e1=0.1), _moffat(3.0)
    k = zogy_kernels(pn, pr, var_new=1.0, var_ref=var_ref, kernel_size=96, psf_diff_size=41)
    target = pn if expect == "new" else pr
    assert k.psf_diff.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.abs(k.psf_diff - target).max() < 1e-4 * target.max() + 1e-6
    # F_D = F_r F_n / sqrt(s_n^2 F_r^2 + s_r^2 F_n^2)
    assert k.f_d == pytest.approx(1.0 / np.sqrt(1.0 + var_ref))


def test_flux_response_matches_f_s():
    pn, pr = _moffat(3.5), _moffat(4.5)
    k = zogy_kernels(pn, pr, var_new=400.0, var_ref=100.0, f_new=1.3, f_ref=0.7,
                     kernel_size=96)
    assert k.response_new(pn) == pytest.approx(k.f_s, rel=1e-6)
    # A broader PSF at the source than the filter assumes gives a smaller response.
    assert k.response_new(_moffat(3.8)) < 0.99 * k.f_s


@pytest.mark.parametrize("fn, fr", [(4.5, 3.0), (3.0, 4.5)])
def test_noiseless_point_source_gives_flux_and_psf(fn, fr):
    ps, pt = MoffatPSFField(fn, image_shape=SHAPE), MoffatPSFField(fr, image_shape=SHAPE)
    new = np.zeros(SHAPE, np.float32)
    x, y, flux = 300.3, 200.7, 5000.0
    add_sources(new, ps, [x], [y], [flux])
    ref = np.zeros(SHAPE, np.float32)
    res = zogy(new, ref, np.full(SHAPE, 400, np.float32), np.full(SHAPE, 100, np.float32),
               ps, pt, config=CFG)
    xr, yr = 300, 201
    stamp = res.psf_diff.render(x, y, dx=x - xr, dy=y - yr)
    h = stamp.shape[0] // 2
    cut = res.diff[yr - h:yr + h + 1, xr - h:xr + h + 1]
    assert res.diff.sum() == pytest.approx(flux, rel=1e-4)
    assert np.abs(cut - flux * stamp).max() < 1e-4 * flux * stamp.max()
    # flux image at a source centred on a pixel equals its flux
    new2 = np.zeros(SHAPE, np.float32)
    add_sources(new2, ps, [300.0], [200.0], [flux])
    res2 = zogy(new2, ref, np.full(SHAPE, 400, np.float32), np.full(SHAPE, 100, np.float32),
                ps, pt, config=CFG)
    assert res2.flux[200, 300] == pytest.approx(flux, rel=1e-4)
    assert np.unravel_index(np.argmax(res2.score), SHAPE) == (200, 300)


@pytest.mark.parametrize("fn, fr", [(4.5, 3.0), (3.0, 4.5)])
def test_white_noise_score_and_diff_normalised(fn, fr):
    """Blank sky: std(S_corr) = 1 and std(diff) = sqrt(diff_var) to 5 %, also for unequal,
    spatially varying noise and a flux-scale difference."""
    rng = np.random.default_rng(2)
    _yy, xx = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    vn = (300.0 + 200.0 * xx / SHAPE[1]).astype(np.float32)  # sky gradient across tiles
    vr = np.full(SHAPE, 50.0, np.float32)
    new = (rng.normal(size=SHAPE) * np.sqrt(vn)).astype(np.float32)
    ref = (rng.normal(size=SHAPE) * np.sqrt(vr)).astype(np.float32)
    res = zogy(new, ref, vn, vr, _moffat(fn), _moffat(fr), f_new=1.0, f_ref=0.6, config=CFG)
    core = (slice(20, -20), slice(20, -20))
    assert 0.95 < res.score[core].std() < 1.05
    assert abs(res.score[core].mean()) < 0.06  # S_corr is smooth: ~7000 independent values
    ratio = res.diff[core].std() / np.sqrt(res.diff_var[core].mean())
    assert 0.95 < ratio < 1.05
    # flux errors: F_S-normalised score
    assert np.allclose(res.flux[core] / res.flux_err[core], res.score[core], rtol=1e-4,
                       atol=1e-4)


def test_zero_variance_region_is_exact_and_blank():
    """Pixels with no data (variance 0, value 0) leave the score normalised next to them."""
    rng = np.random.default_rng(3)
    new = rng.normal(0, 20, SHAPE).astype(np.float32)
    ref = rng.normal(0, 10, SHAPE).astype(np.float32)
    vn = np.full(SHAPE, 400, np.float32)
    vr = np.full(SHAPE, 100, np.float32)
    for a, v in ((new, vn), (ref, vr)):
        a[:, 200:260] = 0.0
        v[:, 200:260] = 0.0
    res = zogy(new, ref, vn, vr, _moffat(4.0), _moffat(3.0), config=CFG)
    near = res.score[20:-20, 262:300]
    assert 0.93 < near.std() < 1.07
    assert np.all(res.flux_err[:, 215:245] == np.inf)
    assert np.all(res.score[:, 215:245] == 0)


def test_psf_helpers():
    st = _moffat(4.0)
    assert stamp_fwhm(st) == pytest.approx(4.0, abs=0.15)
    c = ConstantPSF(st * 3.0)
    assert c.render(10, 10).sum() == pytest.approx(1.0, abs=1e-6)
    shifted = c.render(10, 10, dx=0.5)
    _yy, xx = np.mgrid[0:41, 0:41]
    assert (shifted * xx).sum() == pytest.approx(20.5, abs=0.01)
    assert fit_stamp(st, 21).shape == (21, 21)
    with pytest.raises(ValueError):
        fit_stamp(np.ones((4, 4)), 3)
    t = TiledPSF(stamps=np.stack([st, st, st, st]).reshape(2, 2, 41, 41).astype(np.float32),
                 tile=256, image_shape=SHAPE)
    assert t.tile_index(300, 10) == (0, 1)
    assert t.tile_index(-5, 9999) == (1, 0)


def test_config_validation():
    with pytest.raises(ValueError):
        ZogyConfig(tile=256, border=48, kernel_size=97)
    with pytest.raises(ValueError):
        ZogyConfig(psf_size=40)
    with pytest.raises(ValueError):
        zogy(np.zeros((8, 8)), np.zeros((8, 9)), np.ones((8, 8)), np.ones((8, 8)),
             _moffat(3.0), _moffat(3.0))


def _direct_gain(kernel: np.ndarray, acf: np.ndarray) -> float:
    """``sum k (k (x) acf) / sum k^2`` by a real-space convolution (the definition)."""
    from scipy.signal import fftconvolve

    return float(np.sum(kernel * fftconvolve(kernel, acf, mode="same"))
                 / np.sum(kernel * kernel))


def test_noise_factors_match_real_space_definition():
    """The Parseval form of the correlated-noise factors equals the real-space filter sums."""
    from scipy.signal import correlate2d

    from desgw.diff.zogy import acf_hat

    pn, pr = _moffat(4.5), _moffat(3.2)
    k = zogy_kernels(pn, pr, var_new=400.0, var_ref=90.0, f_new=1.0, f_ref=0.8,
                     kernel_size=96)
    g = np.outer([0.25, 1.0, 0.25], [0.25, 1.0, 0.25])
    acf_r = np.pad(correlate2d(g, g), 1)
    acf_r /= acf_r[acf_r.shape[0] // 2, acf_r.shape[1] // 2]
    acf_n = np.zeros((3, 3))
    acf_n[1, 1], acf_n[1, 0], acf_n[1, 2] = 1.0, 0.2, 0.2
    f_s, f_d = k.noise_factors(acf_hat(acf_n, 96), acf_hat(acf_r, 96))
    for f, (kn, kr) in ((f_s, (k.k_new, k.k_ref)), (f_d, (k.d_new, k.d_ref))):
        vn, vr = 400.0 * np.sum(kn * kn), 90.0 * np.sum(kr * kr)
        frac = vr / (vn + vr)
        want = 1.0 + frac * (_direct_gain(kr, acf_r) - 1.0) \
            + (1.0 - frac) * (_direct_gain(kn, acf_n) - 1.0)
        assert f == pytest.approx(want, rel=1e-6)
        assert f > 1.02  # the correlation matters here: a factor of 1 would be wrong
    assert k.noise_factors(None, None) == (1.0, 1.0)


def test_correlated_reference_noise_score_normalised():
    """A reference whose noise is correlated (smoothed white noise, as after resampling):
    with its autocorrelation given, blank-sky S_corr and diff / sigma have unit std;
    without it the score noise is underestimated by several per cent."""
    from scipy.signal import correlate2d, fftconvolve

    rng = np.random.default_rng(5)
    g = np.outer([0.3, 1.0, 0.3], [0.3, 1.0, 0.3])
    acf = correlate2d(g, g)
    vr_pix = 150.0
    ref = fftconvolve(rng.normal(size=(SHAPE[0] + 2, SHAPE[1] + 2)), g, mode="valid")
    ref = (ref * np.sqrt(vr_pix / np.sum(g * g))).astype(np.float32)
    acf = acf / acf[2, 2]
    vn = np.full(SHAPE, 100.0, np.float32)
    vr = np.full(SHAPE, vr_pix, np.float32)
    new = (rng.normal(size=SHAPE) * 10.0).astype(np.float32)
    core = (slice(20, -20), slice(20, -20))
    plain = zogy(new, ref, vn, vr, _moffat(3.0), _moffat(4.0), config=CFG)
    res = zogy(new, ref, vn, vr, _moffat(3.0), _moffat(4.0), noise_acf_ref=acf, config=CFG)
    assert plain.score[core].std() > 1.08
    assert 0.96 < res.score[core].std() < 1.04
    assert np.all(res.score_noise_factor > 1.1)
    ratio = res.diff[core].std() / np.sqrt(res.diff_var[core].mean())
    assert 0.96 < ratio < 1.04
    assert np.allclose(res.flux[core], plain.flux[core])


def _point_source_run(shape, astro):
    ps = MoffatPSFField(4.0, image_shape=shape)
    new = np.zeros(shape, np.float32)
    x, y, flux = 0.5 * shape[1] + 0.3, 0.5 * shape[0] - 0.2, 5000.0
    add_sources(new, ps, [x], [y], [flux])
    cfg = ZogyConfig(tile=256, border=48, astrometric_sigma=astro, flux_nodes=False)
    return zogy(new, np.zeros(shape, np.float32), np.full(shape, 400, np.float32),
                np.full(shape, 100, np.float32), ConstantPSF(_moffat(4.0)),
                ConstantPSF(_moffat(3.0)), config=cfg), (x, y, flux)


@pytest.mark.parametrize("shape", [(200, 600), (600, 200)])
def test_non_square_tiles_and_astrometric_term_per_axis(shape):
    """Tiles of different sides in y and x (an image narrower than a tile in one axis): the
    flux is conserved, the flux image at the source is its flux, and the astrometric
    variance of each axis is sigma^2 times the squared gradient of the flux image along that
    axis (S = S_N with an empty reference; flux = S F_n / F_S, so V_ast follows the flux
    image's gradient), not along the other one."""
    base, (x, y, flux) = _point_source_run(shape, (0.0, 0.0))
    assert base.diff.sum() == pytest.approx(flux, rel=1e-4)
    xr, yr = int(round(x)), int(round(y))
    assert base.flux[yr, xr] == pytest.approx(flux, rel=0.02)
    win = (slice(yr - 6, yr + 7), slice(xr - 6, xr + 7))
    for axis, astro in ((1, (0.3, 0.0)), (0, (0.0, 0.3))):
        res, _ = _point_source_run(shape, astro)
        v_ast = (res.flux_err[win].astype(float) ** 2 - base.flux_err[win].astype(float) ** 2)
        grad = np.gradient(base.flux.astype(float), axis=axis)[win]
        other = np.gradient(base.flux.astype(float), axis=1 - axis)[win]
        expect = 0.09 * grad**2
        strong = expect > 0.2 * expect.max()
        assert np.median(v_ast[strong] / expect[strong]) == pytest.approx(1.0, abs=0.1)
        # where only the other axis has a gradient, no astrometric variance
        quiet = (grad**2 < 0.01 * (grad**2).max()) & (other**2 > 0.2 * (other**2).max())
        assert quiet.any()
        assert np.all(v_ast[quiet] < 0.1 * expect.max())
