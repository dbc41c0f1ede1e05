"""Stars saturated in one template of a coadd (issue 13, the crowded night's big residuals),
against truth.

On the audit's crowded night (Moffat beta 2.5; templates of 1.1" and 1.57", search 1.37") 44
of the 49 stars saturated in the sharper template only left a positive residual of S/N
100-800 in the difference, 9-38 % of the star's flux, whose wings hid fainter fakes 5-35 px
away: the coadd filled the saturated core from the broader template alone while its wings and
its PSF model were the weighted mean of both. :func:`desgw.diff.coadd.coadd_templates` now
leaves a pixel that any covering template saturated unusable (``veto_bits``), and the
difference masks it as it masks a star saturated in the search.

Scenes (galsim): search FWHM 4.6 px, templates of 3.6 and 5.4 px, Moffat beta 2.5 and
Kolmogorov; 12 stars of 1.5e6-2.2e6 e-, most saturated in the sharp template only (full well
10 % above the brightest pixel of the search and the broad template), with
SAT on their clipped pixels and the one-pixel ring around them (the resampling's spread), and
a transient of S/N ~20-40 11-20 px from each. The score of the difference within 30 px of
each star, off the output mask and off the transients, stays below 12 (measured 4.9
Kolmogorov, 10.4 Moffat 2.5, the Moffat wing just beyond the mask growth's 1-FWHM cap, as
for a star saturated in the search); every transient farther than 3 px from the mask
(9-10 of 12) is found within 2 px with a ZOGY flux within 5 sigma of the truth (measured
|pull| <= 2.7). The former coadd (``veto_bits=0``) leaves |S_corr| of 176-192 at the stars'
centres, and with Moffat 2.5 five of the 12 transients have only the star's residual 11-13
px away as their nearest candidate (flux pulls 150-175): the crowded night's failure.
"""

from __future__ import annotations

import numpy as np
import pytest

from desgw.diff.coadd import coadd_templates
from desgw.diff.detect import detect_transients
from desgw.diff.measure import measure_candidates
from desgw.diff.resample import Resampled
from desgw.diff.resample_mapping import GridMapping
from desgw.diff.subtract import SubtractConfig, subtract
from desgw.se.maskbits import SAT

galsim = pytest.importorskip("galsim")

SHAPE = (256, 768)
CFG = SubtractConfig(tile=256, border=64)
SKY_S, SKY_T, READ = 400.0, 250.0, 6.0
ZP = 30.0
NO_MAP = GridMapping(x0=0.0, y0=0.0, step=32, xin=np.zeros((1, 1)), yin=np.zeros((1, 1)),
                     area=np.ones((1, 1)), shape_out=SHAPE)


def _profile(fwhm: float, beta: float | None):
    return galsim.Kolmogorov(fwhm=fwhm) if beta is None else galsim.Moffat(beta=beta, fwhm=fwhm)


def _stamp(prof, n: int = 41) -> np.ndarray:
    img = prof.drawImage(nx=n, ny=n, scale=1.0).array
    return (img / img.sum()).astype(np.float32)


class _MixPSF:
    """Constant PSF ``sum_i a_i P_i`` (the coadd's, as :class:`CoaddPSF` gives it for templates
    on the search grid with constant combination weights ``a_i``)."""

    def __init__(self, profs, weights) -> None:
        self.profs, self.weights = profs, np.asarray(weights, float) / np.sum(weights)

    def render(self, x: float, y: float, *, size: int | None = None, dx: float = 0.0,
               dy: float = 0.0) -> np.ndarray:
        n = int(size or 81)
        out = sum(a * p.drawImage(nx=n, ny=n, scale=1.0, offset=(dx, dy)).array
                  for a, p in zip(self.weights, self.profs))
        return (out / out.sum()).astype(np.float32)


