"""Masks sized by the artefact (issue 13 item 3), against truth: cosmic rays and hot pixels next
to transients do not hide them, masked pixels on stars are still grown (no bogus residual), and
the masked fraction of the difference stays near the fraction of truly bad input pixels."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from desgw.diff.detect import detect_transients
from desgw.diff.measure import measure_candidates
from desgw.diff.subtract import SubtractConfig, subtract
from desgw.diff.zogy_synth import MoffatPSFField, make_image_pair
from desgw.se import maskbits

SHAPE = (768, 768)
CFG = SubtractConfig(tile=256, border=48)


def _blob(rng: np.random.Generator, x: float, y: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of a cosmic ray / defect of 1-4 pixels around (x, y)."""
    n = int(rng.integers(1, 5))
    xs = [round(x)]
    ys = [round(y)]
    while len(xs) < n:
        k = int(rng.integers(len(xs)))
        dx, dy = [(1, 0), (-1, 0), (0, 1), (0, -1)][int(rng.integers(4))]
        xs.append(xs[k] + dx)
        ys.append(ys[k] + dy)
    return np.asarray(ys), np.asarray(xs)


@pytest.fixture(scope="module", params=[(4.2, 3.1), (3.0, 4.4)], ids=["broad_search",
                                                                        "broad_template"])
def scene(request):
    fs, ft = request.param
    ps = MoffatPSFField(fs, beta=3.0, image_shape=SHAPE)
    pt = MoffatPSFField(ft, beta=2.6, image_shape=SHAPE)
    pair = make_image_pair(SHAPE, ps, pt, seed=11, n_stars=150, star_flux_range=(3e3, 3e5),
                           n_transients=80, transient_flux=(2.5e3, 1.5e4), min_distance=30.0)
    rng = np.random.default_rng(5)
    s_img, t_img = pair.search.copy(), pair.template.copy()
    s_msk = np.zeros(SHAPE, np.int32)
    t_msk = np.zeros(SHAPE, np.int32)
    fwhm = max(fs, ft)
    for k, (x, y) in enumerate(zip(pair.transient_x, pair.transient_y)):
        # an artefact between just over a FWHM and 12 px away: cosmic ray in the search
        # (even k) or a hot pixel cluster in the template (odd k)
        d = rng.uniform(fwhm + 2.5, 12.0)
        a = rng.uniform(0, 2 * np.pi)
        yy, xx = _blob(rng, x + d * np.cos(a), y + d * np.sin(a))
        if k % 2 == 0:
            s_img[yy, xx] += rng.uniform(2e3, 2e4, yy.size)
            s_msk[yy, xx] |= maskbits.CRAY
        else:
            t_img[yy, xx] += rng.uniform(2e3, 2e4, yy.size)
            t_msk[yy, xx] |= maskbits.BADPIX
    # cosmic rays on 25 stars (search) and hot pixels on 25 others (template)
    on_star = []
    for k, (x, y) in enumerate(zip(pair.star_x[:50], pair.star_y[:50])):
        yy, xx = _blob(rng, x + rng.uniform(-1.5, 1.5), y + rng.uniform(-1.5, 1.5))
        img, msk, bit = (s_img, s_msk, maskbits.CRAY) if k < 25 else (t_img, t_msk,
                                                                      maskbits.BADPIX)
        img[yy, xx] += 5e4
        msk[yy, xx] |= bit
        on_star.append((x, y))
    # 400 cosmic rays at random in the search, 200 hot pixels in the template
    for img, msk, bit, n in ((s_img, s_msk, maskbits.CRAY, 400),
                             (t_img, t_msk, maskbits.BADPIX, 200)):
        for _ in range(n):
            yy, xx = _blob(rng, rng.uniform(5, SHAPE[1] - 6), rng.uniform(5, SHAPE[0] - 6))
            img[yy, xx] += rng.uniform(1e3, 3e4, yy.size)
            msk[yy, xx] |= bit
    # masked pixels carry no data, as in the pipeline's inputs (SE sets their weight to 0; the
    # resampled template has weight 0 where its kernel touched one): the combined mask then
    # marks them EDGE as well as CRAY/BADPIX, and must still size their growth by the artefact
    s_var, t_var = pair.search_var.copy(), pair.template_var.copy()
    s_var[(s_msk & maskbits.UNUSABLE) != 0] = np.inf
    t_var[(t_msk & maskbits.UNUSABLE) != 0] = np.inf
    out = {}
    for name, cfg in (("sized", CFG), ("box", replace(CFG, dilate_sources_only=False))):
        sub = subtract(s_img, s_var, s_msk, ps, t_img, t_var, t_msk, pt,
                       zp_search=pair.zp_search, zp_template=pair.zp_template, config=cfg)
        det = detect_transients(sub, threshold_sigma=5.0)
        meas = measure_candidates(sub, det, search_image=s_img, template_image=t_img)
        out[name] = (sub, meas)
    return {"pair": pair, "on_star": np.asarray(on_star),
            "fwhm": fwhm, "bad": ((s_msk | t_msk) & maskbits.UNUSABLE) != 0, **out}


