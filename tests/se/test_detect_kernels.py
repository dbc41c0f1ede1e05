"""prepare_detection: the arrays sep reads, against their numpy definition, bit for bit; sep
without a mask on them detects what it detects with the mask."""

from __future__ import annotations

import numpy as np
import pytest

from desgw.se.detect_kernels import NOISE_RMS, NOISE_VARIANCE, NOISE_WEIGHT, prepare_detection

_SPECIAL = np.array([0.0, -0.0, -1.0, np.inf, -np.inf, np.nan, 1e-45, 1e-40, 3e38, 1.0],
                    dtype=np.float32)


def _reference(image, noise, kind, mask, bits):
    """The numpy expressions detect_sources used before the fused kernel."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if kind == NOISE_RMS:
            e = noise.copy()
        elif kind == NOISE_VARIANCE:
            e = np.sqrt(noise)
        else:
            e = np.where(noise > 0, np.sqrt(np.float32(1.0) / noise), np.float32(np.inf))
    e = e.astype(np.float32)
    usable = np.isfinite(e) & (e > 0)
    bad = ~usable if mask is None else ~usable | ((mask & bits) != 0)
    data = np.where(bad, np.float32(0), image).astype(np.float32)
    # 1e30 on every excluded pixel, as sep sets a masked pixel's noise itself
    err = np.where(bad, np.float32(1e30), e).astype(np.float32)
    return data, err, bad


@pytest.mark.parametrize("kind", [NOISE_RMS, NOISE_VARIANCE, NOISE_WEIGHT])
@pytest.mark.parametrize("with_mask", [True, False])
def test_prepare_detection_matches_numpy_definition(kind, with_mask):
    rng = np.random.default_rng(7)
    ny, nx = 67, 131
    image = rng.normal(0.0, 10.0, (ny, nx)).astype(np.float32)
    noise = rng.uniform(0.001, 0.05, (ny, nx)).astype(np.float32)
    pick = rng.random((ny, nx)) < 0.2
    noise[pick] = _SPECIAL[rng.integers(0, _SPECIAL.size, int(pick.sum()))]
    mask = np.where(rng.random((ny, nx)) < 0.1, 4, 0).astype(np.int32)
    mask[rng.random((ny, nx)) < 0.1] |= 1
    bits = np.int64(5)
    m = mask if with_mask else np.zeros((1, 1), np.int32)
    data, err, bad, n_bad = prepare_detection(image, noise, kind, m, bits, with_mask)
    rd, re, rb = _reference(image, noise, kind, mask if with_mask else None, bits)
    assert np.array_equal(bad, rb)
    assert n_bad == int(rb.sum()) > 0
    assert np.array_equal(data.view(np.int32), rd.view(np.int32))
    assert np.array_equal(err.view(np.int32), re.view(np.int32))
    assert data.dtype == err.dtype == np.float32 and data.flags.c_contiguous


@pytest.mark.parametrize("filter_type", ["conv", "matched"])
def test_sep_without_mask_on_prepared_arrays_detects_the_same(filter_type):
    """sep sets a masked pixel's data to 0 and its noise to 1e30 itself: on the arrays of
    prepare_detection (the same there) it detects the same objects, every column and the
    segmentation map bit for bit, with or without the mask (detect_sources passes none)."""
    import sep

    from desgw.se.detect import gaussian_kernel
    from test_psf_synth import make_field

    f = make_field(shape=(512, 512), n_stars=120, n_gal=40, fwhm0=3.5, seed=11,
                   n_masked_stars=4)
    mask = f.mask.astype(np.int32).copy()
    mask[:, 200:203] |= 1  # a bad column across stars
    mask[300:310, 100:180] |= 1
    weight = np.where(mask != 0, 0.0, f.weight).astype(np.float32)
    weight[50:60, 400:420] = 0.0  # unusable noise without a mask bit
    image = (f.image - f.sky).astype(np.float32)
    data, err, bad, n_bad = prepare_detection(image, weight, NOISE_WEIGHT, mask, np.int64(1), True)
    assert n_bad > 3 * 512 + 800
    kw = dict(minarea=3, filter_kernel=gaussian_kernel(3.5), filter_type=filter_type,
              segmentation_map=True)
    thresh = 5.0 if filter_type == "matched" else 1.5
    oa, sa = sep.extract(data, thresh, err=err, mask=bad, **kw)
    ob, sb = sep.extract(data, thresh, err=err, **kw)
    assert len(oa) > 100
    assert np.array_equal(sa, sb)
    assert oa.dtype == ob.dtype and len(oa) == len(ob)
    for name in oa.dtype.names:
        assert np.array_equal(oa[name], ob[name], equal_nan=True), name


@pytest.mark.parametrize("size", [3, 7, 9, 15])
def test_separable_filter_is_the_2d_gaussian_filter(size):
    """The two 1-D passes equal the direct 2-D correlation with gaussian_kernel (what sep's
    filter computes: zero outside the image), to float32 precision, masked (zeroed) pixels
    and all four edges included (the image is barely larger than the kernel)."""
    from scipy.ndimage import correlate

    from desgw.se.detect import gaussian_kernel, gaussian_rows
    from desgw.se.detect_kernels import separable_filter

    rng = np.random.default_rng(size)
    ny, nx = 23, 41
    image = rng.normal(0.0, 10.0, (ny, nx)).astype(np.float32)
    image[5, 7] = 5e4  # a bright star next to masked pixels
    noise = np.full((ny, nx), 3.0, np.float32)
    mask = np.zeros((ny, nx), np.int32)
    mask[:, 0] = 1  # a bad first column, a bad row, a patch on the corner
    mask[11, :] = 1
    mask[ny - 3:, nx - 4:] = 1
    data, _, bad, _ = prepare_detection(image, noise, NOISE_RMS, mask, np.int64(1), True)
    assert bad.sum() > nx + ny and np.all(data[bad] == 0)  # the filter reads them as 0
    fwhm = 0.55 * size
    g = gaussian_rows(fwhm, size)
    assert g.dtype == np.float32 and g.shape == (size,)
    k2 = gaussian_kernel(fwhm, size).astype(np.float64)
    np.testing.assert_allclose(np.outer(g, g), k2, rtol=2e-7, atol=1e-9)
    out = separable_filter(data, g)
    assert out.dtype == np.float32 and out.shape == (ny, nx)
    ref = correlate(data.astype(np.float64), k2 / k2.sum(), mode="constant", cval=0.0)
    scale = correlate(np.abs(data.astype(np.float64)), k2 / k2.sum(), mode="constant")
    err = np.abs(out - ref)
    assert np.all(err <= 2e-6 * scale + 1e-30), float(np.max(err / scale))
    # the edges count zeros: a constant image is dimmer by the kernel's part outside
    ones = separable_filter(np.ones((ny, nx), np.float32), g)
    inside = correlate(np.ones((ny, nx)), k2 / k2.sum(), mode="constant")
    np.testing.assert_allclose(ones, inside, rtol=1e-6)
    assert ones[0, 0] < 0.75 and abs(ones[ny // 2, nx // 2] - 1.0) < 1e-6


def test_object_flux_peak_is_what_sep_measures():
    """Sum, maximum and its pixel over each segment are sep's flux, peak, xpeak, ypeak (sep
    filtering itself, no deblending: every column from the unfiltered pixels)."""
    import sep

    from desgw.se.detect import gaussian_kernel
    from desgw.se.detect_kernels import object_flux_peak
    from test_psf_synth import make_field

    f = make_field(shape=(512, 512), n_stars=120, n_gal=40, fwhm0=3.5, seed=11,
                   n_masked_stars=4)
    mask = f.mask.astype(np.int32)
    weight = np.where(mask != 0, 0.0, f.weight).astype(np.float32)
    data, err, _, _ = prepare_detection((f.image - f.sky).astype(np.float32), weight,
                                        NOISE_WEIGHT, mask, np.int64(1), True)
    objs, seg = sep.extract(data, 1.5, err=err, minarea=5, filter_kernel=gaussian_kernel(3.5),
                            filter_type="conv", deblend_nthresh=1, clean=False,
                            segmentation_map=True)
    assert len(objs) > 100
    flux, peak, xpeak, ypeak = object_flux_peak(data, np.ascontiguousarray(seg, np.int32),
                                                objs["xmin"], objs["xmax"], objs["ymin"],
                                                objs["ymax"])
    assert flux.dtype == np.float32
    assert np.array_equal(flux, objs["flux"].astype(np.float32))
    assert np.array_equal(peak, objs["peak"].astype(np.float32))
    assert np.array_equal(xpeak, objs["xpeak"]) and np.array_equal(ypeak, objs["ypeak"])
