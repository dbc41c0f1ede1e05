"""A transient's own light is no static light: the release frees it next to a defect.

:func:`desgw.diff.detect.release_grown_mask` bounds the residual that the in-painting can leave
at a grown pixel by the static light it cut there. The light of a transient next to the defect
is in one image only (new light, not static): it must not count, or the bound grows with the
transient's own flux and the brighter part of it stays masked (the audit lost a sparse
Kolmogorov fake whose own light kept a grown template defect over it; any real transient next
to a defect had the same problem). Here every defect (3-px columns, as a resampled bad column
gives them, in the template and in the search) is grown by the full radius
(``dilate_sources_only=False``), so the growth covers blank-sky transients 1-2.5 px from the
columns, S/N 5-20, with galsim Kolmogorov and Moffat PSFs, the template broader and narrower.
Every one with S/N >= 12 is released and detected (with the transient's light counted as
static light 5/8-10/12 were), and the stars of 2e4-4e5 e- on and next to a search and a
template column leave no detection (they do with the bound dropped, ``bound_factor=0``).
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import numpy as np
import pytest

from desgw.diff.detect import detect_transients, release_grown_mask
from desgw.diff.subtract import SubtractConfig, subtract
from desgw.se import maskbits
from test_subtract_masks_hosts import GalsimPSF, observe, hot_column_inputs
from test_subtract_masks_hosts import _draw as _draw_stamp
from test_subtract_masks_release import _found

galsim = pytest.importorskip("galsim")
_draw = partial(_draw_stamp, n=80)

SHAPE = (256, 448)
CFG = SubtractConfig(tile=256, border=48, dilate_sources_only=False)
SKY_S, SKY_T, READ = 400.0, 150.0, 6.0
T_RATIO = 0.7  # template e- per search e-


def _scene(fs: float, ft: float, beta: float | None, seed: int):
    """Five transients on either side of each of four 3-px columns (template, search,
    template, search); stars of 2e4-4e5 e- on and next to a template and a search column."""
    rng = np.random.default_rng(seed)
    ps, pt = GalsimPSF(fs, beta), GalsimPSF(ft, beta)
    s = np.zeros(SHAPE, np.float32)
    t = np.zeros(SHAPE, np.float32)
    s_msk = np.zeros(SHAPE, np.int32)
    t_msk = np.zeros(SHAPE, np.int32)
    tx, ty, tf = [], [], []
    for c, col in enumerate((50, 130, 210, 290)):
        (t_msk if c % 2 == 0 else s_msk)[:, col:col + 3] |= maskbits.BADPIX
        for j in range(5):
            off = rng.uniform(1.0, 2.5)  # from the column's edge (px)
            x = col + 2.5 + off if j % 2 else col - 0.5 - off
            y = 25.0 + 48.0 * j + rng.uniform(0, 1)
            f = rng.uniform(1.5e3, 5e3)
            _draw(s, ps, galsim.DeltaFunction(flux=f), x, y)
            tx.append(x)
            ty.append(y)
            tf.append(f)
    for lo, m in ((370, t_msk), (410, s_msk)):
        m[:, lo:lo + 3] |= maskbits.BADPIX
        for j, f in enumerate((3e4, 1e5, 4e5, 2e4)):
            x = lo + [1.2, 4.5, -2.3, 6.1][j] + rng.uniform(-0.5, 0.5)
            y = 30.0 + 60.0 * j + rng.uniform(0, 1)
            for img, psf, fr in ((s, ps, 1.0), (t, pt, T_RATIO)):
                _draw(img, psf, galsim.DeltaFunction(flux=f * fr), x, y)

    s, t = observe(rng, s, SKY_S, READ), observe(rng, t, SKY_T, READ)
    # hot columns: no data is kept there
    inputs = hot_column_inputs(s, t, s_msk, t_msk, ps, pt, SKY_S, SKY_T, READ)
    return inputs, np.asarray(tx), np.asarray(ty), np.asarray(tf), 30.0 + 2.5 * np.log10(T_RATIO)


@pytest.mark.parametrize("fs,ft,beta", [(6.5, 4.5, None), (4.4, 6.5, None), (5.5, 4.0, 2.5),
                                        (4.6, 5.6, 3.5)],
                         ids=["kolm_template_narrower", "kolm_template_broader",
                              "moffat2.5_template_narrower", "moffat3.5_template_broader"])
def test_transients_next_to_grown_defects_are_released_and_stars_stay_masked(
        fs: float, ft: float, beta: float | None) -> None:
    inputs, tx, ty, tf, zp_t = _scene(fs, ft, beta, seed=int(10 * fs + ft))
    sub = subtract(*inputs, zp_search=30.0, zp_template=zp_t, config=CFG)
    err = np.array([sub.flux_err_image[round(y), round(x)] for x, y in zip(tx, ty)])
    assert np.all(np.isfinite(err))
    snr = tf / err
    bright = snr >= 12.0
    assert bright.sum() >= 6, snr
    # the growth covers every transient's peak
    masked = (sub.mask & (maskbits.UNUSABLE | maskbits.EDGE)) != 0
    assert masked[np.round(ty).astype(int), np.round(tx).astype(int)].all()

    def detect(bound_factor: float):
        mask, _ = release_grown_mask(sub, *inputs[0:3], *inputs[4:7], threshold_sigma=5.0,
                                     bound_factor=bound_factor)
        return _found(detect_transients(replace(sub, mask=mask), threshold_sigma=5.0), tx, ty)

    found, bogus = detect(1.0)
    assert found[bright].all(), (snr[bright & ~found], tx[bright & ~found])
    assert bogus == 0
    # without the bound the stars' residuals along the columns come through
    _, bogus_nobound = detect(0.0)
    assert bogus_nobound >= 1
