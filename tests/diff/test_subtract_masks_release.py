"""Transients a few pixels from a search defect on their host, found (issue 13 item 3).

A bad column (1 px, as a calibration bad-pixel mask gives it), a hot pixel or a cosmic ray
of the *search* image cuts the host galaxy (in both images) next to a transient; the host
light the in-painting removes makes :func:`desgw.diff.subtract.subtract` grow the defect by
up to the PSF radius, over the transient 3-4 px away (the audit lost an S/N 996 transient 3 px
from a bad column and an S/N 99 one 5 px from a template column this way).
:func:`desgw.diff.detect.release_grown_mask` clears the growth where the PSF flux exceeds
what the cut light can leave. Checked against truth with galsim Kolmogorov and Moffat PSFs,
template broader and narrower than the search: the transients are found with the release
and lost without it; stars of 1e4-8e5 e- on and next to search and template columns and a
saturated star leave no detection with it, and do leave some when the bound is dropped
(``bound_factor=0``), so the bound is what keeps them masked.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import numpy as np
import pytest

from desgw.diff.detect import detect_transients, release_grown_mask
from desgw.diff.subtract import SubtractConfig, subtract
from desgw.se import maskbits
from test_subtract_masks_hosts import GalsimPSF, observe
from test_subtract_masks_hosts import _draw as _draw_stamp

galsim = pytest.importorskip("galsim")
_draw = partial(_draw_stamp, n=80)  # the galsim scene helpers of the host tests, 81-px stamps

SHAPE = (256, 448)
CFG = SubtractConfig(tile=256, border=48)
SKY_S, SKY_T, READ = 400.0, 150.0, 6.0
T_RATIO = 0.7  # template e- per search e-


def _scene(fs: float, ft: float, beta: float | None, seed: int):
    """Three hosts with a transient 3-4 px from a search defect (column, hot pixel, cosmic
    ray); stars on and next to a search and a template column; a saturated star."""
    rng = np.random.default_rng(seed)
    ps, pt = GalsimPSF(fs, beta), GalsimPSF(ft, beta)
    s = np.zeros(SHAPE, np.float32)
    t = np.zeros(SHAPE, np.float32)
    s_msk = np.zeros(SHAPE, np.int32)
    t_msk = np.zeros(SHAPE, np.int32)
    tx, ty = [], []
    for k, (host, defect) in enumerate(((galsim.Exponential(half_light_radius=2.5, flux=6e4),
                                         "column"),
                                        (galsim.DeVaucouleurs(half_light_radius=3.0,
                                                              flux=8e4), "hot"),
                                        (galsim.Exponential(half_light_radius=4.0, flux=1e5),
                                         "cosmic"))):
        hx, hy = 50.0 + 70.0 * k + rng.uniform(0, 1), rng.uniform(70, 190)
        for img, psf, f in ((s, ps, 1.0), (t, pt, T_RATIO)):
            _draw(img, psf, host.withFlux(host.flux * f), hx, hy)
        x, y = hx + rng.uniform(-1.5, 1.5), hy + rng.uniform(-1.5, 1.5)
        _draw(s, ps, galsim.DeltaFunction(flux=rng.uniform(1.5e4, 3e4)), x, y)
        tx.append(x)
        ty.append(y)
        d = rng.uniform(3.0, 4.0)  # less than the PSF FWHM
        col = int(round(x + d))
        if defect == "column":
            s_msk[:, col] |= maskbits.BADPIX
        elif defect == "hot":
            s_msk[int(round(y)), col] |= maskbits.BADPIX
        else:
            yy = int(round(y)) + np.arange(-1, 2)
            s_msk[yy, col] |= maskbits.CRAY
            s_msk[yy[1], col + 1] |= maskbits.CRAY
    # stars 1e4-8e5 e- on and 3-8 px from a search column and a template column
    for lo, m, fluxes in ((270, s_msk, (1e4, 5e4, 2e5, 8e5)), (340, t_msk, (3e4, 1e5, 4e5, 2e4))):
        m[:, lo] |= maskbits.BADPIX
        for j, f in enumerate(fluxes):
            x = lo + [0.2, 3.5, -5.3, 8.1][j] + rng.uniform(-0.5, 0.5)
            y = 30.0 + 60.0 * j + rng.uniform(0, 1)
            for img, psf, fr in ((s, ps, 1.0), (t, pt, T_RATIO)):
                _draw(img, psf, galsim.DeltaFunction(flux=f * fr), x, y)
    # a saturated star: its search core is SAT (no data), the template's is not
    sx, sy = 410.0 + rng.uniform(0, 1), 128.0 + rng.uniform(0, 1)
    for img, psf, fr in ((s, ps, 1.0), (t, pt, T_RATIO)):
        _draw(img, psf, galsim.DeltaFunction(flux=3e6 * fr), sx, sy)
    core = (slice(int(sy) - 1, int(sy) + 3), slice(int(sx) - 1, int(sx) + 3))
    s_msk[core] |= maskbits.SAT

    s, t = observe(rng, s, SKY_S, READ), observe(rng, t, SKY_T, READ)
    s[s_msk != 0] += 3e3  # a hot column or a cosmic ray: no data is kept there
    t[t_msk != 0] += 3e3
    s_var = np.full(SHAPE, SKY_S + READ ** 2, np.float32)
    t_var = np.full(SHAPE, SKY_T + READ ** 2, np.float32)
    s_var[s_msk != 0] = np.inf
    t_var[t_msk != 0] = np.inf
    inputs = (s, s_var, s_msk, ps, t, t_var, t_msk, pt)
    return inputs, np.asarray(tx), np.asarray(ty), 30.0 + 2.5 * np.log10(T_RATIO)


def _detect(sub, inputs, release: bool, bound_factor: float = 1.0):
    if release:
        mask, _ = release_grown_mask(sub, *inputs[0:3], *inputs[4:7], threshold_sigma=5.0,
                                     bound_factor=bound_factor)
        sub = replace(sub, mask=mask)
    return detect_transients(sub, threshold_sigma=5.0)


def _found(det, tx: np.ndarray, ty: np.ndarray) -> tuple[np.ndarray, int]:
    """Whether a positive detection lies within 1.5 px of each transient, and the number of
    detections farther than 3 px from every transient."""
    x, y = np.asarray(det["x"], float), np.asarray(det["y"], float)
    pos = ~np.asarray(det["negative"], bool)
    found = np.array([bool(np.any(pos & (np.hypot(x - a, y - b) < 1.5))) for a, b in zip(tx, ty)])
    d = np.array([np.hypot(tx - a, ty - b).min() for a, b in zip(x, y)])
    return found, int(np.sum(d > 3.0))


@pytest.mark.parametrize("fs,ft,beta", [(4.4, 6.5, None), (4.6, 3.6, 2.5)],
                         ids=["kolm_template_broader", "moffat2.5_template_narrower"])
def test_transients_next_to_search_defects_on_hosts_are_found(fs: float, ft: float,
                                                              beta: float | None) -> None:
    inputs, tx, ty, zp_t = _scene(fs, ft, beta, seed=int(10 * fs + ft))
    sub = subtract(*inputs, zp_search=30.0, zp_template=zp_t, config=CFG)
    err = np.array([sub.flux_err_image[round(y), round(x)] for x, y in zip(tx, ty)])
    assert np.all(np.isfinite(err))
    # the growth covers the transients' peaks (what the audit saw): lost without the release
    masked = (sub.mask & (maskbits.UNUSABLE | maskbits.EDGE)) != 0
    assert masked[np.round(ty).astype(int), np.round(tx).astype(int)].sum() >= 2
    found0, bogus0 = _found(_detect(sub, inputs, release=False), tx, ty)
    assert found0.sum() <= 1 and bogus0 == 0, (found0, bogus0)
    # with it: all found, and the stars' and the saturated star's residuals stay masked
    found, bogus = _found(_detect(sub, inputs, release=True), tx, ty)
    assert found.all(), found
    assert bogus == 0
    # without the bound the residuals come through: the bound is what keeps them masked
    _, bogus_nobound = _found(_detect(sub, inputs, release=True, bound_factor=0.0), tx, ty)
    assert bogus_nobound >= 1


def test_release_leaves_other_pixels_and_checks_its_inputs() -> None:
    inputs, tx, ty, zp_t = _scene(4.6, 3.6, 2.5, seed=1)
    sub = subtract(*inputs, zp_search=30.0, zp_template=zp_t, config=CFG)
    mask, n = release_grown_mask(sub, *inputs[0:3], *inputs[4:7])
    changed = mask != sub.mask
    assert n == int(changed.sum()) > 0
    # only grown pixels are cleared, to the inputs' own bits (no defect pixel is unmasked)
    bits = maskbits.UNUSABLE | maskbits.EDGE
    combined = inputs[2] | inputs[6]
    assert np.all((sub.mask[changed] & bits) != 0)
    assert np.array_equal(mask[changed], combined[changed])
    assert np.all((combined[changed] & bits) == 0)
    # among them the transients' peaks
    assert changed[np.round(ty).astype(int), np.round(tx).astype(int)].sum() >= 2
    with pytest.raises(ValueError, match="template_var"):
        s_img, s_var, s_msk, _, t_img, t_var, t_msk, _ = inputs
        release_grown_mask(sub, s_img, s_var, s_msk, t_img, t_var[:10], t_msk)
    with pytest.raises(ValueError, match="bound_factor"):
        release_grown_mask(sub, *inputs[0:3], *inputs[4:7], bound_factor=-1.0)
