"""Gaia -> DES transformations."""

from __future__ import annotations

import numpy as np
import pytest

from desgw.refcat.transforms import (
    BANDS,
    TRANSFORM_BANDS,
    VALID_BP_RP,
    GaiaToDesResult,
    TransformUnavailableError,
    des_minus_g,
    gaia_g_only,
    gaia_to_des,
)


def test_band_lists():
    assert BANDS == ("g", "r", "i", "z", "Y")
    assert TRANSFORM_BANDS == ("g", "r", "i", "z")
    assert set(VALID_BP_RP) == set(TRANSFORM_BANDS)
    for lo, hi in VALID_BP_RP.values():
        assert lo < 0.5 < 1.5 < hi


def test_known_values_from_published_coefficients():
    # hand evaluation of the Legacy Surveys (legacypipe gaia_to_decam) polynomials at
    # BP-RP = 1: the sum of the coefficients
    assert des_minus_g("g", 1.0) == pytest.approx(0.4678115837, abs=1e-9)
    assert des_minus_g("r", 1.0) == pytest.approx(-0.1155761749, abs=1e-9)
    assert des_minus_g("i", 1.0) == pytest.approx(-0.2820783365, abs=1e-9)
    assert des_minus_g("z", 1.0) == pytest.approx(-0.3455318284, abs=1e-9)
    # at BP-RP = 0 only the constant term survives
    assert des_minus_g("g", 0.0) == pytest.approx(-0.1178631039, abs=1e-12)
    assert des_minus_g("z", 0.0) == pytest.approx(0.4811198057, abs=1e-12)


def test_solar_colours_are_plausible():
    # a solar-type star has BP-RP ~ 0.82 and DES colours g-r ~ 0.44, r-i ~ 0.12, i-z ~ 0.03
    c = 0.82
    g, r, i, z = (des_minus_g(b, c) for b in "griz")
    assert 0.36 < g - r < 0.50
    assert 0.06 < r - i < 0.18
    assert -0.03 < i - z < 0.08


@pytest.mark.parametrize("band", TRANSFORM_BANDS)
def test_continuous_and_smooth(band):
    lo, hi = VALID_BP_RP[band]
    x = np.linspace(lo, hi, 20001)
    y = des_minus_g(band, x)
    step = np.abs(np.diff(y))
    assert step.max() < 2.5 * (x[1] - x[0])  # slope bounded: no jumps or wild wiggles
    assert np.all(np.isfinite(y))


@pytest.mark.parametrize("band,sign", [("g", 1), ("i", -1), ("z", -1)])
def test_monotonic_bands(band, sign):
    lo, hi = VALID_BP_RP[band]
    x = np.linspace(lo, hi, 4001)
    y = sign * des_minus_g(band, x)
    # monotonic up to 1e-4 mag (the i polynomial flattens and turns by 2e-5 mag at 4.085)
    assert np.all(np.maximum.accumulate(y) - y <= 1e-4)
    assert y[-1] - y[0] > 1.0


def test_r_band_has_single_minimum():
    lo, hi = VALID_BP_RP["r"]
    x = np.linspace(lo, hi, 4001)
    d = np.diff(des_minus_g("r", x))
    assert np.count_nonzero(np.diff(np.sign(d)) != 0) == 1


def test_colour_ordering_red_star_is_redder():
    # DES g-i must increase with BP-RP
    x = np.linspace(-0.5, 4.0, 200)
    gi = des_minus_g("g", x) - des_minus_g("i", x)
    assert np.all(np.diff(gi) > 0)


def test_gaia_to_des_valid_and_nan():
    g = np.array([15.0, 15.0, 15.0, np.nan, 15.0, 15.0])
    bp = np.array([15.5, 15.0 + 4.5, 14.0, 15.5, np.nan, 15.0 - 0.6 + 0.0])
    rp = np.array([14.5, 15.0, 15.0, 14.5, 14.5, 15.0])
    res = gaia_to_des("g", g, bp, rp)
    assert isinstance(res, GaiaToDesResult)
    assert res.mag.dtype == np.float64 and res.valid.dtype == bool
    # colours: 1.0 (ok), 4.5 (too red), -1.0 (too blue), G NaN, BP NaN, -0.6 (edge, ok)
    np.testing.assert_array_equal(res.valid, [True, False, False, False, False, True])
    assert np.all(np.isnan(res.mag[~res.valid]))
    assert res.mag[0] == pytest.approx(15.0 + des_minus_g("g", 1.0), abs=1e-12)
    assert res.mag[5] == pytest.approx(15.0 + des_minus_g("g", -0.6), abs=1e-12)
    assert res.band == "g"


def test_float32_inputs_and_scalars():
    res = gaia_to_des("r", np.float32(16.0), np.float32(16.5), np.float32(15.5))
    assert res.mag.shape == ()
    assert bool(res.valid)
    assert float(res.mag) == pytest.approx(16.0 + des_minus_g("r", 1.0), abs=1e-6)


def test_unknown_band_and_y():
    with pytest.raises(ValueError, match="'u'"):
        gaia_to_des("u", 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="'G'"):
        des_minus_g("G", 1.0)
    with pytest.raises(TransformUnavailableError, match="'Y'"):
        gaia_to_des("Y", 15.0, 15.5, 14.5)
    assert issubclass(TransformUnavailableError, ValueError)


def test_g_only_matches_original_pipeline():
    g = np.array([14.0, 18.5], dtype=np.float32)
    out = gaia_g_only(g)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, g.astype(np.float64))
    out[0] = 0
    assert g[0] == 14.0  # a copy
