"""grow_mask equals g 8-connected 3x3 binary dilations (scipy), edges included."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from desgw.se.mask_grow import grow_mask


@pytest.mark.parametrize("shape", [(64, 48), (1, 30), (37, 1), (200, 301)])
@pytest.mark.parametrize("frac", [0.0, 0.002, 0.05, 0.6])
@pytest.mark.parametrize("g", [0, 1, 2, 4, 9])
def test_grow_mask_is_iterated_dilation(shape, frac, g):
    rng = np.random.default_rng(hash((shape, frac, g)) % 2**32)
    src = rng.random(shape) < frac
    expect = src if g == 0 else ndimage.binary_dilation(src, structure=np.ones((3, 3), bool),
                                                        iterations=g)
    got = grow_mask(src, g)
    assert got.dtype == np.bool_ and got.shape == shape
    assert np.array_equal(got, expect)


def test_grow_mask_segmap_and_corners():
    seg = np.zeros((50, 40), np.int32)
    seg[0, 0] = 7
    seg[49, 39] = 3
    seg[25, 20] = 1
    got = grow_mask(seg, 2)
    assert got[:3, :3].all() and not got[3, 0] and not got[0, 3]
    assert got[47:, 37:].all() and not got[46, 39]
    assert got[23:28, 18:23].all() and got.sum() == 9 + 9 + 25
    assert seg.sum() == 11  # input untouched


def test_grow_mask_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        grow_mask(np.zeros(5, bool), 1)
    with pytest.raises(ValueError, match=">= 0"):
        grow_mask(np.zeros((5, 5), bool), -1)
    with pytest.raises(ValueError, match="bool or integer"):
        grow_mask(np.zeros((5, 5)), 1)


def test_flag_pixels_is_the_numpy_expression():
    from desgw.se.mask_grow import flag_pixels

    rng = np.random.default_rng(4)
    mask = rng.integers(0, 4, (60, 70)).astype(np.int32) * (rng.random((60, 70)) < 0.1)
    weight = rng.uniform(0.5, 1.0, (60, 70)).astype(np.float32)
    sel = rng.random((60, 70)) < 0.05
    m2, w2 = mask.copy(), weight.copy()
    m2[sel] |= 16
    w2[(m2 & 16) != 0] = 0.0
    assert flag_pixels(mask, weight, sel, 16) == sel.sum()
    assert np.array_equal(mask, m2) and np.array_equal(weight, w2)
    # no pixels: only zero the weight of the unusable bits (here 2)
    w2[(m2 & 2) != 0] = 0.0
    assert flag_pixels(mask, weight, None, 0, 2) == 0
    assert np.array_equal(mask, m2) and np.array_equal(weight, w2)
    with pytest.raises(ValueError, match="C-contiguous"):
        flag_pixels(mask[:, ::2], weight[:, ::2], None, 0, 2)
    with pytest.raises(ValueError, match="one shape"):
        flag_pixels(mask, weight, sel[:10], 16)
