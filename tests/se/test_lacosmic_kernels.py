"""The sparse L.A.Cosmic's candidate kernels against plain numpy references.

:func:`desgw.se.detrend_lacosmic.prefilter` and ``candidates_near`` were rewritten for speed
(a vectorised first test, no reallocation inside numba loops), and its medians are selection
networks (:mod:`desgw.se.lacosmic_median`); the kernels must select exactly the
pixels the pixel-by-pixel definition selects, in row-major order, on an image with stars,
cosmic rays, masked pixels (whose neighbours take the centre value in L+) and image edges.
"""

import numpy as np
from numba import njit

from desgw.se import detrend_lacosmic as k
from desgw.se.lacosmic_median import med9, med25


def _lplus_numpy(img, bad):
    """L+ of every pixel with edge clamping; masked neighbours take the centre's value."""
    c = img.astype(np.float64)
    p = np.pad(c, 1, mode="edge")
    pb = np.pad(bad, 1, mode="edge")

    def nb(dy, dx):
        v = p[1 + dy:1 + dy + c.shape[0], 1 + dx:1 + dx + c.shape[1]]
        b = pb[1 + dy:1 + dy + c.shape[0], 1 + dx:1 + dx + c.shape[1]]
        return np.where(b, c, v)

    u, d, left, r = nb(-1, 0), nb(1, 0), nb(0, -1), nb(0, 1)
    tot = np.zeros_like(c)
    for v in (2 * c - u - left, 2 * c - u - r, 2 * c - d - left, 2 * c - d - r):
        tot += np.maximum(v, 0.0)
    return 0.25 * tot


def _passes_numpy(img, bad, sky, gain, rn, thresh):
    sk = np.maximum(np.broadcast_to(sky, img.shape).astype(np.float64), 1e-4)
    return ~bad & (_lplus_numpy(img, bad) > 2.0 * thresh * np.sqrt(gain * sk + rn * rn) / gain)


def _scene(seed=3, shape=(301, 257)):
    rng = np.random.default_rng(seed)
    sky = 900.0 + 40.0 * np.linspace(0, 1, shape[1])[None, :] * np.ones(shape)
    img = rng.normal(sky, np.sqrt(sky + 36.0)).astype(np.float32)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    for _ in range(25):  # stars of FWHM ~3.5 px
        x0, y0, amp = rng.uniform(0, shape[1]), rng.uniform(0, shape[0]), rng.uniform(200, 5e4)
        img += (amp * np.exp(-0.5 * ((xx - x0) ** 2 + (yy - y0) ** 2) / 1.5 ** 2)).astype(
            np.float32)
    ys = rng.integers(0, shape[0], 400)
    xs = rng.integers(0, shape[1], 400)
    img[ys, xs] += rng.uniform(100, 5000, 400).astype(np.float32)  # cosmic-ray hits
    img[0, :40] += 3000.0  # hits on the image edges
    img[:30, -1] += 2000.0
    bad = np.zeros(shape, bool)
    bad[:, 100] = True  # a bad column: its neighbours see the centre value
    bad[rng.integers(0, shape[0], 300), rng.integers(0, shape[1], 300)] = True
    bad[-3:, :] = True
    img[bad] = np.float32(0.0)
    return img, bad, sky.astype(np.float32)


def test_prefilter_equals_pixel_by_pixel_definition():
    img, bad, sky = _scene()
    for thresh in (3.6, 1.5):
        ys, xs = k.prefilter(img, bad, sky, 1.0, 6.0, thresh, float(sky.min()))
        want = np.nonzero(_passes_numpy(img, bad, sky, 1.0, 6.0, thresh))
        assert ys.size > 300  # the hits and star cores are there
        np.testing.assert_array_equal(ys, want[0])
        np.testing.assert_array_equal(xs, want[1])
    # a scalar sky (1 x 1), as find_cosmic_rays passes for a sky-subtracted image
    flat = np.full((1, 1), 950.0)
    ys, xs = k.prefilter(img, bad, flat, 2.0, 6.0, 3.6, 950.0)
    want = np.nonzero(_passes_numpy(img, bad, flat, 2.0, 6.0, 3.6))
    np.testing.assert_array_equal(ys, want[0])
    np.testing.assert_array_equal(xs, want[1])


def test_candidates_near_equals_boxes_around_pixels():
    img, bad, sky = _scene(seed=4)
    passing = _passes_numpy(img, bad, sky, 1.0, 6.0, 3.6)
    rng = np.random.default_rng(1)
    cy = np.concatenate([rng.integers(0, img.shape[0], 60), [0, img.shape[0] - 1]]).astype(np.int32)
    cx = np.concatenate([rng.integers(0, img.shape[1], 60), [0, img.shape[1] - 1]]).astype(np.int32)
    seen = np.zeros(img.shape, np.int32)
    ys, xs = k.candidates_near(img, bad, sky, 1.0, 6.0, 3.6, cy, cx, 5, seen, 1)
    box = np.zeros(img.shape, bool)
    for y, x in zip(cy, cx):
        box[max(y - 5, 0):y + 6, max(x - 5, 0):x + 6] = True
    got = np.zeros(img.shape, bool)
    got[ys, xs] = True
    assert ys.size == got.sum()  # each pixel once
    np.testing.assert_array_equal(got, box & passing)
    assert got.sum() > 20


@njit
def _zero_one_failures(n):
    """Inputs of zeros and ones with ``n // 2`` or ``n // 2 + 1`` ones (each combination,
    Gosper's next-combination step) whose network median is not the true median (0 and 1)."""
    buf = np.empty(n)
    bad = 0
    for ones in (n // 2, n // 2 + 1):
        code = (1 << ones) - 1
        while code < (1 << n):
            for i in range(n):
                buf[i] = (code >> i) & 1
            m = med25(buf) if n == 25 else med9(buf)
            if m != (1.0 if ones > n // 2 else 0.0):
                bad += 1
            low = code & -code
            ripple = code + low
            code = (((ripple ^ code) >> 2) // low) | ripple
    return bad


def test_median_networks_are_exact():
    """By the 0-1 principle, a comparator network that selects the median of every 0-1 input
    selects it for every input. Its output is a monotone function of a 0-1 input (min and max
    are), so it is enough that every input with ``n // 2 + 1`` ones gives 1 (and all with more,
    by monotonicity) and every input with ``n // 2`` ones gives 0 (and all with fewer). Then
    random floats (with ties) against numpy."""
    assert _zero_one_failures(9) == 0
    assert _zero_one_failures(25) == 0
    rng = np.random.default_rng(5)
    for n, f in ((9, med9), (25, med25)):
        for t in range(2000):
            v = (rng.normal(size=n) if t % 2 else rng.integers(0, 4, n).astype(float))
            buf = v.copy()
            assert f(buf) == np.median(v)
            np.testing.assert_array_equal(buf, v)  # the input is not reordered
