"""The release of grown masks decided from bounds equals the exact decision.

:func:`desgw.diff.detect._release` first bounds each candidate's two cut-light sums with the
unusable image's largest usable neighbour cached per pixel (its own light taken off as a
range) and remembers the pixels of unknown light it met; it sums exactly only where the bounds
straddle the threshold. On the scenes of the release tests (hosts cut by search defects, wide
template holes and coverage edges, a crowded field with bad columns and a saturated star;
galsim Kolmogorov and Moffat PSFs, template broader and narrower) and bound factors that move
the threshold both ways, the released pixels are the same, pixel for pixel, as when every
candidate is summed exactly (the algorithm before the bounds).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import test_subtract_masks_crowded as crowded
import test_subtract_masks_release as release
import test_subtract_masks_wide_holes as wide
from desgw.diff.detect import _release, _release_args
from desgw.diff.subtract import subtract
from desgw.se import maskbits

pytest.importorskip("galsim")

BITS = maskbits.UNUSABLE | maskbits.EDGE


def _released(sub, inputs, factor: float, use_bounds: bool) -> np.ndarray:
    s, s_var, s_msk, _, t, t_var, t_msk, _ = inputs
    mask = np.array(sub.mask, dtype=np.int32, copy=True)
    args = _release_args(sub, mask, s, s_var, s_msk, t, t_var, t_msk, 5.0, BITS, factor)
    kernel: Any = _release
    kernel(*args, use_bounds)
    return mask


@pytest.mark.parametrize("module,fs,ft,beta", [
    (wide, 4.4, 6.5, None), (wide, 5.0, 3.4, None), (wide, 4.6, 5.6, 3.5),
    (release, 4.4, 6.5, None), (release, 4.6, 3.6, 2.5),
    (crowded, 4.5, 5.4, None), (crowded, 4.8, 4.0, 3.0)],
    ids=["holes_kolm_broader", "holes_kolm_narrower", "holes_moffat3.5",
         "defects_kolm_broader", "defects_moffat2.5_narrower", "crowded_kolm_broader",
         "crowded_moffat3_narrower"])
def test_bounded_release_equals_the_exact_one(module, fs: float, ft: float,
                                              beta: float | None) -> None:
    inputs, *_rest = module._scene(fs, ft, beta, seed=int(10 * fs + ft))
    zp_t = _rest[-1]
    sub = subtract(*inputs, zp_search=30.0, zp_template=zp_t, config=module.CFG)
    grown = (sub.mask & BITS) != 0
    significant = grown & (np.abs(sub.score) >= 5.0)
    assert significant.sum() > 50  # the scenes give the release work to do
    n_released = []
    for factor in (0.5, 1.0, 2.0):
        fast = _released(sub, inputs, factor, use_bounds=True)
        exact = _released(sub, inputs, factor, use_bounds=False)
        np.testing.assert_array_equal(fast, exact)
        n_released.append(int(np.sum(fast != sub.mask)))
    # some candidates released, others kept, and fewer kept the looser the bound
    assert n_released[0] >= n_released[1] >= n_released[2]
    assert 0 < n_released[1] < significant.sum()
