"""Peak detection on S_corr: sign, separation, masks, sub-pixel fit."""

from __future__ import annotations

import numpy as np
import pytest

from desgw.diff.detect import (
    DETECT_COLUMNS,
    DiffDetectConfig,
    detect_transients,
    quadratic_peak,
)
from desgw.diff.subtract import SubtractConfig, Subtraction, subtract
from desgw.diff.zogy_psf import TiledPSF
from desgw.diff.zogy_synth import MoffatPSFField, add_sources
from desgw.se import maskbits

SHAPE = (512, 512)


def _fake_subtraction(score: np.ndarray, mask: np.ndarray | None = None) -> Subtraction:
    st = MoffatPSFField(3.0, image_shape=score.shape).render(0, 0)[None, None]
    z = np.zeros(score.shape, np.float32)
    # unit, uniform noise: the matched filter S / F_S is proportional to S_corr
    return Subtraction(diff=z, diff_var=z + 1, score=score.astype(np.float32),
                       flux_image=score.astype(np.float32),
                       flux_err_image=z + 1,
                       mask=np.zeros(score.shape, np.int32) if mask is None else mask,
                       psf_diff=TiledPSF(stamps=st, tile=4096, image_shape=score.shape))


def _gauss(shape, x0, y0, amp, sigma=2.0):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return amp * np.exp(-0.5 * ((xx - x0) ** 2 + (yy - y0) ** 2) / sigma**2)


def test_quadratic_peak_exact_for_gaussian():
    for dx, dy in ((0.3, -0.2), (-0.45, 0.4), (0.0, 0.0)):
        g = _gauss((3, 3), 1 + dx, 1 + dy, 7.0, sigma=1.7)
        fx, fy, v = quadratic_peak(g)
        assert fx == pytest.approx(dx, abs=1e-9) and fy == pytest.approx(dy, abs=1e-9)
        assert v == pytest.approx(7.0, rel=1e-9)


def test_positive_negative_separation_and_mask():
    score = np.zeros(SHAPE)
    score += _gauss(SHAPE, 100.3, 120.6, 20.0)
    score += _gauss(SHAPE, 300.0, 300.0, -9.0)  # a fading source
    score += (_gauss(SHAPE, 200.0, 400.0, 9.0, sigma=1.0)
              + _gauss(SHAPE, 203.0, 400.0, 8.0, sigma=1.0))  # a close pair
    score += _gauss(SHAPE, 400.0, 100.0, 30.0)  # masked
    score += _gauss(SHAPE, 50.0, 450.0, 4.0)  # below threshold
    mask = np.zeros(SHAPE, np.int32)
    mask[95:105, 395:405] = maskbits.SAT
    t = detect_transients(_fake_subtraction(score, mask), threshold_sigma=5.0)
    assert tuple(t.colnames) == DETECT_COLUMNS
    assert len(t) == 3
    assert list(t["negative"]) == [False, False, True]  # sorted by |score_peak|
    first = t[0]
    assert first["x"] == pytest.approx(100.3, abs=0.01)
    assert first["y"] == pytest.approx(120.6, abs=0.01)
    assert first["score_peak"] == pytest.approx(20.0, rel=0.01)
    assert (first["x_peak"], first["y_peak"]) == (100, 121)
    assert first["area"] == np.count_nonzero(_gauss(SHAPE, 100.3, 120.6, 20.0) >= 5.0)
    assert t[2]["score"] < 0 and t[2]["score_peak"] == pytest.approx(-9.0, rel=0.01)
    # with a smaller separation the blend splits into two peaks
    t2 = detect_transients(_fake_subtraction(score, mask), threshold_sigma=5.0,
                           config=DiffDetectConfig(min_separation=1))
    assert len(t2) == 4
    t3 = detect_transients(_fake_subtraction(score, mask), threshold_sigma=5.0,
                           config=DiffDetectConfig(negative=False))
    assert not np.any(t3["negative"]) and len(t3) == 2


def test_min_area_and_empty():
    score = np.zeros(SHAPE)
    score[200, 200] = 8.0  # a single hot pixel
    t = detect_transients(_fake_subtraction(score), threshold_sigma=5.0)
    assert len(t) == 0 and tuple(t.colnames) == DETECT_COLUMNS
    t = detect_transients(_fake_subtraction(score), threshold_sigma=5.0,
                          config=DiffDetectConfig(min_area=1))
    assert len(t) == 1
    with pytest.raises(ValueError):
        detect_transients(_fake_subtraction(score), threshold_sigma=0)


def test_source_only_in_template_is_negative():
    """A source that faded (present in the template only) is a negative detection with the
    template flux as its (negative) flux."""
    rng = np.random.default_rng(4)
    ps, pt = MoffatPSFField(4.0, image_shape=SHAPE), MoffatPSFField(3.0, image_shape=SHAPE)
    search = rng.normal(0, 20, SHAPE).astype(np.float32)
    template = rng.normal(0, 10, SHAPE).astype(np.float32)
    add_sources(template, pt, [250.4], [260.2], [8000.0])
    sv, tv = np.full(SHAPE, 400, np.float32), np.full(SHAPE, 100, np.float32)
    m = np.zeros(SHAPE, np.int32)
    sub = subtract(search, sv, m, ps, template, tv, m, pt, zp_search=30, zp_template=30,
                   config=SubtractConfig(tile=256, border=48))
    t = detect_transients(sub)
    assert len(t) == 1 and t[0]["negative"]
    assert t[0]["x"] == pytest.approx(250.4, abs=0.15)
    assert t[0]["y"] == pytest.approx(260.2, abs=0.15)
    y, x = t[0]["y_peak"], t[0]["x_peak"]
    assert sub.flux_image[y, x] == pytest.approx(-8000, abs=4 * float(sub.flux_err_image[y, x]))


def test_region_areas_equal_connected_component_sizes():
    """The flood-filled area around each peak is the size of its 8-connected component
    above threshold (as labelling the whole image gives), for both signs, merged regions of
    several peaks and regions touching the border."""
    from scipy import ndimage

    from desgw.diff.detect import _region_areas

    rng = np.random.default_rng(4)
    score = ndimage.gaussian_filter(rng.normal(size=(300, 400)), 2.0) * 8.0
    score[:30, :60] = 7.0  # a large region on the border
    score = score.astype(np.float32)
    for sign in (1.0, -1.0):
        above = sign * score >= 3.0
        labels, n = ndimage.label(above, structure=np.ones((3, 3), bool))
        assert n > 20
        py, px = np.nonzero(above)
        pick = rng.choice(py.size, 200, replace=False)
        py, px = py[pick].astype(np.int64), px[pick].astype(np.int64)
        want = np.bincount(labels.ravel())[labels[py, px]]
        got = _region_areas(score, np.float32(3.0), np.float32(sign), py, px)
        assert np.array_equal(got, want)
        if sign > 0:  # the border region: the fill's stacks grew past their first size
            assert want.max() > 1024
