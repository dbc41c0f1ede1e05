"""The fakes step reads windows instead of full-image passes: same answers as the full maps."""

from __future__ import annotations

import numpy as np

from desgw.diff.fakes import _Placer
from desgw.diff.resample_kernels import box_any
from desgw.diff.subtract import _WHOLE, _changed_near
from desgw.se.maskbits import BADPIX, CRAY, EDGE, UNUSABLE


def test_changed_near_is_box_any_of_the_changed_pixels() -> None:
    rng = np.random.default_rng(5)
    for shape in ((64, 97), (1, 30), (40, 1)):
        old = rng.normal(size=shape).astype(np.float32)
        old[rng.random(shape) < 0.05] = np.nan
        new = old.copy()
        hit = rng.random(shape) < 0.02
        hit[0, -1] = hit[-1, 0] = True  # corners: the window is clipped
        new[hit & np.isfinite(old)] += 1.0
        changed = (hit & np.isfinite(old)).astype(np.uint8)
        near, n, finite_changed = _changed_near(old, new, _WHOLE)
        assert near.dtype == np.uint8 and np.array_equal(near, box_any(changed, 1, 1))
        assert n == changed.sum() and not finite_changed
        assert 0 < near.sum() < near.size or shape != (64, 97)
        new[np.isnan(old)] = 0.0  # pixels gaining data
        assert _changed_near(old, new, _WHOLE)[2] == bool(np.isnan(old).any())


def test_changed_near_in_windows_is_the_whole_image_comparison() -> None:
    rng = np.random.default_rng(8)
    shape = (70, 90)
    old = rng.normal(size=shape).astype(np.float32)
    new = old.copy()
    # overlapping windows, one on a corner and one beyond the border (clipped)
    windows = np.array([[10, 25, 5, 20], [20, 30, 15, 40], [0, 4, 80, 95], [60, 75, 0, 3]])
    for y0, y1, x0, x1 in windows:
        hit = rng.random((min(y1, 70) - y0, min(x1, 90) - x0)) < 0.3
        new[y0:y1, x0:x1][hit] += 2.0
    want = _changed_near(old, new, _WHOLE)
    got = _changed_near(old, new, windows.astype(np.int64))
    assert np.array_equal(got[0], want[0]) and got[0].any()
    assert got[1] >= want[1] > 0 and got[2] == want[2]  # overlaps counted in each window
    new[65, 1] = np.nan  # no data in a window
    assert _changed_near(old, new, windows.astype(np.int64))[2]


def test_placer_mask_rule_matches_the_full_unusable_map() -> None:
    rng = np.random.default_rng(9)
    shape = (300, 200)
    mask = np.zeros(shape, np.int32)
    mask[rng.random(shape) < 0.01] = BADPIX
    mask[rng.random(shape) < 0.01] = CRAY | 1 << 20  # a usable high bit beside an unusable one
    mask[rng.random(shape) < 0.02] = 1 << 20          # usable only: never rejects
    mask[:, 150:] |= EDGE
    bits = UNUSABLE | EDGE
    radius = 3.0
    bad = (mask & bits) != 0
    yy, xx = np.mgrid[-3:4, -3:4]
    disk = xx ** 2 + yy ** 2 <= radius ** 2
    n_ok = 0
    for x, y in zip(rng.uniform(0, 199, 3000), rng.uniform(0, 299, 3000)):
        placer = _Placer(shape, mask, bits, edge_px=5.0, mask_radius_px=radius,
                         min_separation_px=0.0)
        ix, iy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
        inside = 5.0 <= x <= 194.0 and 5.0 <= y <= 294.0
        expect = inside and not np.any(bad[iy - 3:iy + 4, ix - 3:ix + 4] & disk)
        got = placer.ok(float(x), float(y))
        assert got == expect, (x, y)
        n_ok += got
    assert 300 < n_ok < 2500  # both answers were exercised
