"""Defects in a crowded field: grown where the cut light leaves a residual, not along their
length (issue 13 item 3, masks sized by the artefact).

Bad columns of the search and of the template (3 px, as a resampled column gives them) cross a
field of ~700 stars of 1e3-4e4 e- per 256 x 448 px (the audit's crowded nights: ~11,600
objects per DECam CCD, about 10x denser) with bright stars of 1e5-8e5 e- on and next to
them, in galsim Kolmogorov and Moffat (beta 2.5, 3.5) PSFs, template broader and narrower.
:func:`desgw.diff.subtract.subtract` sums a defect's cut light over pieces 2 growth radii
long (``growth_block``): the grown area shrinks by 5-7 %, the pixels that 4-radius pieces
grew and 2-radius pieces do not are noise in the difference (no ``|S_corr| >= 5`` farther
than 2 FWHM from the transients, whose own light they free), transients 2-5 px
from the columns (S/N > 12) are found and the stars' residuals leave no detection (with the
release, as the pipeline runs it).
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import numpy as np
import pytest

from desgw.diff.subtract import SubtractConfig, subtract
from desgw.se import maskbits
from test_subtract_masks_hosts import GalsimPSF, observe, hot_column_inputs
from test_subtract_masks_hosts import _draw as _draw_stamp
from test_subtract_masks_release import _detect

galsim = pytest.importorskip("galsim")
_draw = partial(_draw_stamp, n=64)

SHAPE = (256, 448)
CFG = SubtractConfig(tile=256, border=48)
SKY_S, SKY_T, READ = 400.0, 150.0, 6.0
T_RATIO = 0.7  # template e- per search e-
COLS = ((60, "t"), (150, "s"), (240, "t"), (330, "s"))


def _scene(fs: float, ft: float, beta: float | None, seed: int):
    """~700 faint stars in both images, four 3-px columns (template, search), bright stars on
    and next to them, and two transients 2-5 px from each column."""
    rng = np.random.default_rng(seed)
    ps, pt = GalsimPSF(fs, beta), GalsimPSF(ft, beta)
    s = np.zeros(SHAPE, np.float32)
    t = np.zeros(SHAPE, np.float32)
    s_msk = np.zeros(SHAPE, np.int32)
    t_msk = np.zeros(SHAPE, np.int32)
    n_stars = 700
    # faint stars: a power law in flux (many faint, few bright) from 1e3 to 4e4 e-
    u = rng.uniform(size=n_stars)
    flux = 1e3 * (40.0 ** u)
    sx = rng.uniform(2, SHAPE[1] - 3, n_stars)
    sy = rng.uniform(2, SHAPE[0] - 3, n_stars)
    for f, x, y in zip(flux, sx, sy):
        for img, psf, fr in ((s, ps, 1.0), (t, pt, T_RATIO)):
            _draw(img, psf, galsim.DeltaFunction(flux=f * fr), x, y)
    tx, ty, tf = [], [], []
    for col, which in COLS:
        (t_msk if which == "t" else s_msk)[:, col:col + 3] |= maskbits.BADPIX
        for j, f in enumerate((1e5, 8e5)):  # bright stars on / next to the column
            x = col + [1.0, -4.5][j] + rng.uniform(-0.5, 0.5)
            y = 40.0 + 170.0 * j + rng.uniform(0, 1)
            for img, psf, fr in ((s, ps, 1.0), (t, pt, T_RATIO)):
                _draw(img, psf, galsim.DeltaFunction(flux=f * fr), x, y)
        for j in range(2):
            off = rng.uniform(2.0, 5.0)  # from the column's edge (px)
            x = col + 2.5 + off if j else col - 0.5 - off
            y = 100.0 + 60.0 * j + rng.uniform(0, 1)
            f = rng.uniform(6e3, 1.2e4)
            _draw(s, ps, galsim.DeltaFunction(flux=f), x, y)
            tx.append(x)
            ty.append(y)
            tf.append(f)

    s, t = observe(rng, s, SKY_S, READ), observe(rng, t, SKY_T, READ)
    # hot columns: no data is kept there
    inputs = hot_column_inputs(s, t, s_msk, t_msk, ps, pt, SKY_S, SKY_T, READ)
    return inputs, np.asarray(tx), np.asarray(ty), np.asarray(tf), 30.0 + 2.5 * np.log10(T_RATIO)


def _found(det, tx: np.ndarray, ty: np.ndarray, sx: np.ndarray, sy: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """Whether a positive detection lies within 1.5 px of each transient; the detections
    farther than 3 px from every transient (x, y)."""
    x, y = np.asarray(det["x"], float), np.asarray(det["y"], float)
    pos = ~np.asarray(det["negative"], bool)
    found = np.array([bool(np.any(pos & (np.hypot(x - a, y - b) < 1.5))) for a, b in zip(tx, ty)])
    d = np.array([np.hypot(tx - a, ty - b).min() for a, b in zip(x, y)])
    return found, np.column_stack([x[d > 3.0], y[d > 3.0]])


@pytest.mark.parametrize("fs,ft,beta", [(4.4, 5.6, None), (5.0, 4.2, 2.5), (4.6, 5.2, 3.5)],
                         ids=["kolm_template_broader", "moffat2.5_template_narrower",
                              "moffat3.5_template_broader"])
def test_defects_in_a_crowded_field_are_grown_where_the_difference_needs_it(
        fs: float, ft: float, beta: float | None) -> None:
    inputs, tx, ty, tf, zp_t = _scene(fs, ft, beta, seed=int(10 * fs + ft))
    subs = {gb: subtract(*inputs, zp_search=30.0, zp_template=zp_t,
                         config=replace(CFG, growth_block=gb)) for gb in (4.0, 2.0)}
    sub = subs[2.0]
    assert CFG.growth_block == 2.0  # the default the pipeline runs
    bits = maskbits.UNUSABLE | maskbits.EDGE
    bad = ((inputs[2] | inputs[6]) & bits) != 0
    grown = {gb: ((s.mask & bits) != 0) & ~bad for gb, s in subs.items()}
    # the shorter pieces grow less (>= 4 %), and what they no longer grow is noise in the
    # difference but for the transients' own light
    assert grown[2.0].sum() < 0.96 * grown[4.0].sum()
    freed = grown[4.0] & ~grown[2.0]
    yy, xx = np.mgrid[:SHAPE[0], :SHAPE[1]]
    near = np.zeros(SHAPE, bool)
    for x, y in zip(tx, ty):
        near |= np.hypot(xx - x, yy - y) < 2.0 * max(fs, ft)
    assert (freed & ~near).sum() > 200
    assert np.abs(sub.score[freed & ~near]).max() < 5.0
    # and no detection is made there (nor anywhere but at the transients), the
    # transients next to the columns are found
    err = np.array([sub.flux_err_image[round(y), round(x)] for x, y in zip(tx, ty)])
    snr = tf / err
    bright = snr > 12.0
    assert bright.sum() >= 4, snr
    found, others = _found(_detect(sub, inputs, release=True), tx, ty, tx, ty)
    assert found[bright].all(), (snr, found)
    assert len(others) == 0, others