def _draw(img: np.ndarray, prof, flux: float, x: float, y: float, n: int = 96) -> None:
    ix, iy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
    st = galsim.Convolve(galsim.DeltaFunction(flux=flux), prof).drawImage(
        nx=n + 1, ny=n + 1, scale=1.0, offset=(x - ix, y - iy)).array
    h = n // 2
    y0, x0 = iy - h, ix - h
    sy0, sx0 = max(0, -y0), max(0, -x0)
    y1, x1 = min(img.shape[0], iy + h + 1), min(img.shape[1], ix + h + 1)
    img[y0 + sy0:y1, x0 + sx0:x1] += st[sy0:sy0 + y1 - y0 - sy0, sx0:sx0 + x1 - x0 - sx0]


def _scene(beta: float | None, seed: int):
    rng = np.random.default_rng(seed)
    fs, f1, f2 = 4.6, 3.6, 5.4
    ps, p1, p2 = _profile(fs, beta), _profile(f1, beta), _profile(f2, beta)
    s, t1, t2 = (np.zeros(SHAPE, np.float64) for _ in range(3))
    sx, sy, tx, ty, tf = [], [], [], [], []
    for k in range(12):
        cx = 64.0 + 128.0 * (k % 6) + rng.uniform(-0.5, 0.5)
        cy = 64.0 + 128.0 * (k // 6) + rng.uniform(-0.5, 0.5)
        flux = rng.uniform(1.5e6, 2.2e6)
        for img, prof in ((s, ps), (t1, p1), (t2, p2)):
            _draw(img, prof, flux, cx, cy)
        d, a = rng.uniform(11.0, 20.0), rng.uniform(0, 2 * np.pi)
        x, y = cx + d * np.cos(a), cy + d * np.sin(a)
        f_tr = rng.uniform(4e3, 8e3)
        _draw(s, ps, f_tr, x, y)
        sx.append(cx)
        sy.append(cy)
        tx.append(x)
        ty.append(y)
        tf.append(f_tr)
    obs = []
    for img, sky in ((s, SKY_S), (t1, SKY_T), (t2, SKY_T)):
        o = rng.poisson(np.clip(img, 0, None) + sky).astype(np.float64)
        o += rng.normal(0.0, READ, SHAPE)
        obs.append(o)
    # the full well 10 % above the search's and the broad template's brightest pixel: only the
    # sharp template's star cores exceed it
    full_well = 1.1 * max((s + SKY_S).max(), (t2 + SKY_T).max())
    sat = (t1 + SKY_T) >= full_well
    n_sat = sum(bool(sat[int(y) - 2:int(y) + 3, int(x) - 2:int(x) + 3].any()) for x, y in zip(sx, sy))
    assert n_sat >= 8, n_sat
    obs[1][sat] = full_well
    grown = sat.copy()  # the resampling spreads a masked pixel to its neighbours
    grown[1:, :] |= sat[:-1, :]
    grown[:-1, :] |= sat[1:, :]
    grown[:, 1:] |= grown[:, :-1].copy()
    grown[:, :-1] |= grown[:, 1:].copy()
    m1 = np.where(grown, SAT, 0).astype(np.int32)
    search = (obs[0] - SKY_S).astype(np.float32)
    temps = []
    for o, sky, m in ((obs[1], SKY_T, m1), (obs[2], SKY_T, np.zeros(SHAPE, np.int32))):
        temps.append(Resampled(image=(o - sky).astype(np.float32), mask=m,
                               weight=np.full(SHAPE, 1.0 / (sky + READ ** 2), np.float32),
                               coverage=np.ones(SHAPE, bool), mapping=NO_MAP,
                               noise_correlation_factor=1.0))
    truth = {"sx": np.asarray(sx), "sy": np.asarray(sy), "x": np.asarray(tx),
             "y": np.asarray(ty), "flux": np.asarray(tf)}
    return search, ps, temps, (p1, p2), truth


def _difference(search, ps, temps, profs, veto_bits: int | None):
    co = (coadd_templates(temps, (ZP, ZP), ZP) if veto_bits is None
          else coadd_templates(temps, (ZP, ZP), ZP, veto_bits=veto_bits))
    w = [float(t.weight[0, 0]) for t in temps]
    t_var = np.where(co.weight > 0, 1.0 / np.where(co.weight > 0, co.weight, 1.0), np.inf)
    sub = subtract(search, np.full(SHAPE, SKY_S + READ ** 2, np.float32),
                   np.zeros(SHAPE, np.int32), _PSF(ps), co.image, t_var.astype(np.float32),
                   co.mask, _MixPSF(profs, w), zp_search=ZP, zp_template=ZP, config=CFG,
                   template_gain_map=co.gain)
    return co, sub


class _PSF:
    def __init__(self, prof) -> None:
        self.prof = prof

    def render(self, x: float, y: float, *, size: int | None = None, dx: float = 0.0,
               dy: float = 0.0) -> np.ndarray:
        n = int(size or 81)
        img = self.prof.drawImage(nx=n, ny=n, scale=1.0, offset=(dx, dy)).array
        return (img / img.sum()).astype(np.float32)


def _residual_and_transients(sub, truth, search, template) -> tuple[float, np.ndarray, np.ndarray]:
    """Largest |S_corr| within 30 px of the stars off the output mask and 8 px from the
    transients; per transient whose centre is >= 3 px from the output mask, the distance to the
    nearest positive candidate and its flux pull (nan for transients under the mask)."""
    yy, xx = np.mgrid[:SHAPE[0], :SHAPE[1]]
    near = np.zeros(SHAPE, bool)
    for cx, cy in zip(truth["sx"], truth["sy"]):
        near |= np.hypot(xx - cx, yy - cy) < 30
    for x, y in zip(truth["x"], truth["y"]):
        near &= np.hypot(xx - x, yy - y) > 8
    near &= sub.mask == 0
    worst = float(np.abs(sub.score[near]).max())
    det = detect_transients(sub, threshold_sigma=5.0)
    meas = measure_candidates(sub, det, search_image=search, template_image=template)
    pos = np.flatnonzero(~np.asarray(meas["negative"], bool))
    px, py = np.asarray(meas["x"], float)[pos], np.asarray(meas["y"], float)[pos]
    my, mx = np.nonzero(sub.mask)
    dist = np.full(len(truth["x"]), np.nan)
    pull = np.full(len(truth["x"]), np.nan)
    for k, (x, y, f) in enumerate(zip(truth["x"], truth["y"], truth["flux"])):
        if my.size and np.hypot(mx - x, my - y).min() < 3.0:
            continue
        d = np.hypot(px - x, py - y)
        j = pos[int(np.argmin(d))]
        dist[k] = d.min()
        pull[k] = (float(meas["flux"][j]) - f) / float(meas["flux_err"][j])
    return worst, dist, pull


@pytest.mark.parametrize("beta", [2.5, None], ids=["moffat2.5", "kolmogorov"])
def test_star_saturated_in_one_template_leaves_no_residual(beta: float | None) -> None:
    search, ps, temps, profs, truth = _scene(beta, seed=11 if beta else 12)
    co, sub = _difference(search, ps, temps, profs, None)
    # the saturated cores are unusable in the coadd, the rest of the stars are not
    sat = (temps[0].mask & SAT) != 0
    assert np.all(co.weight[sat] == 0) and np.all(co.mask[sat] & SAT)
    assert np.all(co.n_contrib[sat] == 0)
    assert (co.weight == 0).mean() < 0.01
    worst, dist, pull = _residual_and_transients(sub, truth, search, co.image)
    # the difference masks the cores (as for a star saturated in the search) and what it
    # leaves is noise-like (measured 5.3 Kolmogorov, 10.0 Moffat 2.5: the Moffat wing beyond
    # the mask growth's 1-FWHM cap)
    assert worst < 12.0, worst
    assert (sub.mask != 0).mean() < 0.03
    measured = np.isfinite(dist)
    assert measured.sum() >= 6, dist
    assert np.all(dist[measured] < 2.0), dist
    assert np.all(np.abs(pull[measured]) < 5.0), pull
    # the former coadd (saturated cores filled from the broad template) leaves the residual
    old_co, old = _difference(search, ps, temps, profs, 0)
    worst0, _, _ = _residual_and_transients(old, truth, search, old_co.image)
    assert worst0 > 100.0, worst0
