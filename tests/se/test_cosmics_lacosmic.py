"""Cosmic-ray detection: spares stars, finds sharp tracks, agrees with astroscrappy."""

import numpy as np
import pytest
from scipy import ndimage

from desgw.se import maskbits
from desgw.se.cosmics import CosmicsConfig, find_cosmic_rays, interpolate_masked, objlim_for_fwhm

RN = 6.0


def add_moffat(img, x, y, peak, fwhm, beta=3.0):
    """Pixel-integrated (5x5 subsampled) Moffat star of the given peak (e-) at (x, y)."""
    alpha = fwhm / (2 * np.sqrt(2 ** (1 / beta) - 1))
    half = int(5 * fwhm) + 3
    x0, y0 = int(round(x)), int(round(y))
    o = (np.arange(5) + 0.5) / 5 - 0.5
    ys = np.arange(y0 - half, y0 + half + 1)
    xs = np.arange(x0 - half, x0 + half + 1)
    yy = ys[:, None, None, None] + o[None, :, None, None] - y
    xx = xs[None, None, :, None] + o[None, None, None, :] - x
    p = ((1 + (xx**2 + yy**2) / alpha**2) ** (-beta)).mean(axis=(1, 3))
    img[np.ix_(ys, xs)] += peak * p / p.max()


def tracks(shape, n, rng, amp=(100.0, 5000.0), length=(1.0, 20.0), margin=30):
    """Single-pixel-wide straight tracks: list of (pixel rows/cols, e- per pixel)."""
    out = []
    for _ in range(n):
        ln, th = rng.uniform(*length), rng.uniform(0, np.pi)
        x0, y0 = rng.uniform(margin, shape[1] - margin), rng.uniform(margin, shape[0] - margin)
        t = np.arange(0, ln + 1e-6, 0.3)
        pix = np.unique(np.stack([np.rint(y0 + t * np.sin(th)), np.rint(x0 + t * np.cos(th))],
                                 1).astype(int), axis=0)
        out.append((pix, float(np.exp(rng.uniform(np.log(amp[0]), np.log(amp[1]))))))
    return out


def star_field(shape, fwhm, sky, rng, n_side=6):
    star = np.zeros(shape)
    step = shape[0] // (n_side + 1)
    peaks = np.geomspace(10 * np.sqrt(sky), 1.2e5, n_side * n_side)  # 10 sigma .. near full well
    k = 0
    for i in range(1, n_side + 1):
        for j in range(1, n_side + 1):
            add_moffat(star, j * step + rng.uniform(-0.5, 0.5), i * step + rng.uniform(-0.5, 0.5),
                       peaks[k], fwhm)
            k += 1
    img = rng.poisson(star + sky).astype(np.float32) + rng.normal(0, RN, shape).astype(np.float32)
    return img, star


@pytest.mark.parametrize("fwhm", [3.0, 7.0])
def test_star_pixels_are_never_flagged(fwhm):
    rng = np.random.default_rng(int(fwhm))
    sky = 800.0
    img, star = star_field((900, 900), fwhm, sky, rng)
    cr = find_cosmic_rays(img, None, read_noise_e=RN, psf_fwhm_px=fwhm)
    sigma = np.sqrt(sky + RN**2)
    assert not np.any(cr & (star > 5 * sigma))
    assert cr.sum() <= 3  # nothing else either (a rare sky-noise spike at most)


@pytest.mark.parametrize("fwhm", [3.0, 7.0])
def test_finds_sharp_tracks_among_stars(fwhm):
    rng = np.random.default_rng(10 + int(fwhm))
    sky = 200.0  # 100 e- per pixel is then 6.7 sigma; see the module docs for brighter skies
    img, star = star_field((1024, 1024), fwhm, sky, rng)
    truth = np.zeros(img.shape, bool)
    trs = tracks(img.shape, 150, rng)
    for pix, a in trs:
        img[pix[:, 0], pix[:, 1]] += a
        truth[pix[:, 0], pix[:, 1]] = True
    cr = find_cosmic_rays(img, None, read_noise_e=RN, psf_fwhm_px=fwhm)
    found = np.array([cr[p[:, 0], p[:, 1]].mean() >= 0.5 for p, _ in trs])
    assert found.mean() >= 0.95, found.mean()
    far = cr & ~ndimage.binary_dilation(truth, np.ones((9, 9), bool))
    assert far.sum() <= 5
    sigma = np.sqrt(sky + RN**2)
    assert not np.any(cr & (star > 5 * sigma) & ~ndimage.binary_dilation(truth, np.ones((5, 5))))


