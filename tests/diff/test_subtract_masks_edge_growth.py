"""The coverage edges' growth of the difference mask, its row pass made in the mask scan
(:func:`desgw.diff.subtract._scan_mask`) and its column pass ORed into the mask
(:func:`desgw.diff.subtract._or_columns`), against the box dilation of a whole-image map of
the edge pixels (:func:`desgw.diff.resample_kernels.box_any`): random masks with bands and
blocks of EDGE alone (no coverage), EDGE with a bit saying why (not grown here) and other
bits, radii from 1 to beyond the image, edges touching the borders, and no edge at all."""

from __future__ import annotations

import numpy as np
import pytest

from desgw.diff.resample_kernels import box_any
from desgw.diff.subtract import _or_columns, _scan_mask
from desgw.se import maskbits

BITS = maskbits.UNUSABLE & ~maskbits.EDGE
EDGE = maskbits.EDGE


def _mask(rng: np.random.Generator, shape: tuple[int, int], n_blocks: int) -> np.ndarray:
    ny, nx = shape
    m = np.zeros(shape, np.int32)
    m[rng.random(shape) < 0.02] = maskbits.BADPIX
    m[rng.random(shape) < 0.01] = maskbits.CRAY | EDGE  # no data, a bit saying why
    m[rng.random(shape) < 0.01] |= maskbits.NEAREDGE  # neither grown nor "masked"
    for _ in range(n_blocks):
        y0, x0 = int(rng.integers(0, ny)), int(rng.integers(0, nx))
        h, w = int(rng.integers(1, ny // 2)), int(rng.integers(1, nx // 3))
        m[y0:y0 + h, x0:x0 + w] |= EDGE
    m[rng.random(shape) < 0.005] = EDGE  # isolated uncovered pixels
    return m


def _reference(combined: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    edge = (((combined & EDGE) != 0) & ((combined & BITS) == 0)).astype(np.uint8)
    out = combined.copy()
    if radius > 0 and edge.any():
        out[box_any(edge, radius, radius) != 0] |= EDGE
    return out, np.flatnonzero(combined & BITS)


@pytest.mark.parametrize("radius", [1, 2, 5, 13, 200])
@pytest.mark.parametrize("seed", [0, 1])
def test_edge_growth_equals_the_box_dilation_of_the_edge_map(radius: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    combined = _mask(rng, (97, 61), n_blocks=4)
    combined[:, :3] = EDGE  # a band on the border
    want, want_idx = _reference(combined, radius)
    out, rows, any_edge, idx = _scan_mask(combined, np.int32(BITS), np.int32(EDGE), radius)
    assert any_edge
    _or_columns(out, rows, radius, np.int32(EDGE))
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(idx, want_idx)
    assert np.count_nonzero(out & EDGE) > np.count_nonzero(combined & EDGE)  # it did grow


def test_no_edge_leaves_the_mask_as_it_is() -> None:
    rng = np.random.default_rng(5)
    combined = _mask(rng, (40, 50), n_blocks=0)
    combined[combined == EDGE] = 0
    out, rows, any_edge, idx = _scan_mask(combined, np.int32(BITS), np.int32(EDGE), 4)
    assert not any_edge and not rows.any()
    np.testing.assert_array_equal(out, combined)
    assert out is not combined
    np.testing.assert_array_equal(idx, np.flatnonzero(combined & BITS))
