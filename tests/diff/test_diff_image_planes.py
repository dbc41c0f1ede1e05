"""The planes of a difference image file (desgw.diff.pipeline_products.write_diff_image)."""

from __future__ import annotations

import types

import fitsio
import numpy as np
import pytest
from astropy.io import fits

from desgw.diff.pipeline_products import read_diff_image, write_diff_image


def _result(shape=(64, 48), seed=0):
    rng = np.random.default_rng(seed)
    var = rng.uniform(80.0, 120.0, shape).astype(np.float32)
    var[:3] = np.inf  # blanked rows: no data
    diff = (rng.normal(0.0, 1.0, shape) * np.sqrt(np.where(np.isfinite(var), var, 1.0)))
    diff[:3] = 0.0
    mask = np.zeros(shape, np.int32)
    mask[:3] = 1
    score = rng.normal(0.0, 1.0, shape).astype(np.float32)
    return types.SimpleNamespace(diff=diff.astype(np.float32), diff_var=var, mask=mask,
                                 score=score)


@pytest.mark.parametrize("with_score", [False, True])
def test_score_plane_only_when_asked(tmp_path, with_score):
    r = _result()
    path = write_diff_image(tmp_path / "d_diff.fits.fz", r, score=with_score)
    img = read_diff_image(path)
    names = {"SCI", "MSK", "WGT"} | ({"SCORE"} if with_score else set())
    assert set(img) == names
    with fits.open(path) as hdul:  # astropy and cfitsio both read every plane
        assert [h.name for h in hdul[1:]] == [n for n in ("SCI", "MSK", "WGT", "SCORE")
                                              if n in names]
    with fitsio.FITS(str(path)) as f:
        np.testing.assert_array_equal(f["MSK"].read(), r.mask)
        good = np.isfinite(r.diff_var)
        w = f["WGT"].read()
        assert np.all(w[~good] == 0)
        np.testing.assert_allclose(w[good], 1.0 / r.diff_var[good], rtol=6e-4)
        # SCI quantised to 1/16 of its noise: error within half a step
        step = np.sqrt(np.median(r.diff_var[good])) / 16
        assert np.abs(f["SCI"].read()[good] - r.diff[good]).max() <= 0.5 * step * 1.001
    if with_score:
        assert np.abs(img["SCORE"] - r.score).max() <= 1 / 32 * 1.001
