"""Difference masks sized by the artefact with Kolmogorov PSFs (galsim) and the long defects
of a real bad-pixel mask (issue 13 item 3), against truth.

A single template has bad columns (after resampling, a few pixels wide, without data) that
bright stars cross; the search has cosmic rays and the template hot pixels next to transients.
The mask growth is decided where the flux is missing, not once for a whole column: a star on a
column grows the column only around the star. Before that rule every column a star crossed was
grown by the full radius over its whole length (the masked fraction of the difference was 3x the
truly bad fraction on the simulator's Kolmogorov nights, which had one template each), and
transients a little more than a FWHM from such a column were hidden.
"""

from __future__ import annotations

import numpy as np
import pytest

from desgw.diff.detect import detect_transients
from desgw.diff.measure import measure_candidates
from desgw.diff.subtract import SubtractConfig, difference_mask, subtract
from desgw.diff.zogy_synth import add_sources, make_image_pair
from desgw.se import maskbits

galsim = pytest.importorskip("galsim")

SHAPE = (768, 768)
CFG = SubtractConfig(tile=256, border=48)
FWHM_SEARCH, FWHM_TEMPLATE = 4.0, 5.2


class KolmogorovPSF:
    """Constant Kolmogorov PSF (galsim, pixel response included), the interface of
    :class:`desgw.se.psf.PSFModel`: unit-sum stamps centred ``(dx, dy)`` from the central
    pixel."""

    def __init__(self, fwhm: float, stamp: int = 41) -> None:
        self.fwhm = float(fwhm)
        self.stamp = int(stamp)
        self._prof = galsim.Kolmogorov(fwhm=self.fwhm)

    def fwhm_at(self, x: float, y: float) -> float:
        return self.fwhm

    def render(self, x: float, y: float, *, size: int | None = None, dx: float = 0.0,
               dy: float = 0.0) -> np.ndarray:
        n = int(size or self.stamp)
        img = self._prof.drawImage(nx=n, ny=n, scale=1.0, offset=(dx, dy)).array
        return (img / img.sum()).astype(np.float32)


