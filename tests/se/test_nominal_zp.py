"""desgw.se.nominal_zp: the nominal zeropoint of a DECam CCD from throughput, exposure time
and airmass (the real-data check against the official zeropoints is in
tests/realdata/test_realdata_nominal_zp.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from desgw.errors import NoWorkFoundError
from desgw.instrument.throughput import relative_ccd_throughput
from desgw.se.nominal_zp import NominalZeropointError, nominal_ccd_zeropoint
from desgw.se.quality import EXTINCTION, NOMINAL_ZP


@pytest.mark.parametrize("band", ["g", "r", "i", "z", "Y"])
def test_exposure_time_airmass_and_ccd_enter_as_physics_says(band):
    a = nominal_ccd_zeropoint(band, 28, 90.0, 1.0)
    # 1 e-/s at airmass 1 for the focal-plane average, moved by the CCD's relative response
    assert a.zp_per_second == pytest.approx(NOMINAL_ZP[band] + a.ccd_offset, abs=1e-12)
    assert abs(a.ccd_offset) < 0.03
    # twice the exposure: twice the electrons, 0.753 mag more
    b = nominal_ccd_zeropoint(band, 28, 180.0, 1.0)
    assert b.zp - a.zp == pytest.approx(2.5 * math.log10(2.0), abs=1e-12)
    # one more airmass: the band's extinction
    c = nominal_ccd_zeropoint(band, 28, 90.0, 2.0)
    assert a.zp - c.zp == pytest.approx(EXTINCTION[band], abs=1e-12)


@pytest.mark.parametrize("band", ["g", "r", "i", "z", "Y"])
def test_ccd_responses_scatter_about_the_focal_plane_average(band):
    t = relative_ccd_throughput(band)
    assert t.shape == (62,)
    assert abs(float(np.mean(t)) - 1.0) < 0.005 and 0.002 < float(np.std(t)) < 0.02
    # photon- and energy-weighted band integrals agree to < 1 % (the CCDs differ in shape
    # little: a red-edge shift moves both alike)
    assert np.max(np.abs(t / relative_ccd_throughput(band, per_photon=False) - 1)) < 0.01


@pytest.mark.parametrize(("args", "message"), [
    (("u", 28, 90.0, 1.2), "band"), (("r", 0, 90.0, 1.2), "CCD number 0"),
    (("r", 63, 90.0, 1.2), "CCD number 63"), (("r", 28, 0.0, 1.2), "exposure time"),
    (("r", 28, 90.0, 0.9), "airmass"), (("r", 28, 90.0, math.nan), "airmass"),
])
def test_what_cannot_be_predicted_is_a_clear_error(args, message):
    with pytest.raises(NominalZeropointError, match=message) as info:
        nominal_ccd_zeropoint(*args)
    assert isinstance(info.value, NoWorkFoundError)
