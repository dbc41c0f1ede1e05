"""Fake planning, injection and matching."""

from __future__ import annotations

import galsim
import numpy as np
import pytest
from astropy.table import Table
from astropy.wcs import WCS

from desgw.diff.fakes import (
    fake_fluxes,
    fake_mag_range,
    inject_fakes,
    match_fakes,
    plan_fakes,
    select_host_galaxies,
)
from desgw.se.maskbits import BADPIX, CRAY, UNUSABLE

SHAPE = (1000, 600)


class MoffatPSF:
    """Stand-in for desgw.se.psf.PSFModel: a pixel-integrated Moffat, unit sum."""

    def __init__(self, fwhm: float = 4.0, beta: float = 3.0, size: int = 41) -> None:
        self.profile = galsim.Moffat(beta=beta, fwhm=fwhm)
        self.size = size

    def render(self, x, y, *, size=None, dx=0.0, dy=0.0):
        n = size or self.size
        img = self.profile.drawImage(nx=n, ny=n, scale=1.0, offset=(dx, dy)).array
        return img / img.sum()


def _wcs() -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [300.5, 500.5]
    s = 0.263 / 3600
    w.wcs.cd = [[-s, 0], [0, s]]
    return w


def test_fake_fluxes_and_range():
    assert fake_fluxes(25.0, zp=30.0) == pytest.approx(100.0)
    assert fake_fluxes(25.0, zp=30.0, exptime=90.0) == pytest.approx(9000.0)
    assert fake_mag_range(23.5) == (21.5, 25.0)


def test_injection_flux_and_position_without_noise():
    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 5.0, SHAPE).astype(np.float32)
    weight = np.full(SHAPE, 1 / 25.0, np.float32)
    image_before, weight_before = image.copy(), weight.copy()
    fakes = Table({"x": [100.3, 300.77, 451.5], "y": [200.6, 700.01, 99.5],
                   "mag": [20.0, 21.0, 22.0]})
    res = inject_fakes(image, weight, MoffatPSF(), fakes, zp=30.0, add_noise=False)
    np.testing.assert_array_equal(image, image_before)
    np.testing.assert_array_equal(weight, weight_before)
    np.testing.assert_array_equal(res.weight, weight)
    assert res.image.dtype == np.float32 and res.image is not image
    diff = res.image.astype(np.float64) - image
    yy, xx = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    for x, y, f in zip(fakes["x"], fakes["y"], res.flux_e):
        box = (np.abs(xx - x) <= 25) & (np.abs(yy - y) <= 25)
        total = diff[box].sum()
        assert total == pytest.approx(f, rel=0.005)
        cx = (diff[box] * xx[box]).sum() / total
        cy = (diff[box] * yy[box]).sum() / total
        assert abs(cx - x) < 0.02 and abs(cy - y) < 0.02
    np.testing.assert_allclose(res.flux_e, 10 ** (-0.4 * (np.array([20, 21, 22.0]) - 30)))


def test_injection_poisson_noise_variance():
    rng = np.random.default_rng(1)
    image = np.zeros(SHAPE, np.float32)
    weight = np.full(SHAPE, 0.01, np.float32)
    weight[:, :10] = 0.0
    xs, ys = np.meshgrid(np.arange(40, 560, 45.0) + 0.3, np.arange(40, 960, 45.0) + 0.7)
    fakes = Table({"x": xs.ravel(), "y": ys.ravel(), "mag": np.full(xs.size, 17.0)})
    clean = inject_fakes(image, weight, MoffatPSF(), fakes, zp=30.0, add_noise=False)
    noisy = inject_fakes(image, weight, MoffatPSF(), fakes, zp=30.0, rng=rng, add_noise=True)
    model = clean.image.astype(np.float64)
    resid = noisy.image.astype(np.float64) - model
    core = model > 50.0  # Poisson close to Gaussian, float32 rounding negligible
    chi2 = np.mean(resid[core] ** 2 / model[core])
    assert chi2 == pytest.approx(1.0, abs=0.02)
    assert abs(np.mean(resid[core] / np.sqrt(model[core]))) < 0.01
    # per-fake total flux scatter = sqrt(flux)
    sums = [resid[int(y) - 20:int(y) + 21, int(x) - 20:int(x) + 21].sum()
            for x, y in zip(fakes["x"], fakes["y"])]
    assert np.std(sums) / np.sqrt(clean.flux_e[0]) == pytest.approx(1.0, abs=0.15)
    # weight: variance grows by the model, zero weight stays zero
    var_added = 1.0 / noisy.weight[:, 10:].astype(np.float64) - 100.0
    np.testing.assert_allclose(var_added, model[:, 10:], rtol=2e-3, atol=0.05)
    assert np.all(noisy.weight[:, :10] == 0)


