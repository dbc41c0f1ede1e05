"""Candidate positions of point-source transients next to brighter stars and on galaxy nuclei
(issue 13: fakes matched 1.5-2.5 px from their candidate next to brighter sources), against
truth.

A spectrograph slit or fibre placed on a candidate needs its position to a fraction of an
arcsec, so a brighter neighbour must not pull it. For a point source in a PSF-matched
difference the maximum-likelihood position is the peak of the matched filter; the candidate's
position is the sub-pixel peak of ``S_corr`` (:func:`desgw.diff.detect.detect_transients`),
whose variance carries the neighbour's own noise (its Poisson noise, the registration noise of
its gradient), so its light, removed by the subtraction, does not drag the peak. The
Cramer-Rao error per axis of a PSF fit is ``sqrt(2) sigma_PSF / (S/N)`` (exact for a Gaussian
PSF, sky-limited), ``sigma_PSF = FWHM / 2.355`` of the difference PSF and ``S/N`` the
candidate's ZOGY ``flux / flux_err``.

Scenes (galsim, Kolmogorov and Moffat beta 2.5 / 3.5 PSFs, search / template FWHM ratios
0.75-1.3): 24 isolated transients, 24 placed 2-6 px from a static star 5-30 times brighter,
24 within 1 px of the nucleus of an exponential or de Vaucouleurs host of 3-30 times their
flux; S/N 7-45 (the neighbour's noise counts). Each group's position errors are within twice
the statistical expectation (rms of ``error / sigma`` per axis <= 2, none beyond 1.5 px: the
fakes' match radius), and the isolated group meets it (rms 0.6-1.5: the expectation itself is
right). Measured: isolated 0.88-1.21, next to a star 1.00-1.08, on a nucleus 0.89-1.28. The
``S_corr`` peak (audit18's position) fails: 5.8-8.0 next to a star (1.3-1.4 px away from it
on average, up to 2.6 px), 1.7-2.6 on nuclei; so do the integer peak pixel (2.5-3.7 isolated)
and an unwindowed centroid of the difference over 2 FWHM (3.3-4.6 isolated).
"""

from __future__ import annotations

import numpy as np
import pytest

from desgw.diff.detect import detect_transients
from desgw.diff.measure import measure_candidates
from desgw.diff.subtract import SubtractConfig, subtract

galsim = pytest.importorskip("galsim")

SHAPE = (384, 768)
CFG = SubtractConfig(tile=256, border=48)
SKY_S, SKY_T, READ = 400.0, 150.0, 6.0
T_RATIO = 0.7  # template e- per search e-
N_PER_GROUP = 24


def _profile(fwhm: float, beta: float | None):
    return galsim.Kolmogorov(fwhm=fwhm) if beta is None else galsim.Moffat(beta=beta, fwhm=fwhm)


class _PSF:
    """Constant galsim PSF with the ``render(x, y, size=, dx=, dy=)`` of
    :class:`desgw.se.psf.PSFModel` (pixel response included)."""

    def __init__(self, fwhm: float, beta: float | None) -> None:
        self.prof = _profile(fwhm, beta)

    def render(self, x: float, y: float, *, size: int | None = None, dx: float = 0.0,
               dy: float = 0.0) -> np.ndarray:
        n = int(size or 41)
        img = self.prof.drawImage(nx=n, ny=n, scale=1.0, offset=(dx, dy)).array
        return (img / img.sum()).astype(np.float32)


def _draw(img: np.ndarray, prof, obj, x: float, y: float, n: int = 64) -> None:
    """Add ``obj`` convolved with ``prof`` centred at 0-based (x, y), in place."""
    ix, iy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
    st = galsim.Convolve(obj, prof).drawImage(nx=n + 1, ny=n + 1, scale=1.0,
                                              offset=(x - ix, y - iy)).array
    h = n // 2
    img[iy - h:iy + h + 1, ix - h:ix + h + 1] += st


