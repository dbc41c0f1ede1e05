import numpy as np
import pytest

from desgw.instrument import (
    DECAM_DISTORTION, Pointing, ccd_corners_sky, pixel_scale_arcsec, pixel_to_sky, sky_to_pixel,
)
from desgw.instrument.optics import fit_distortion, reference_corners, sky_to_tangent


def test_shipped_distortion_is_the_fit_to_real_corners():
    d, rms = fit_distortion()
    assert rms < 1.5  # arcsec, over 60 CCDs x 4 corners
    assert d.scale_deg_per_mm == pytest.approx(DECAM_DISTORTION.scale_deg_per_mm, rel=1e-6)
    assert d.k2 == pytest.approx(DECAM_DISTORTION.k2, rel=1e-3)


def test_corners_land_where_real_decam_puts_them():
    # Corner sets vs the real on-sky corner offsets, after removing the reference exposure's
    # small overall offset and rotation: every CCD within a few arcsec.
    ref = reference_corners()
    p = Pointing(0.0, 0.0)
    model, target = [], []
    for ccdnum, r in ref.items():
        if ccdnum == 31:
            continue
        ra, dec = ccd_corners_sky(ccdnum, p)
        xi, eta = sky_to_tangent(ra, dec, p)
        for x, y in zip(xi, eta):
            j = np.argmin(np.hypot(r[:, 0] - x, r[:, 1] - y))
            model.append((x, y))
            target.append(r[j])
    m, t = np.array(model), np.array(target)
    # best 2D similarity transform (offset + rotation), as the reference pointing is unknown
    mc, tc = m - m.mean(0), t - t.mean(0)
    u, _, vt = np.linalg.svd(mc.T @ tc)
    rot = u @ vt
    resid = (mc @ rot - tc) * 3600
    assert np.sqrt((resid ** 2).sum(1)).max() < 5.0


def test_pixel_scale_centre_and_edge():
    centre = pixel_scale_arcsec(35, 1024, 2048)
    edge = pixel_scale_arcsec(1, 0, 0)
    assert 0.262 < centre < 0.2645
    assert edge < centre  # the DECam plate scale shrinks towards the edge of the field


@pytest.mark.parametrize("dec0", [-30.0, 0.0, 75.0])
def test_round_trip_pixel_sky(dec0):
    p = Pointing(359.9, dec0, 0.03)
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 2047, 500)
    y = rng.uniform(0, 4095, 500)
    for ccdnum in (1, 28, 62):
        ra, dec = pixel_to_sky(ccdnum, x, y, p)
        x2, y2 = sky_to_pixel(ccdnum, ra, dec, p)
        assert np.max(np.abs(x2 - x)) < 1e-6 and np.max(np.abs(y2 - y)) < 1e-6


def test_orientation_matches_cp_wcs():
    # real CP images: RA grows with pixel y, Dec falls with pixel x; S chips north of N chips
    p = Pointing(10.0, -20.0)
    ra, dec = pixel_to_sky(28, np.array([1000, 1001, 1000]), np.array([2000, 2000, 2001]), p)
    assert ra[2] > ra[0] and abs(ra[1] - ra[0]) < 1e-6
    assert dec[1] < dec[0]
    _, dec_s = pixel_to_sky(28, 1024, 2048, p)
    _, dec_n = pixel_to_sky(35, 1024, 2048, p)
    assert dec_s > p.dec_deg > dec_n