def _found(meas, x, y, radius=1.5) -> np.ndarray:
    pos = meas[~np.asarray(meas["negative"], bool)]
    px, py = np.asarray(pos["x"], float), np.asarray(pos["y"], float)
    return np.array([np.hypot(px - a, py - b).min() < radius if len(pos) else False
                     for a, b in zip(x, y)])


def test_transients_next_to_cosmic_rays_and_hot_pixels_are_found(scene) -> None:
    pair = scene["pair"]
    sub, meas = scene["sized"]
    # expected S/N of each transient in this difference (the local flux error, unmasked)
    snr = pair.transient_flux / np.array([
        sub.flux_err_image[round(y), round(x)] if np.isfinite(
            sub.flux_err_image[round(y), round(x)]) else np.nan
        for x, y in zip(pair.transient_x, pair.transient_y)])
    # every transient with S/N > 10 whose nearest bad pixel (the placed artefact or a random
    # one) is farther than its PSF radius (the FWHM)
    by, bx = np.nonzero(scene["bad"])
    dist = np.array([np.hypot(bx - x, by - y).min()
                     for x, y in zip(pair.transient_x, pair.transient_y)])
    bright = (snr > 10) & (dist > scene["fwhm"])
    assert bright.sum() >= 40
    assert np.median(dist[bright]) < 10.0
    found = _found(meas, pair.transient_x, pair.transient_y)
    assert found[bright].all(), np.flatnonzero(bright & ~found)
    # their fluxes are unbiased (median within 2 %)
    pos = meas[~np.asarray(meas["negative"], bool)]
    ratio = []
    for x, y, f in zip(pair.transient_x[bright], pair.transient_y[bright],
                       pair.transient_flux[bright]):
        d = np.hypot(np.asarray(pos["x"]) - x, np.asarray(pos["y"]) - y)
        ratio.append(float(pos["flux"][int(np.argmin(d))]) / f)
    assert abs(np.median(ratio) - 1.0) < 0.02, np.median(ratio)
    # the fixed box growth (the former rule) hides some of them
    _, meas_box = scene["box"]
    lost = bright & ~_found(meas_box, pair.transient_x, pair.transient_y)
    assert lost.sum() >= 5, lost.sum()


def test_masked_fraction_stays_near_the_bad_fraction(scene) -> None:
    sub, _ = scene["sized"]
    box, _ = scene["box"]
    assert sub.meta["bad_fraction"] == pytest.approx(scene["bad"].mean(), rel=1e-6)
    # away from the 50 artefacts placed on stars (grown by the PSF on purpose): the 1-4 px
    # clusters are not grown unless they hit a source (a bright star's wings)
    away = np.ones(SHAPE, bool)
    for x, y in scene["on_star"]:
        away[max(int(y) - 12, 0):int(y) + 13, max(int(x) - 12, 0):int(x) + 13] = False
    bad = scene["bad"][away].mean()
    masked = (sub.mask[away] & maskbits.UNUSABLE) != 0
    # measured: bad 0.27 %, masked 0.39-0.44 % (the fixed box: 14-19 %)
    assert masked.mean() < 3.0 * bad, (masked.mean(), bad)
    assert box.meta["masked_fraction"] > 3.0 * sub.meta["masked_fraction"]