def _blob(rng: np.random.Generator, x: float, y: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of a cosmic ray / hot-pixel cluster of 1-4 pixels around (x, y)."""
    n = int(rng.integers(1, 5))
    xs, ys = [round(x)], [round(y)]
    while len(xs) < n:
        k = int(rng.integers(len(xs)))
        dx, dy = [(1, 0), (-1, 0), (0, 1), (0, -1)][int(rng.integers(4))]
        xs.append(xs[k] + dx)
        ys.append(ys[k] + dy)
    return np.clip(np.asarray(ys), 0, SHAPE[0] - 1), np.clip(np.asarray(xs), 0, SHAPE[1] - 1)


@pytest.fixture(scope="module")
def scene():
    ps, pt = KolmogorovPSF(FWHM_SEARCH), KolmogorovPSF(FWHM_TEMPLATE)
    pair = make_image_pair(SHAPE, ps, pt, seed=23, n_stars=160, star_flux_range=(3e3, 3e5),
                           n_transients=80, transient_flux=(2.5e3, 1.5e4), min_distance=30.0)
    rng = np.random.default_rng(8)
    s_img, t_img = pair.search.copy(), pair.template.copy()
    s_msk = np.zeros(SHAPE, np.int32)
    t_msk = np.zeros(SHAPE, np.int32)
    fwhm = max(FWHM_SEARCH, FWHM_TEMPLATE)
    tx, ty = pair.transient_x, pair.transient_y
    # template bad columns, 3 px wide (a resampled 1-px defect), the whole height, each placed
    # just over a FWHM (to 2.5 px more) from a transient, left or right of it
    cols: list[int] = []
    for k in np.argsort(tx):
        x0 = tx[k] + rng.choice([-1.0, 1.0]) * (fwhm + rng.uniform(0.6, 2.5))
        lo = int(np.floor(x0)) - 1 if x0 < tx[k] else int(np.ceil(x0))
        if lo < 5 or lo + 3 > SHAPE[1] - 5 or any(abs(lo - c) < 60 for c in cols):
            continue
        cols.append(lo)
        if len(cols) == 6:
            break
    for lo in cols:
        t_msk[:, lo:lo + 3] |= maskbits.BADPIX
        t_img[:, lo:lo + 3] += 3e3  # what a hot column holds; no data is kept there
    # an artefact just over a FWHM to 12 px from every transient: a cosmic ray in the search
    # (even k) or a hot pixel cluster in the template (odd k)
    for k, (x, y) in enumerate(zip(tx, ty)):
        d = rng.uniform(fwhm + 2.5, 12.0)
        a = rng.uniform(0, 2 * np.pi)
        yy, xx = _blob(rng, x + d * np.cos(a), y + d * np.sin(a))
        img, msk, bit = ((s_img, s_msk, maskbits.CRAY) if k % 2 == 0
                         else (t_img, t_msk, maskbits.BADPIX))
        img[yy, xx] += rng.uniform(2e3, 2e4, yy.size)
        msk[yy, xx] |= bit
    # 300 cosmic rays at random in the search, 150 hot pixels in the template
    for img, msk, bit, n in ((s_img, s_msk, maskbits.CRAY, 300),
                             (t_img, t_msk, maskbits.BADPIX, 150)):
        for _ in range(n):
            yy, xx = _blob(rng, rng.uniform(5, SHAPE[1] - 6), rng.uniform(5, SHAPE[0] - 6))
            img[yy, xx] += rng.uniform(1e3, 3e4, yy.size)
            msk[yy, xx] |= bit
    # masked pixels carry no data, as SE and the resampling leave them (weight 0)
    s_var, t_var = pair.search_var.copy(), pair.template_var.copy()
    s_var[(s_msk & maskbits.UNUSABLE) != 0] = np.inf
    t_var[(t_msk & maskbits.UNUSABLE) != 0] = np.inf
    sub = subtract(s_img, s_var, s_msk, ps, t_img, t_var, t_msk, pt,
                   zp_search=pair.zp_search, zp_template=pair.zp_template, config=CFG)
    det = detect_transients(sub, threshold_sigma=5.0)
    meas = measure_candidates(sub, det, search_image=s_img, template_image=t_img)
    bad = ((s_msk | t_msk) & maskbits.UNUSABLE) != 0
    on_cols = np.zeros(len(pair.star_x), bool)
    for lo in cols:
        on_cols |= np.abs(pair.star_x - (lo + 1)) < 2.0 * fwhm
    return {"pair": pair, "sub": sub, "meas": meas, "bad": bad, "cols": cols,
            "fwhm": fwhm, "stars_on_columns": int(on_cols.sum()),
            "inputs": (s_img, s_var, s_msk, ps, t_img, t_var, t_msk, pt)}


def test_transients_next_to_columns_cosmic_rays_and_hot_pixels_are_found(scene) -> None:
    pair, sub, meas = scene["pair"], scene["sub"], scene["meas"]
    assert len(scene["cols"]) == 6 and scene["stars_on_columns"] >= 4
    tx, ty = pair.transient_x, pair.transient_y
    err = np.array([sub.flux_err_image[round(y), round(x)] for x, y in zip(tx, ty)])
    snr = pair.transient_flux / np.where(np.isfinite(err), err, np.nan)
    by, bx = np.nonzero(scene["bad"])
    dist = np.array([np.hypot(bx - x, by - y).min() for x, y in zip(tx, ty)])
    # every transient with S/N > 10 farther than its PSF radius (the difference's FWHM) from
    # its nearest truly bad pixel; a few of them just over a FWHM from a column
    bright = (snr > 10) & (dist > scene["fwhm"])
    assert bright.sum() >= 40
    near_col = np.array([min(abs(x - (lo + 1)) for lo in scene["cols"]) < scene["fwhm"] + 5
                         for x in tx])
    assert (bright & near_col).sum() >= 4
    pos = meas[~np.asarray(meas["negative"], bool)]
    px, py = np.asarray(pos["x"], float), np.asarray(pos["y"], float)
    found = np.array([len(px) > 0 and np.hypot(px - x, py - y).min() < 1.5
                      for x, y in zip(tx, ty)])
    assert found[bright].all(), [(round(tx[k]), round(ty[k]), round(dist[k], 1))
                                 for k in np.flatnonzero(bright & ~found)]


def test_masked_fraction_stays_near_the_bad_fraction(scene) -> None:
    sub, bad = scene["sub"], scene["bad"]
    masked = (sub.mask & (maskbits.UNUSABLE | maskbits.EDGE)) != 0
    assert np.all(masked[bad])
    # the 3-px columns (2.2 % of the pixels) and the 1-4 px clusters, grown only where they
    # cut a source: the 24-row pieces of a column (4 growth radii) that a bright star's core
    # or Kolmogorov wing crosses (~a quarter of each column here, ~270 stars of 3e3-3e5 e- per
    # million pixels), and the artefacts on stars. Measured: masked 1.9x the truly bad
    # fraction (the former whole-cluster rule: 4.8x, every column grown over its length)
    assert masked.mean() < 2.5 * bad.mean(), (masked.mean(), bad.mean())
    # no column is grown over its length: rows far from every star keep it at its width
    for lo in scene["cols"]:
        strip = masked[:, max(lo - 8, 0):lo + 11]
        assert np.median(strip.sum(axis=1)) <= 4, (lo, np.median(strip.sum(axis=1)))



def test_difference_mask_is_the_mask_of_the_subtraction(scene) -> None:
    """The mask predicted before subtracting (where fakes are planned) is the subtraction's."""
    pair = scene["pair"]
    mask = difference_mask(*scene["inputs"], zp_search=pair.zp_search,
                           zp_template=pair.zp_template, config=CFG)
    assert mask.dtype == np.int32
    assert np.array_equal(mask, scene["sub"].mask)


def test_a_defect_cutting_a_transient_is_not_grown_over_it_one_cutting_a_star_is() -> None:
    """A template column 4 px from a bright transient cuts its wing in the search only: both
    images are in-painted there, so the difference just lacks that part of the transient and
    shows no residual of its own; the column is not grown over it. The same column next to a
    star (in both images, different PSFs) leaves a residual: it is grown over the star."""
    shape = (256, 256)
    ps, pt = KolmogorovPSF(FWHM_SEARCH), KolmogorovPSF(FWHM_TEMPLATE)
    pair = make_image_pair(shape, ps, pt, seed=4, n_stars=0, n_transients=0)
    s_img, t_img = pair.search.copy(), pair.template.copy()
    star = (80.3, 128.4, 2e5)
    transient = (180.6, 127.7, 3e4)  # S/N ~ 150 on this sky
    add_sources(s_img, ps, np.array([star[0], transient[0]]), np.array([star[1], transient[1]]),
                np.array([star[2], transient[2]]))
    add_sources(t_img, pt, np.array([star[0]]), np.array([star[1]]), np.array([star[2] * 0.7]))
    t_msk = np.zeros(shape, np.int32)
    for x in (star[0], transient[0]):
        t_msk[:, int(round(x)) + 4:int(round(x)) + 6] |= maskbits.BADPIX
    t_var = pair.template_var.copy()
    t_var[t_msk != 0] = np.inf
    sub = subtract(s_img, pair.search_var, np.zeros(shape, np.int32), ps, t_img, t_var, t_msk,
                   pt, zp_search=pair.zp_search, zp_template=pair.zp_template,
                   config=SubtractConfig(tile=256, border=48))
    u = maskbits.UNUSABLE | maskbits.EDGE
    assert sub.mask[round(star[1]), round(star[0])] & u
    assert not sub.mask[round(transient[1]), round(transient[0])] & u
    det = detect_transients(sub, threshold_sigma=5.0)
    meas = measure_candidates(sub, det, search_image=s_img, template_image=t_img)
    d = np.hypot(np.asarray(meas["x"]) - transient[0], np.asarray(meas["y"]) - transient[1])
    assert d.min() < 1.5
    # its flux lacks only the cut wing (a few per cent)
    assert 0.85 < float(meas["flux"][int(np.argmin(d))]) / transient[2] < 1.02
