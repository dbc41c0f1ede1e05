"""prepare_detection: the arrays sep reads, against their numpy definition, bit for bit."""

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
    err = np.where(usable, e, np.float32(1e30)).astype(np.float32)
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