def _scene(fs: float, ft: float, beta: float | None, seed: int):
    """72 transients on a grid of 48 px cells (isolated, next to a star, on a nucleus, in
    random order); returns the subtraction inputs and the truth."""
    rng = np.random.default_rng(seed)
    ps, pt = _PSF(fs, beta), _PSF(ft, beta)
    s = np.zeros(SHAPE, np.float32)
    t = np.zeros(SHAPE, np.float32)
    groups = rng.permutation(np.repeat(np.arange(3), N_PER_GROUP))
    tx, ty, tf, tg, nx_, ny_ = [], [], [], [], [], []
    for k, g in enumerate(groups):
        cx = 60.0 + 48.0 * (k % 14) + rng.uniform(-0.5, 0.5)
        cy = 60.0 + 48.0 * (k // 14) + rng.uniform(-0.5, 0.5)
        flux = rng.uniform(4e3, 1.2e4)
        x, y = cx, cy
        nbx, nby = cx, cy  # the brighter neighbour's (or host's) centre
        if g == 1:  # a static star 5-30 times brighter, 2-6 px away
            d, a = rng.uniform(2.0, 6.0), rng.uniform(0, 2 * np.pi)
            star = galsim.DeltaFunction(flux=flux * rng.uniform(5.0, 30.0))
            nbx, nby = cx + d * np.cos(a), cy + d * np.sin(a)
            for img, prof, fr in ((s, ps.prof, 1.0), (t, pt.prof, T_RATIO)):
                _draw(img, prof, star.withFlux(star.flux * fr), nbx, nby)
        elif g == 2:  # on the nucleus of a host 3-30 times brighter
            hf = flux * rng.uniform(3.0, 30.0)
            host = (galsim.Exponential(half_light_radius=rng.uniform(1.5, 4.0), flux=hf)
                    if rng.uniform() < 0.5 else
                    galsim.DeVaucouleurs(half_light_radius=rng.uniform(1.5, 4.0), flux=hf))
            for img, prof, fr in ((s, ps.prof, 1.0), (t, pt.prof, T_RATIO)):
                _draw(img, prof, host.withFlux(hf * fr), cx, cy)
            d, a = rng.uniform(0.0, 1.0), rng.uniform(0, 2 * np.pi)
            x, y = cx + d * np.cos(a), cy + d * np.sin(a)
        _draw(s, ps.prof, galsim.DeltaFunction(flux=flux), x, y)
        tx.append(x)
        ty.append(y)
        tf.append(flux)
        tg.append(int(g))
        nx_.append(nbx)
        ny_.append(nby)
    s = _observe(rng, s, SKY_S)
    t = _observe(rng, t, SKY_T)
    zeros = np.zeros(SHAPE, np.int32)
    inputs = (s, np.full(SHAPE, SKY_S + READ ** 2, np.float32), zeros, ps, t,
              np.full(SHAPE, SKY_T + READ ** 2, np.float32), zeros, pt)
    truth = {"x": np.asarray(tx), "y": np.asarray(ty), "flux": np.asarray(tf),
             "group": np.asarray(tg), "nx": np.asarray(nx_), "ny": np.asarray(ny_)}
    return inputs, truth


def _observe(rng: np.random.Generator, img: np.ndarray, sky: float) -> np.ndarray:
    out = rng.poisson(np.clip(img, 0, None) + sky).astype(np.float32) - np.float32(sky)
    return out + rng.normal(0.0, READ, img.shape).astype(np.float32)


def _matched(meas, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row of the nearest positive candidate within 3 px of each (x, y) (-1 where none)."""
    pos = np.flatnonzero(~np.asarray(meas["negative"], bool))
    px, py = np.asarray(meas["x"], float)[pos], np.asarray(meas["y"], float)[pos]
    out = np.full(len(x), -1)
    for k, (a, b) in enumerate(zip(x, y)):
        d = np.hypot(px - a, py - b)
        if d.size and d.min() < 3.0:
            out[k] = pos[int(np.argmin(d))]
    return out


PSFS = [(4.0, 5.2, None), (5.0, 3.8, None), (4.2, 4.8, 2.5), (4.6, 3.6, 3.5)]


@pytest.mark.parametrize("fs,ft,beta", PSFS, ids=["kolm_0.77", "kolm_1.32", "moffat2.5_0.88",
                                                  "moffat3.5_1.28"])
def test_positions_next_to_stars_and_on_nuclei_meet_the_statistical_error(
        fs: float, ft: float, beta: float | None) -> None:
    inputs, truth = _scene(fs, ft, beta, seed=int(fs * 100 + ft * 10))
    sub = subtract(*inputs, zp_search=30.0, zp_template=30.0 + 2.5 * np.log10(T_RATIO),
                   config=CFG)
    det = detect_transients(sub, threshold_sigma=5.0)
    meas = measure_candidates(sub, det, search_image=inputs[0], template_image=inputs[4])
    tx, ty, group = truth["x"], truth["y"], truth["group"]
    row = _matched(meas, tx, ty)
    assert np.all(row >= 0), (group[row < 0], tx[row < 0], ty[row < 0])
    snr = np.asarray(meas["snr"], float)[row]
    assert np.all((snr > 6) & (snr < 60)), snr
    sigma = np.sqrt(2.0) * np.asarray(meas["fwhm_psf"], float)[row] / 2.3548 / snr
    ex = np.asarray(meas["x"], float)[row] - tx
    ey = np.asarray(meas["y"], float)[row] - ty
    pulls = {}
    for g, name in enumerate(("isolated", "next to a star", "on a nucleus")):
        sel = group == g
        pull = np.sqrt(np.mean(np.concatenate([ex[sel], ey[sel]]) ** 2
                               / np.concatenate([sigma[sel], sigma[sel]]) ** 2))
        pulls[name] = round(float(pull), 2)
        assert np.hypot(ex[sel], ey[sel]).max() < 1.5, (name, np.hypot(ex[sel], ey[sel]))
    assert 0.6 <= pulls["isolated"] <= 1.5, pulls
    assert max(pulls.values()) <= 2.0, pulls
