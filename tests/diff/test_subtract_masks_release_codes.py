"""The release's pixel codes, computed where it needs them only (:func:`desgw.diff.detect.
_code_at`), against the rule of :func:`desgw.diff.detect.release_grown_mask` written out
over whole planes: a pixel unusable in the search (a bad mask bit, no data: image or
variance not finite, variance <= 0) has bit 1, in the template bit 2, and bit 4 where its
light is unknown in both (unusable in both, an opaque bit, or no data without a bit saying
why). Random planes with every kind of defect; each pixel asked once or several times, in a
random order (the map keeps what it computed)."""

from __future__ import annotations

import numpy as np

from desgw.diff.detect import _UNKNOWN_CODE, OPAQUE_BITS, _code_at
from desgw.se import maskbits

BAD = maskbits.UNUSABLE & ~maskbits.EDGE


def _planes(rng: np.random.Generator, shape: tuple[int, int]):
    def image() -> np.ndarray:
        a = rng.normal(0.0, 10.0, shape).astype(np.float32)
        a[rng.random(shape) < 0.03] = np.nan
        a[rng.random(shape) < 0.01] = np.inf
        return a

    def var() -> np.ndarray:
        v = rng.uniform(50.0, 150.0, shape).astype(np.float32)
        v[rng.random(shape) < 0.03] = 0.0
        v[rng.random(shape) < 0.02] = -1.0
        v[rng.random(shape) < 0.02] = np.nan
        v[rng.random(shape) < 0.01] = np.inf
        return v

    def mask() -> np.ndarray:
        bits = np.array([0, maskbits.BADPIX, maskbits.CRAY, maskbits.SAT, maskbits.TRAIL,
                         maskbits.EDGEBLEED, maskbits.EDGE, maskbits.NEAREDGE,
                         maskbits.BADPIX | maskbits.EDGE], np.int32)
        p = np.array([0.8] + [0.025] * 8)
        return bits[rng.choice(bits.size, size=shape, p=p / p.sum())].astype(np.int32)

    return image(), var(), mask(), image(), var(), mask()


def _reference(s_img, s_var, s_msk, t_img, t_var, t_msk, bad_bits, opaque):
    with np.errstate(invalid="ignore"):
        sb = ((s_msk & bad_bits) != 0) | ~(np.isfinite(s_var) & (s_var > 0)) \
            | ~np.isfinite(s_img)
        tb = ((t_msk & bad_bits) != 0) | ~(np.isfinite(t_var) & (t_var > 0)) \
            | ~np.isfinite(t_img)
    c = s_msk | t_msk
    unknown = (sb & tb) | ((c & opaque) != 0) | ((c & bad_bits) == 0)
    code = sb * 1 + tb * 2 + ((sb | tb) & unknown) * 4
    return code.astype(np.uint8)


def test_codes_on_demand_equal_the_whole_plane_rule():
    rng = np.random.default_rng(12)
    shape = (61, 47)
    planes = _planes(rng, shape)
    ref = _reference(*planes, BAD, OPAQUE_BITS)
    # every code occurs, so that a wrong bit cannot hide
    assert set(np.unique(ref).tolist()) == {0, 1, 2, 5, 6, 7}  # 3: both unusable is 7
    code = np.full(shape, _UNKNOWN_CODE, np.uint8)
    flat = np.concatenate([rng.permutation(ref.size), rng.integers(0, ref.size, 500)])
    for i in flat:
        y, x = divmod(int(i), shape[1])
        got = _code_at(code, y, x, *planes, np.int32(BAD), np.int32(OPAQUE_BITS))
        assert got == ref[y, x], (y, x, got, ref[y, x])
    np.testing.assert_array_equal(code, ref)


def test_codes_not_asked_stay_unknown():
    rng = np.random.default_rng(3)
    shape = (20, 30)
    planes = _planes(rng, shape)
    code = np.full(shape, _UNKNOWN_CODE, np.uint8)
    _code_at(code, 4, 7, *planes, np.int32(BAD), np.int32(OPAQUE_BITS))
    assert np.count_nonzero(code != _UNKNOWN_CODE) == 1
