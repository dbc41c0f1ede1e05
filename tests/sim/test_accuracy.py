"""desgw.sim.accuracy: the truth helpers of the tests and the science benchmark."""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from desgw.sim.accuracy import blank_sky, expected_snr, isolated, map_pixels


def test_isolated_counts_only_brighter_neighbours_within_the_radius():
    t = Table({"x": [100.0, 105.0, 300.0, 306.0, 500.0], "y": [100.0, 100.0, 50.0, 50.0, 9.0],
               "flux_e": [1000.0, 5.0, 1000.0, 2000.0, 1.0]})
    got = isolated(t, radius=8.0, frac=0.01)
    # 0: its neighbour is 0.5 % of it; 1: next to a brighter one; 2: a brighter one 6 px away;
    # 3: its neighbour is fainter but above 1 %; 4: alone
    assert got.tolist() == [True, False, False, False, True]
    assert isolated(t, radius=4.0, frac=0.01).tolist() == [True, True, True, True, True]
    assert isolated(t[:0], radius=4.0, frac=0.01).shape == (0,)


def test_blank_sky_radius_grows_with_brightness():
    t = Table({"x": [50.0, 250.0], "y": [50.0, 150.0], "mag": [24.0, 18.0]})
    b = blank_sky(t, (300, 400))
    assert not b[50, 50 + 7] and b[50, 50 + 13]  # mag 24: 8 px (the 12 px band)
    assert not b[150, 250 + 30] and b[150, 250 + 41]  # mag 18: 32 px (the 40 px band)
    assert b.mean() > 0.8


def test_expected_snr_is_five_at_the_limit_and_scales_with_flux():
    np.testing.assert_allclose(expected_snr([23.0, 20.5, 25.5], 23.0), [5.0, 50.0, 0.5])


def test_map_pixels_uses_the_true_astrometry():
    class FakeTruth:  # a shift of (+3, -2) px between two CCDs through a made-up sky
        def true_pixel_to_sky(self, e, c, x, y):
            return np.asarray(x) + 10.0 * c, np.asarray(y)

        def true_sky_to_pixel(self, e, c, ra, dec):
            return np.asarray(ra) - 10.0 * c, np.asarray(dec) - 2.0 * (e == 2)

    x, y = map_pixels(FakeTruth(), 1, 5, 2, 4, np.array([1.0, 2.0]), np.array([7.0, 8.0]))
    np.testing.assert_allclose(x, [11.0, 12.0])
    np.testing.assert_allclose(y, [5.0, 6.0])
