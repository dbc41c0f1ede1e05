"""detrend_ccd on synthetic raw CCDs with known sky, flat, bias, overscan drift and noise."""

import pickle

import numpy as np
import pytest
from astropy.io import fits

from desgw.instrument import CCD_SHAPE, RAW_SHAPE, get_ccd
from desgw.io.raw import raw_ccd_from_hdu
from desgw.se import maskbits
from desgw.se.detrend import DetrendConfig, DetrendError, detrend_ccd, smooth_sky

CCDNUM = 35  # N4
SKY_E = 1200.0


def _overscan_level(name, ny):
    rows = np.arange(ny)
    base = 1400.0 if name == "A" else 1900.0
    return base + 6.0 * np.exp(-rows / 400.0) + 2.0 * np.sin(2 * np.pi * rows / 3000.0)


def make_raw(seed=1, star=None):
    """Integer raw ADU array, and the truth (flat-fielded electrons, flat, bias)."""
    rng = np.random.default_rng(seed)
    ccd = get_ccd(CCDNUM)
    ny, nx = CCD_SHAPE
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    flat = (1.0 + 0.05 * np.sin(xx / 700.0) * np.cos(yy / 900.0)
            + rng.normal(0, 0.01, CCD_SHAPE)).astype(np.float32)
    bias = (3.0 * np.sin(xx / 15.0) + rng.normal(0, 0.5, CCD_SHAPE)).astype(np.float32)  # e-
    truth = np.full(CCD_SHAPE, SKY_E, np.float32) + 200.0 * yy / ny  # sky gradient, e-
    if star is not None:
        x0, y0, peak = star
        truth += peak * np.exp(-0.5 * ((xx - x0) ** 2 + (yy - y0) ** 2) / 2.0**2)
    raw = np.zeros(RAW_SHAPE, np.float64)
    for name, amp in ccd.amps.items():
        t = amp.trimmed.slices
        rn_adu = amp.read_noise_e / amp.gain
        level = _overscan_level(name, amp.raw_data.shape[0])[:, None]
        electrons = rng.poisson(np.maximum(truth[t] * flat[t], 0)) + bias[t]
        electrons = electrons + rng.normal(0, amp.read_noise_e, electrons.shape)
        raw[amp.raw_data.slices] = level + electrons / amp.gain
        osh = amp.raw_overscan.shape
        raw[amp.raw_overscan.slices] = level + rng.normal(0, rn_adu, osh)
        raw[amp.raw_overscan.slices][:, 20] += 50.0  # a hot overscan column
    raw = np.clip(np.rint(raw), 0, 65535).astype(np.uint16)
    return raw, truth, flat, bias


@pytest.fixture(scope="module")
def synth():
    raw, truth, flat, bias = make_raw(star=(500, 2000, 3.0e5))
    bpm = np.zeros(CCD_SHAPE, np.int16)
    bpm[100:140, 700] = 4  # a bad column segment
    bpm[3000, 1500] = 1
    res = detrend_ccd(raw, ccdnum=CCDNUM, bias=bias, flat=flat, bpm=bpm)
    return raw, truth, flat, bias, bpm, res


def test_electrons_and_noise_model(synth):
    _raw, truth, flat, _bias, _bpm, res = synth
    assert res.image.shape == CCD_SHAPE and res.image.dtype == np.float32
    assert res.mask.dtype == np.int32 and res.weight.dtype == np.float32
    good = (res.mask == 0)
    good[1900:2100, 400:600] = False  # the star
    d = (res.image - truth)[good]
    assert abs(float(np.mean(d))) < 0.3  # e-, out of 1200: gain, overscan, bias, flat all right
    pull = d * np.sqrt(res.weight[good])
    assert 0.97 < float(np.std(pull)) < 1.03
    # per-row residual: the 6 ADU (~24 e-) overscan drift is removed row by row
    # (averaged over 64 rows to beat the per-row photon noise of ~0.8 e-)
    with np.errstate(invalid="ignore"):
        rowres = np.mean(np.where(good, res.image - truth, 0), axis=1) / np.mean(good, axis=1)
    smooth = np.convolve(rowres[20:-20], np.ones(64) / 64, mode="valid")
    assert float(np.sqrt(np.mean(smooth**2))) < 0.3
    # weight follows (S F + rn^2)/F^2 with S the smooth sky
    amp = get_ccd(CCDNUM).amps["A"]
    y, x = 1000, 300
    expect = (truth[y, x] * flat[y, x] + amp.read_noise_e**2) / flat[y, x] ** 2
    assert abs(1.0 / res.weight[y, x] / expect - 1) < 0.02


