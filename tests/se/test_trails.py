"""Satellite trails (the simulator's own line renderer) are found and masked; stars are not."""

from __future__ import annotations

import numpy as np
import pytest
from test_psf_synth import make_field

from desgw.instrument import DECAM_DISTORTION, focal_to_tangent, pixel_to_focal
from desgw.se.trails import TrailConfig, find_trails
from desgw.sim.detector import TRUTH_SATELLITE, SatelliteTrail, add_satellite

CCD = 35
FWHM = 4.0


def _field():
    return make_field(shape=(4096, 2048), n_stars=500, n_gal=80, fwhm0=FWHM, seed=21,
                      mag_range=(15.0, 22.0), n_masked_stars=0)


def _with_trail(e_per_arcsec: float, angle_deg: float, seed: int = 1):
    f = _field()
    xi, eta = focal_to_tangent(*pixel_to_focal(CCD, np.array([900.0]), np.array([2300.0])),
                               DECAM_DISTORTION)
    trail = SatelliteTrail(xi0=float(xi[0]), eta0=float(eta[0]), angle_deg=angle_deg,
                           e_per_arcsec=e_per_arcsec, mag=9.0)
    light = np.zeros(f.image.shape, dtype=np.float32)
    truth = np.zeros(f.image.shape, dtype=np.uint8)
    assert add_satellite(light, truth, trail, CCD, DECAM_DISTORTION, fwhm_pix=FWHM, beta=3.0,
                         pixel_scale_arcsec=0.263)
    rng = np.random.default_rng(seed)
    noise = np.asarray(rng.normal(size=light.shape), dtype=np.float32) * np.sqrt(light)
    image = f.image + light + noise
    return f, image - f.sky, (truth & TRUTH_SATELLITE) != 0, light


def test_no_trail_no_mask():
    f = _field()
    res = find_trails(f.image - f.sky, f.weight, f.mask, fwhm_px=FWHM)
    assert res.trails == () and not res.mask.any()


@pytest.mark.parametrize("e_per_arcsec,angle", [(6000.0, 33.0), (1200.0, 101.0)],
                         ids=["bright", "faint"])
def test_trail_masked_stars_kept(e_per_arcsec, angle):
    f, sub, _, light = _with_trail(e_per_arcsec, angle)
    res = find_trails(sub, f.weight, f.mask, fwhm_px=FWHM, config=TrailConfig())
    assert len(res.trails) == 1
    sigma = float(np.sqrt(np.median(f.sky) + f.read_noise ** 2))
    # the trail's light is masked wherever it reaches 0.2 pixel sigma (a wing below that has
    # S/N < 1 over a PSF footprint), and the masked band holds nearly all of it
    assert res.mask[light > 0.2 * sigma].mean() > 0.99
    assert light[res.mask].sum() > 0.97 * light.sum()
    # stars: none away from the trail is masked, and the band is narrow
    sx, sy = np.round(f.stars["x"]).astype(int), np.round(f.stars["y"]).astype(int)
    far = light[sy, sx] == 0.0  # beyond the renderer's 20 alpha (~80 px) of the line
    assert far.sum() > 400
    assert not res.mask[sy[far], sx[far]].any()
    assert res.mask.mean() < 0.02


@pytest.mark.parametrize("my, mx", [(37, 19), (64, 128), (5, 1)])
def test_grid_votes_are_the_votes_of_the_block_centres(my, mx):
    from desgw.se.trails import _grid_votes, _hough_votes

    thetas = np.deg2rad(np.arange(0.0, 180.0, 0.5))
    diag = float(np.hypot(my, mx))
    rho = np.arange(-diag, diag + 1.0, 1.0)
    yy, xx = np.mgrid[0:my, 0:mx]
    args = (np.cos(thetas), np.sin(thetas), float(rho[0]), len(rho) - 1)
    want = _hough_votes(xx.ravel() + 0.5, yy.ravel() + 0.5, *args)
    got = _grid_votes(my, mx, *args)
    np.testing.assert_array_equal(got, want)  # bit for bit
    assert np.all(got.sum(axis=1) == my * mx)
