"""The simulated camera (DetectorCalib) and its calibration files."""

import numpy as np
import pytest
from scipy.ndimage import uniform_filter

from desgw.instrument import defect_boxes, get_ccd
from desgw.io.calib import read_calib
from desgw.sim.calib import BADPIX, make_detector_calib, throughput_qe, write_calibrations


@pytest.fixture(scope="module")
def calib():
    return make_detector_calib([5, 35], seed=21, band="i")


def test_flat_pattern_statistics(calib):
    f32 = calib.flat(35)
    assert f32.shape == (4096, 2048) and f32.dtype == np.float32
    f = f32.astype(np.float64)
    assert f.mean() == pytest.approx(1.0, abs=1e-6)
    smooth = uniform_filter(f, 33)
    assert 0.015 < smooth.std() < 0.04  # large-scale 2-3 %
    assert (f / smooth).std() == pytest.approx(0.01, rel=0.1)  # pixel-to-pixel 1 %


def test_calib_is_fixed_by_seed(calib):
    again = make_detector_calib([35], seed=21, band="i")
    other = make_detector_calib([35], seed=22, band="i")
    assert np.array_equal(calib.flat(35), again.flat(35))
    assert np.array_equal(calib.bias_e(35), again.bias_e(35))
    assert calib.ccds[35].qe == again.ccds[35].qe
    assert not np.array_equal(calib.flat(35), other.flat(35))


def test_qe_from_real_throughput(calib):
    qe = throughput_qe("i")
    assert qe.shape == (62,) and np.all(np.abs(qe - 1) < 0.05) and qe.std() > 0.003
    for c in (5, 35):
        assert calib.ccds[c].qe == pytest.approx(qe[c - 1], abs=0.015)


def test_bpm_marks_real_defects_and_hot_pixels(calib):
    bpm = calib.bpm(5)
    for x0, y0, w, h in defect_boxes(5):
        assert np.all(bpm[y0:y0 + h, x0:x0 + w] & BADPIX)
    c = calib.ccds[5]
    assert np.all(bpm[c.hot_y, c.hot_x] & BADPIX)


@pytest.mark.slow
def test_write_calibrations_round_trip(calib, tmp_path):
    paths = write_calibrations(tmp_path, calib)
    assert paths["flat"].name == "flat_i.fits.fz"
    for ccd in (5, 35):
        # the master bias is the true structure plus the noise of a 25-frame average,
        # and its quantised compression adds well under a tenth of that noise
        bias = read_calib(paths["bias"], "bias", ccd).astype(np.float64)
        diff = bias - calib.bias_e(ccd)
        rn = np.mean([a.read_noise_e for a in get_ccd(ccd).amps.values()])
        assert abs(diff.mean()) < 0.01
        assert diff.std() == pytest.approx(rn / 5.0, rel=0.05)
        quant = bias - calib.master_bias_e(ccd)
        assert quant.std() < 0.1 * rn / 5.0
        assert np.array_equal(read_calib(paths["bpm"], "bpm", ccd) & BADPIX, calib.bpm(ccd) & BADPIX)
        dome = read_calib(paths["flat"], "flat", ccd).astype(np.float64)
        assert dome.mean() == pytest.approx(1.0, abs=1e-5)
        # dividing by the dome flat removes the pattern up to its own 0.1 % noise
        assert (calib.flat(ccd) / dome).std() == pytest.approx(0.001, rel=0.1)
