"""The coadd PSF's weight maps (each template's mean share c / sum(c) of the coadd per cell of
psf_cell pixels, partial cells at the edges averaged over their own area) against a numpy
reference, on the one-template, fused and accumulator paths, with cells that do not divide
the image."""

from __future__ import annotations

import numpy as np
import pytest

from desgw.diff.coadd import OutlierRejection, coadd_templates
from desgw.diff.resample import Resampled
from desgw.se.maskbits import CRAY

SHAPE = (150, 100)
CELL = 16


def _template(rng: np.random.Generator, box: tuple[int, int, int, int]) -> Resampled:
    y0, y1, x0, x1 = box
    cov = np.zeros(SHAPE, bool)
    cov[y0:y1, x0:x1] = True
    w = np.where(cov, rng.uniform(0.5, 2.0, SHAPE), 0.0).astype(np.float32)
    w[rng.random(SHAPE) < 0.05] = 0.0
    mask = np.zeros(SHAPE, np.int32)
    mask[rng.random(SHAPE) < 0.03] = CRAY
    img = rng.normal(0.0, 1.0, SHAPE).astype(np.float32)
    return Resampled(image=img, mask=mask, weight=w, coverage=cov,
                     mapping=None,  # type: ignore[arg-type]  # the coadd never reads it
                     noise_correlation_factor=1.0, kernel="lanczos3")


def _reference(ts: list[Resampled], scales: list[float]) -> np.ndarray:
    c = np.stack([np.where(t.coverage & (t.weight > 0) & ((t.mask & CRAY) == 0),
                           t.weight.astype(np.float64) / f**2, 0.0)
                  for t, f in zip(ts, scales)])
    den = c.sum(axis=0)
    share = np.where(den > 0, c / np.where(den > 0, den, 1.0), 0.0)
    ny, nx = SHAPE
    out = np.zeros((len(ts), -(-ny // CELL), -(-nx // CELL)))
    for j in range(out.shape[1]):
        for i in range(out.shape[2]):
            out[:, j, i] = share[:, j * CELL:(j + 1) * CELL, i * CELL:(i + 1) * CELL] \
                .mean(axis=(1, 2))
    return out


@pytest.mark.parametrize("n,reject", [(1, True), (2, True), (3, False), (3, True)])
def test_weight_maps_equal_numpy(n, reject):
    rng = np.random.default_rng(n)
    boxes = [(0, 150, 0, 70), (20, 150, 30, 100), (0, 120, 10, 90)][:n]
    ts = [_template(rng, b) for b in boxes]
    zps = [30.0, 30.3, 29.8][:n]
    co = coadd_templates(ts, zps, 30.0, [object()] * n, psf_cell=CELL,
                         reject=OutlierRejection(enabled=reject))
    scales = [10 ** (0.4 * (30.0 - z)) for z in zps]
    assert co.psf is not None
    np.testing.assert_allclose(co.psf.weight_maps, _reference(ts, scales), rtol=1e-12,
                               atol=1e-15)