def test_per_amp_values(synth):
    _raw, _truth, _flat, _bias, _bpm, res = synth
    ccd = get_ccd(CCDNUM)
    for name in ("A", "B"):
        a = res.amp(name)
        lvl = np.median(_overscan_level(name, 4096))
        assert abs(a.overscan_adu - lvl) < 0.2
        assert a.gain == ccd.amps[name].gain
        assert abs(a.measured_read_noise_e / ccd.amps[name].read_noise_e - 1) < 0.1
        assert a.saturation_e == pytest.approx(ccd.amps[name].saturation_adu * a.gain)
        assert 1150 < a.sky_e < 1450


def test_masks_and_zero_weight(synth):
    _raw, _truth, _flat, _bias, bpm, res = synth
    assert np.all(res.mask[100:140, 700] & maskbits.BADPIX)
    assert res.mask[3000, 1500] & maskbits.BADPIX
    assert np.all(res.weight[bpm != 0] == 0)
    e = DetrendConfig().edge_px
    assert np.all(res.mask[:e] & maskbits.EDGE) and np.all(res.mask[:, -e:] & maskbits.EDGE)
    assert not np.any(res.mask[e:-e, e:-e] & maskbits.EDGE)
    # the saturated star core (3e5 e- peak, ~1.2e5 ADU) is SAT, and only near the star
    sat = (res.mask & maskbits.SAT) != 0
    ys, xs = np.nonzero(sat)
    assert sat.sum() > 8 and np.all(np.hypot(xs - 500, ys - 2000) < 8)
    assert np.all(res.weight[sat] == 0)
    assert res.amp("A").n_saturated == sat.sum()


def test_rawccd_header_path_matches_bare_array(synth):
    raw, _truth, flat, bias, bpm, res = synth
    ccd = get_ccd(CCDNUM)
    h = fits.Header()
    h["CCDNUM"], h["DETPOS"] = CCDNUM, ccd.detpos
    for name, amp in ccd.amps.items():
        h[f"DATASEC{name}"] = amp.raw_data.fits_section()
        h[f"BIASSEC{name}"] = amp.raw_overscan.fits_section()
        h[f"GAIN{name}"], h[f"RDNOISE{name}"] = amp.gain, amp.read_noise_e
        h[f"SATURAT{name}"] = amp.saturation_adu
    h["DATASEC"] = ccd.raw_datasec.fits_section()
    rc = raw_ccd_from_hdu(h, raw)
    res2 = detrend_ccd(rc, bias=bias, flat=flat, bpm=bpm)
    np.testing.assert_array_equal(res2.image, res.image)
    np.testing.assert_array_equal(res2.mask, res.mask)


def test_extra_mask_bits_and_bad_flat():
    raw, _truth, flat, _bias = make_raw(seed=3)
    extra = np.zeros(CCD_SHAPE, np.int32)
    extra[50:60, 50:60] = maskbits.SSXTALK
    flat = flat.copy()
    flat[2000, 1000] = 0.0
    res = detrend_ccd(raw, ccdnum=CCDNUM, flat=flat, mask=extra)
    assert np.all(res.mask[50:60, 50:60] & maskbits.SSXTALK)
    assert res.mask[2000, 1000] & maskbits.BADPIX and res.weight[2000, 1000] == 0
    assert np.all(np.isfinite(res.image))


def test_smooth_sky_recovers_gradient():
    yy, xx = np.mgrid[0:1024, 0:512].astype(np.float32)
    sky = 100 + 0.05 * xx + 0.02 * yy
    rng = np.random.default_rng(0)
    img = sky + rng.normal(0, 3, sky.shape).astype(np.float32)
    img[500:520, 200:220] += 5000  # a bright object
    est = smooth_sky(img, mesh=128, subsample=2)
    inner = (slice(64, -64), slice(64, -64))
    assert np.max(np.abs(est - sky)[inner]) < 1.0