def test_same_as_astroscrappy_full_median():
    """One iteration, no spike pruning: the sparse evaluation is L.A.Cosmic exactly."""
    pytest.importorskip("astroscrappy")
    rng = np.random.default_rng(3)
    img, _ = star_field((256, 256), 3.5, 1000.0, rng, n_side=4)
    for pix, a in tracks(img.shape, 30, rng, margin=25):
        img[pix[:, 0], pix[:, 1]] += a
    kw = dict(read_noise_e=RN, psf_fwhm_px=3.5)
    ours = find_cosmic_rays(img, None, config=CosmicsConfig(niter=1, isolated_nsigma=0), **kw)
    lib = find_cosmic_rays(img, None, config=CosmicsConfig(niter=1, method="astroscrappy"), **kw)
    assert lib.sum() > 50
    np.testing.assert_array_equal(ours, lib)


def test_masked_pixels_and_sky_subtracted_input():
    rng = np.random.default_rng(4)
    sky = 500.0
    img = (rng.poisson(sky, (300, 300)) + rng.normal(0, RN, (300, 300))).astype(np.float32)
    img[100, 100] += 3000.0
    img[200, 200] += 3000.0
    mask = np.zeros(img.shape, np.int32)
    mask[200, 200] = maskbits.BADPIX
    mask[:, 50] = maskbits.BADPIX  # a dead column must not make its neighbours look sharp
    img[:, 50] = 0.0
    cr = find_cosmic_rays(img, mask, read_noise_e=RN, psf_fwhm_px=4.0)
    assert cr[100, 100] and not cr[200, 200] and not cr[:, 49:52].any()
    cr2 = find_cosmic_rays(img - sky, mask, read_noise_e=RN, sky_e=sky, psf_fwhm_px=4.0)
    np.testing.assert_array_equal(cr, cr2)


def test_given_smooth_sky_gives_the_same_cosmic_rays():
    """The detrending's smooth sky (process_ccd passes it) replaces the prefilter's own
    estimate: the same tracks on a sky with a gradient; a sky far too high starves the
    prefilter (so the argument is used), and a wrong shape is refused."""
    from desgw.se.detrend import smooth_sky

    rng = np.random.default_rng(21)
    img, _ = star_field((512, 512), 4.0, 300.0, rng, n_side=5)
    img += np.linspace(0.0, 400.0, 512, dtype=np.float32)[None, :]  # sky 300 -> 700 e-
    for pix, a in tracks(img.shape, 60, rng, margin=20):
        img[pix[:, 0], pix[:, 1]] += a
    kw = dict(read_noise_e=RN, psf_fwhm_px=4.0)
    own = find_cosmic_rays(img, None, **kw)
    assert own.sum() > 100
    sky = smooth_sky(img, None, mesh=128, subsample=4)
    np.testing.assert_array_equal(find_cosmic_rays(img, None, smooth_sky_e=sky, **kw), own)
    starved = find_cosmic_rays(img, None, smooth_sky_e=np.full(img.shape, 1e6, np.float32), **kw)
    assert starved.sum() < 0.5 * own.sum()
    with pytest.raises(ValueError, match="smooth_sky_e shape"):
        find_cosmic_rays(img, None, smooth_sky_e=sky[:-1], **kw)


def test_objlim_for_fwhm():
    assert objlim_for_fwhm(2.0) > objlim_for_fwhm(3.0) > objlim_for_fwhm(7.0) >= 3.0
    with pytest.raises(ValueError):
        objlim_for_fwhm(0.0)


def test_interpolate_masked():
    img = np.tile(np.arange(20, dtype=np.float32), (5, 1)) * 10
    img[2, 7] = 5000.0
    img[3, 0:15] = 9999.0
    mask = np.zeros(img.shape, np.int32)
    mask[2, 7] = maskbits.CRAY
    mask[3, 0:15] = maskbits.CRAY  # too long (and at the edge): left alone
    out, m = interpolate_masked(img, mask)
    assert out[2, 7] == pytest.approx(70.0) and m[2, 7] & maskbits.INTERP
    assert np.all(out[3, 0:15] == 9999.0) and not np.any(m[3] & maskbits.INTERP)
    assert img[2, 7] == 5000.0 and mask[2, 7] == maskbits.CRAY  # inputs untouched
