"""The simulator's amplifier non-linearity and the linearity table it writes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sim_render_factory import CCD, QUIET, make_spec, objects_at

from desgw.instrument import get_ccd
from desgw.io.calib import read_linearity
from desgw.sim.calib import make_detector_calib, write_calibrations
from desgw.sim.detector import NONLINEARITY_RANGE, linear_adu, nonlinear_adu
from desgw.sim.render import render_ccd


def test_model_shape_and_inverse():
    sat = 44144.0
    adu = np.linspace(-50.0, 65535.0, 20001)
    for a in (0.0, 0.005, 0.015):
        rec = nonlinear_adu(adu, a, sat)
        assert np.all(np.diff(rec) > 0)  # monotonic over the 16-bit range
        np.testing.assert_allclose(linear_adu(rec, a, sat), adu, atol=1e-6)
    # loss a at SATURATA, a (20k/sat)^2 at 20k ADU, ~0 at the sky level
    assert 1 - nonlinear_adu(sat, 0.015, sat) / sat == pytest.approx(0.015)
    assert 1 - nonlinear_adu(20000.0, 0.015, sat) / 20000 == pytest.approx(0.015 * (20000 / sat) ** 2)
    assert 1 - nonlinear_adu(1000.0, 0.015, sat) / 1000 < 1e-5
    f32 = nonlinear_adu(np.array([30000.0], np.float32), 0.01, sat)
    assert f32.dtype == np.float32


def test_camera_coefficients_seeded_and_switchable():
    cal = make_detector_calib([5, 35], seed=21, band="i")
    again = make_detector_calib([35], seed=21, band="i")
    off = make_detector_calib([5, 35], seed=21, band="i", nonlinearity=False)
    lo, hi = NONLINEARITY_RANGE
    for c in (5, 35):
        coef = cal.ccds[c].nonlinearity
        assert set(coef) == {"A", "B"} and all(lo <= v <= hi for v in coef.values())
        assert off.ccds[c].nonlinearity == {"A": 0.0, "B": 0.0}
        # the rest of the camera does not depend on the non-linearity stream
        assert off.ccds[c].qe == cal.ccds[c].qe
        assert off.ccds[c].flat_seed == cal.ccds[c].flat_seed
    assert again.ccds[35].nonlinearity == cal.ccds[35].nonlinearity
    assert cal.ccds[5].nonlinearity != cal.ccds[35].nonlinearity
    other = make_detector_calib([35], seed=22, band="i")
    assert other.ccds[35].nonlinearity != cal.ccds[35].nonlinearity
    # switched off: the table is the identity
    t = off.linearity_table(35)
    np.testing.assert_array_equal(t.linear_a, t.adu)
    np.testing.assert_array_equal(t.linear_b, t.adu)


def test_written_table_inverts_the_truth(tmp_path):
    cal = make_detector_calib([35, 5], seed=4, band="r")
    paths = write_calibrations(tmp_path, cal)
    assert paths["linearity"] == tmp_path / "calib" / "linearity.fits"
    assert paths["linearity"].stat().st_size < 300_000  # ~100 kB per CCD
    for c in (35, 5):
        table = read_linearity(paths["linearity"], c)
        for name, amp in get_ccd(c).amps.items():
            a = cal.ccds[c].nonlinearity[name]
            true = np.linspace(0.0, 1.02 * amp.saturation_adu, 200_001)  # up to full well
            rec = nonlinear_adu(true, a, amp.saturation_adu)
            back = np.interp(rec, table.adu, table.linear(name))
            assert np.abs(back - true).max() < 0.05  # measured < 1e-3 ADU
            assert np.max(true - rec) > 0.004 * amp.saturation_adu  # the effect is there


def test_rendered_raw_follows_the_model_per_amplifier(calib_35):
    """Noise-free flat sky plus a bright star: recorded = model(true) per amplifier, with the
    bias level added after the non-linearity (overscan unaffected)."""
    spec = make_spec(sky=17.0, exptime=90.0, variation=False)
    objs = objects_at(spec, CCD, [300.0, 1500.0], [1000.0, 3000.0], [15.3, 15.3])
    base = dataclasses.replace(QUIET, bias_overscan=True)
    lin = render_ccd(spec, objs, CCD, switches=base, rng=np.random.default_rng(2), calib=calib_35)
    non = render_ccd(spec, objs, CCD, switches=dataclasses.replace(base, nonlinearity=True),
                     rng=np.random.default_rng(2), calib=calib_35)
    for name, amp in get_ccd(CCD).amps.items():
        level = lin.truth.bias_adu[name]
        assert non.truth.bias_adu[name] == level
        o = amp.raw_overscan
        assert np.array_equal(lin.raw[o.y0:o.y1, o.x0:o.x1], non.raw[o.y0:o.y1, o.x0:o.x1])
        d = amp.raw_data
        over_row = lin.raw[o.y0:o.y1, o.x0:o.x1].astype(np.float64).mean(axis=1)[:, None]
        true = lin.raw[d.y0:d.y1, d.x0:d.x1].astype(np.float64) - over_row
        rec = non.raw[d.y0:d.y1, d.x0:d.x1].astype(np.float64) - over_row
        model = nonlinear_adu(true, calib_35.ccds[CCD].nonlinearity[name], amp.saturation_adu)
        assert lin.raw[d.y0:d.y1, d.x0:d.x1].max() < 65535  # nothing clipped
        assert np.abs(rec - model).max() <= 1.5  # rounding of both renders
        bright = true > 0.5 * amp.saturation_adu
        assert bright.sum() > 20 and np.all((true - rec)[bright] > 0.0015 * true[bright])


@pytest.fixture(scope="module")
def calib_35():
    return make_detector_calib([CCD], seed=9, band="r")