def test_plan_avoids_masks_edges_and_neighbours():
    rng = np.random.default_rng(2)
    mask = np.zeros(SHAPE, np.int32)
    mask[300:600, 100:400] |= BADPIX
    mask[:, 250] |= CRAY
    bad = rng.random(SHAPE) < 0.002
    mask[bad] |= BADPIX
    fakes = plan_fakes(_wcs(), SHAPE, mask, n=150, mag_range=(21.0, 24.5), rng=rng,
                       edge_px=30, mask_radius_px=3, min_separation_px=12)
    assert len(fakes) == 150
    x, y = fakes["x"], fakes["y"]
    assert np.all((x >= 30) & (x <= SHAPE[1] - 31) & (y >= 30) & (y <= SHAPE[0] - 31))
    unusable = (mask & UNUSABLE) != 0
    yy, xx = np.mgrid[-3:4, -3:4]
    disk = xx ** 2 + yy ** 2 <= 9
    for xi, yi in zip(np.floor(x + 0.5).astype(int), np.floor(y + 0.5).astype(int)):
        assert not np.any(unusable[yi - 3:yi + 4, xi - 3:xi + 4] & disk)
    d = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
    assert np.min(d[np.triu_indices(len(x), 1)]) >= 12
    assert np.all((fakes["mag"] >= 21.0) & (fakes["mag"] <= 24.5))
    assert not np.any(fakes["hosted"]) and np.all(fakes["host_id"] == -1)
    ra, dec = _wcs().pixel_to_world_values(x, y)
    np.testing.assert_allclose(fakes["ra"], ra)
    np.testing.assert_allclose(fakes["dec"], dec)
    np.testing.assert_array_equal(fakes["fake_id"], np.arange(1, 151))
    # deterministic given the generator state
    a = plan_fakes(_wcs(), SHAPE, mask, n=20, mag_range=(21, 22), rng=np.random.default_rng(5))
    b = plan_fakes(_wcs(), SHAPE, mask, n=20, mag_range=(21, 22), rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a["x"], b["x"])


def test_hosted_fakes_lie_within_their_hosts():
    rng = np.random.default_rng(3)
    ng = 40
    gal = Table({"NUMBER": np.arange(101, 101 + ng),
                 "XWIN_IMAGE": rng.uniform(60, SHAPE[1] - 60, ng) + 1.0,
                 "YWIN_IMAGE": rng.uniform(60, SHAPE[0] - 60, ng) + 1.0,
                 "SPREAD_MODEL": np.where(np.arange(ng) % 4 == 0, 0.001, 0.02),
                 "FLUX_RADIUS": rng.uniform(3, 8, ng), "A_IMAGE": np.full(ng, 6.0),
                 "B_IMAGE": np.full(ng, 3.0), "THETA_IMAGE": rng.uniform(-90, 90, ng)})
    hosts = select_host_galaxies(gal, _wcs(), SHAPE)
    assert len(hosts) == 30  # the stars (SPREAD_MODEL 0.001) are not hosts
    fakes = plan_fakes(_wcs(), SHAPE, None, n=100, mag_range=(21, 24), host_fraction=0.6,
                       galaxies=gal, rng=rng, min_separation_px=2.0)
    hosted = np.asarray(fakes["hosted"])
    assert hosted.sum() == 60
    byid = {int(h["host_id"]): h for h in hosts}
    offsets = []
    for f in fakes[hosted]:
        h = byid[int(f["host_id"])]  # KeyError if hosted on a star
        dx, dy = f["x"] - h["x"], f["y"] - h["y"]
        c, s = np.cos(h["theta"]), np.sin(h["theta"])
        u, v = c * dx + s * dy, -s * dx + c * dy
        q = 0.5
        r_ell = np.hypot(u * np.sqrt(q), v / np.sqrt(q)) / h["r_half"]
        assert r_ell <= 2.0 + 1e-9
        assert r_ell == pytest.approx(f["host_offset_re"], abs=1e-9)
        offsets.append(r_ell)
    # exponential-disk light: median offset ~ 0.8 r_e after truncation at 2 r_e
    assert 0.6 < np.median(offsets) < 1.0
    assert np.all(fakes["host_id"][~hosted] == -1)