def test_masked_pixels_on_stars_are_grown_and_leave_no_bogus(scene) -> None:
    pair = scene["pair"]
    sub, meas = scene["sized"]
    fwhm = scene["fwhm"]
    # an artefact on a bright star is grown over the star (its residual would be a bogus)
    for (x, y), f in zip(scene["on_star"], pair.star_flux[:50]):
        if f > 3e4:
            xi, yi = round(x), round(y)
            assert sub.mask[yi, xi] & maskbits.UNUSABLE, (x, y, f)
    # every detection is a transient: none at the stars, the cosmic rays or hot pixels
    tx, ty = pair.transient_x, pair.transient_y
    d = np.array([np.hypot(tx - a, ty - b).min() for a, b in zip(meas["x"], meas["y"])])
    spurious = meas[d > 2.0]
    assert len(spurious) <= 2, spurious["x", "y", "score", "masked_frac"]
    # blank-sky noise of the score holds next to the in-painted pixels (within 8 px of one)
    from scipy import ndimage
    near = ndimage.binary_dilation(scene["bad"], iterations=8) & (sub.mask == 0)
    objs = np.zeros(SHAPE, bool)
    for x, y in zip(np.r_[pair.star_x, tx], np.r_[pair.star_y, ty]):
        objs[max(int(y) - 15, 0):int(y) + 16, max(int(x) - 15, 0):int(x) + 16] = True
    z = sub.score[near & ~objs]
    assert z.size > 20000
    sig = 1.4826 * np.median(np.abs(z - np.median(z)))
    assert abs(sig - 1.0) < 0.05, sig
    assert fwhm > 0


def test_sparse_labelling_equals_full_image_labelling():
    """The union-find clusters of the masked pixels are the 8-connected components that
    scipy's full-image labelling finds (same partition, clusters touching the borders and
    wrapping-looking neighbours at the row ends kept apart)."""
    from scipy import ndimage

    from desgw.diff.subtract import _label_sparse

    rng = np.random.default_rng(11)
    masked = rng.random((120, 90)) < 0.25
    masked[:, 0] = masked[:, -1] = True  # the row ends are not neighbours of each other
    idx = np.flatnonzero(masked)
    lab, n = _label_sparse(idx, masked.shape[1])
    labels, n_ref = ndimage.label(masked, structure=np.ones((3, 3), bool))
    ref = labels.ravel()[idx] - 1
    assert n == n_ref > 50
    # the same partition: each of our clusters maps to exactly one reference cluster
    pairs = np.unique(np.c_[lab, ref], axis=0)
    assert len(pairs) == n
    assert np.array_equal(np.sort(pairs[:, 1]), np.arange(n))


def _labels_per_block(masked, b):
    """scipy's 8-connected labels of ``masked`` within each b x b square, numbered square by
    square in raster order of the squares: the reference for ``_label_sparse``."""
    from scipy import ndimage

    ny, nx = masked.shape
    ref = np.zeros((ny, nx), np.int64)
    n = 0
    for y0 in range(0, ny, b):
        for x0 in range(0, nx, b):
            sl = (slice(y0, y0 + b), slice(x0, x0 + b))
            lb, k = ndimage.label(masked[sl], structure=np.ones((3, 3), bool))
            ref[sl] = np.where(lb > 0, lb + n, 0)
            n += k
    return ref, n


def test_sparse_labelling_in_blocks_equals_per_block_labelling():
    """With a block size the clusters are the 8-connected pieces of the masked pixels within
    each square (a long bad column becomes one piece per square)."""

    from desgw.diff.subtract import _label_sparse

    rng = np.random.default_rng(12)
    ny, nx, b = 100, 90, 16
    masked = rng.random((ny, nx)) < 0.3
    masked[:, 40] = True  # a column through every square of its block column
    idx = np.flatnonzero(masked)
    lab, n = _label_sparse(idx, nx, b)
    ref, n_ref = _labels_per_block(masked, b)
    r = ref.ravel()[idx]
    assert n == n_ref > 100
    pairs = np.unique(np.c_[lab, r], axis=0)
    assert len(pairs) == n and len(np.unique(pairs[:, 1])) == n
    # the column is cut into one piece per square it crosses
    col = np.flatnonzero(idx % nx == 40)
    assert len(np.unique(lab[col])) >= -(-ny // b)


@pytest.mark.parametrize("block", [0, 1, 3, 8])
def test_sparse_labels_are_numbered_in_raster_order(block):
    """The clusters are numbered in raster order of their first pixel, exactly (what the
    cluster sums and the mask update index by), rows starting and ending masked included."""

    from desgw.diff.subtract import _label_sparse

    rng = np.random.default_rng(20 + block)
    ny, nx = 37, 29
    masked = rng.random((ny, nx)) < 0.35
    masked[0, :] = masked[:, 0] = masked[:, -1] = True
    idx = np.flatnonzero(masked)
    lab, n = _label_sparse(idx, nx, block)
    ref, k0 = _labels_per_block(masked, block if block > 0 else max(ny, nx))
    r = ref.ravel()[idx]
    _, first = np.unique(r, return_index=True)
    order = np.argsort(np.argsort(first))  # rank of each cluster's first pixel
    want = order[np.searchsorted(np.unique(r), r)]
    assert n == k0
    np.testing.assert_array_equal(lab, want)