def test_smooth_sky_integer_mask_with_bits_ignores_those_pixels():
    """An integer mask with ``bad_bits`` ignores exactly the pixels with those bits (the same
    sky as the boolean map, bit for bit) and not the others: a masked bleed column of 60000
    e- leaves the sky at its true level, and an unmasked one (another bit) pulls it up."""
    yy, xx = np.mgrid[0:1024, 0:512].astype(np.float32)
    sky = 200 + 0.04 * xx - 0.03 * yy
    img = sky + np.random.default_rng(1).normal(0, 4, sky.shape).astype(np.float32)
    mask = np.zeros(img.shape, np.int32)
    img[:, 100:140] = 60000.0
    mask[:, 100:140] = maskbits.SAT | maskbits.BADPIX
    img[:, 400:480] = 60000.0
    mask[:, 400:480] = maskbits.SSXTALK  # not among the ignored bits
    bits = maskbits.SAT
    est = smooth_sky(img, mask, mesh=128, subsample=4, bad_bits=bits)
    np.testing.assert_array_equal(est, smooth_sky(img, (mask & bits) != 0, mesh=128,
                                                  subsample=4))
    assert est.dtype == np.float32 and est.shape == img.shape
    inner = (slice(64, -64), slice(64, 300))
    assert np.max(np.abs(est - sky)[inner]) < 1.5
    assert np.min(est[64:-64, 420:460] - sky[64:-64, 420:460]) > 1000.0


@pytest.mark.parametrize("problem", ["zero_amp", "all_saturated", "nan", "bias_shape",
                                     "flat_nan"])
def test_bad_input_raises_clear_error(problem):
    raw = np.full(RAW_SHAPE, 1500.0, np.float32)
    raw += np.random.default_rng(0).normal(0, 2, RAW_SHAPE).astype(np.float32)
    a = get_ccd(CCDNUM).amps["A"]
    kw = {}
    if problem == "zero_amp":
        raw[a.raw_data.slices] = 0.0
        match = "amp A data pixels are all 0"
    elif problem == "all_saturated":
        raw[a.raw_data.slices] = 65535.0
        match = "amp A data pixels are all 65535"
    elif problem == "nan":
        raw[10, 100] = np.nan
        match = "non-finite raw pixels"
    elif problem == "bias_shape":
        kw["bias"] = np.zeros((4096, 1024), np.float32)
        match = "bias has shape"
    else:
        f = np.ones(CCD_SHAPE, np.float32)
        f[5, 5] = np.nan
        kw["flat"] = f
        match = "flat has 1 non-finite"
    with pytest.raises(DetrendError, match=match) as info:
        detrend_ccd(raw, ccdnum=CCDNUM, **kw)
    assert info.value.ccdnum == CCDNUM and f"CCD {CCDNUM}" in str(info.value)
    again = pickle.loads(pickle.dumps(info.value))
    assert str(again) == str(info.value) and again.ccdnum == CCDNUM


def test_entirely_saturated_but_varying_amp():
    raw = np.full(RAW_SHAPE, 1500.0, np.float32)
    raw += np.random.default_rng(0).normal(0, 2, RAW_SHAPE).astype(np.float32)
    a = get_ccd(CCDNUM).amps["B"]
    raw[a.raw_data.slices] = 60000.0 + np.arange(a.raw_data.shape[1], dtype=np.float32)
    with pytest.raises(DetrendError, match="amp B is entirely saturated"):
        detrend_ccd(raw, ccdnum=CCDNUM)


@pytest.mark.parametrize("name, arr, match", [
    ("flat", np.zeros(CCD_SHAPE, np.float32), "flat has no positive pixel"),
    ("flat", np.full(CCD_SHAPE, np.nan, np.float32), "flat has"),
    ("bias", np.zeros((10, 10), np.float32), "bias has shape"),
])
def test_calibration_errors_name_the_calibration_file(name, arr, match):
    """Issue 10 case 7: a bad flat (or bias) is named by its file, not by the raw file's."""
    raw = np.full(RAW_SHAPE, 1500.0, np.float32)
    raw += np.random.default_rng(0).normal(0, 2, RAW_SHAPE).astype(np.float32)
    paths = {"bias": "/calib/bias.fits.fz", "flat": "/calib/flat_r.fits.fz"}
    with pytest.raises(DetrendError, match=match) as info:
        detrend_ccd(raw, ccdnum=CCDNUM, calib_paths=paths, **{name: arr})
    assert info.value.path == paths[name] and str(info.value).startswith(paths[name])
    assert f"CCD {CCDNUM}" in str(info.value)