def _hosts_with_transients(rng, n_gal=30, r_half=8.0):
    """Galaxies (NUMBER 1..) each with a transient detected 0.8 r_half from its centre
    (NUMBER 1001..), and field stars (2001..): one SE catalog."""
    gx = rng.uniform(80, SHAPE[1] - 80, n_gal)
    gy = rng.uniform(80, SHAPE[0] - 80, n_gal)
    phi = rng.uniform(0, 2 * np.pi, n_gal)
    tx, ty = gx + 0.8 * r_half * np.cos(phi), gy + 0.8 * r_half * np.sin(phi)
    ns = 60
    sx, sy = rng.uniform(40, SHAPE[1] - 40, ns), rng.uniform(40, SHAPE[0] - 40, ns)
    n = 2 * n_gal + ns
    cat = Table({"NUMBER": np.concatenate([np.arange(1, n_gal + 1), np.arange(1001, 1001 + n_gal),
                                           np.arange(2001, 2001 + ns)]),
                 "XWIN_IMAGE": np.concatenate([gx, tx, sx]) + 1.0,
                 "YWIN_IMAGE": np.concatenate([gy, ty, sy]) + 1.0,
                 "SPREAD_MODEL": np.concatenate([np.full(n_gal, 0.02), np.zeros(n_gal + ns)]),
                 "FLUX_RADIUS": np.concatenate([np.full(n_gal, r_half), np.full(n_gal + ns, 2.0)]),
                 "A_IMAGE": np.full(n, 4.0), "B_IMAGE": np.full(n, 4.0),
                 "THETA_IMAGE": np.zeros(n)})
    return cat, np.column_stack([tx, ty]), np.column_stack([sx, sy])


def test_fakes_keep_clear_of_other_detections():
    """A transient detected on a host: no fake within 3 FWHM of it (nor of any detection but
    its own host), while the fakes still land on the hosts."""
    fwhm = 4.0
    sep = 3.0 * fwhm
    rng = np.random.default_rng(11)
    cat, transients, stars = _hosts_with_transients(rng)
    kw = dict(n=120, mag_range=(21, 24), host_fraction=0.5, galaxies=cat,
              min_separation_px=2.0)
    # without the rule the hosted fakes do land on the transients (the test can fail)
    free = plan_fakes(_wcs(), SHAPE, None, rng=np.random.default_rng(5), **kw)
    d_free = np.hypot(free["x"][:, None] - transients[:, 0], free["y"][:, None] - transients[:, 1])
    assert np.sum(d_free.min(axis=1) < sep) >= 10
    fakes = plan_fakes(_wcs(), SHAPE, None, rng=np.random.default_rng(5), detections=cat,
                       min_detection_separation_px=sep, **kw)
    assert len(fakes) == 120
    hosted = np.asarray(fakes["hosted"])
    assert hosted.sum() == 60 and np.all(fakes["host_id"][hosted] <= 30)
    fx, fy = np.asarray(fakes["x"]), np.asarray(fakes["y"])
    for others in (transients, stars):
        d = np.hypot(fx[:, None] - others[:, 0], fy[:, None] - others[:, 1])
        assert d.min() >= sep
    # from other galaxies too (a host's own centre may be closer)
    gxy = np.column_stack([np.asarray(cat["XWIN_IMAGE"][:30]) - 1.0,
                           np.asarray(cat["YWIN_IMAGE"][:30]) - 1.0])
    d = np.hypot(fx[:, None] - gxy[:, 0], fy[:, None] - gxy[:, 1])
    own = np.asarray(fakes["host_id"])[:, None] == np.arange(1, 31)[None, :]
    assert d[~own].min() >= sep
    assert np.min(d[own]) < sep  # hosted fakes do sit on their hosts
    # and from each other
    dd = np.hypot(fx[:, None] - fx, fy[:, None] - fy) + np.eye(len(fx)) * 1e9
    assert dd.min() >= sep


def test_match_fakes_one_to_one():
    fakes = Table({"x": [10.0, 50.0, 90.0, 130.0], "y": [10.0, 50.0, 90.0, 130.0]})
    det = Table({"XWIN_IMAGE": [11.0, 51.5, 52.0, 91.0, 300.0],  # 1-based
                 "YWIN_IMAGE": [11.0, 51.0, 51.0, 93.0, 300.0]})
    m = match_fakes(fakes, det, radius_px=1.5)
    np.testing.assert_array_equal(m.recovered, [True, True, False, False])
    np.testing.assert_array_equal(m.det_index, [0, 1, -1, -1])
    np.testing.assert_allclose(m.separation_px[:2], [0.0, 0.5])
    assert m.n_recovered == 2
    # two fakes competing for one detection: the closer one wins
    m2 = match_fakes(Table({"x": [0.0, 1.0], "y": [0.0, 0.0]}), ([0.8], [0.0]), radius_px=1.5)
    np.testing.assert_array_equal(m2.det_index, [-1, 0])
    m3 = match_fakes(fakes, ([], []))
    assert not m3.recovered.any()
