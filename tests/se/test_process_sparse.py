"""process_ccd on a simulated CCD whose Gaia table holds only a few stars: the WCS is refined by
a shift, the zeropoint comes from 1-2 stars with an honest error, each flagged with its
reason; a Gaia source with large astrometric excess noise is not used."""

from __future__ import annotations

import numpy as np
import pytest

from desgw.se.process import process_ccd


@pytest.fixture(scope="module")
def sparse_result(sim_night, sim_ccd_inputs):
    from dataclasses import replace

    _, truth = sim_night
    expnum = truth.search_expnums[0]
    inputs = sim_ccd_inputs(expnum, 28)
    ref = inputs.refcat
    g = np.asarray(ref["phot_g_mean_mag"])
    # two clean stars of G 17-18 and one "star" (a galaxy nucleus in real Gaia) whose excess
    # noise is 4.25 mas and whose magnitude is 0.5 mag off
    idx = np.flatnonzero((g > 17.0) & (g < 18.0))[:3]
    few = ref[idx]
    few["astrometric_excess_noise"] = np.array([0.3, 0.2, 4.25], dtype=np.float32)
    for col in ("phot_g_mean_mag", "phot_bp_mean_mag", "phot_rp_mean_mag"):
        few[col][2] -= 0.5
    res = process_ccd(replace(inputs, refcat=few))
    return truth, expnum, res


def test_sparse_wcs_and_zeropoint_flagged(sparse_result):
    truth, expnum, res = sparse_result
    assert set(res.flags) == {"wcs", "zeropoint"}
    assert "shift-only refinement from 2 star(s)" in res.flags["wcs"]
    assert "fewer than min_matches=8" in res.flags["wcs"]
    assert "zeropoint from 2 star(s)" in res.flags["zeropoint"]
    assert res.header["DEGRADED"] == "wcs,zeropoint"
    assert not res.qc.passed
    assert any(r.startswith("degraded wcs: ") for r in res.qc.reasons)
    assert res.astrometry.sip_order == 0 and res.astrometry.n_used == 2
    # the zeropoint from the two clean stars: within 3 sigma (and 0.05 mag) of the truth
    spec = truth.exposure_spec(expnum)
    zp_true = float(truth.ccd_row(expnum, 28)["zeropoint"]) + 2.5 * np.log10(spec.exptime)
    zp = res.zeropoint
    assert zp is not None and zp.n_used == 2 and zp.method == "sparse"
    assert 0.01 < zp.zp_err < 0.1
    assert abs(zp.zp - zp_true) < max(3 * zp.zp_err, 0.05)
    # the shifted optical-model WCS is right near the CCD centre to well under an arcsec
    x, y = np.array([1023.5]), np.array([2047.5])
    ra, dec = res.wcs.all_pix2world(x, y, 0)
    tra, tdec = truth.true_pixel_to_sky(expnum, 28, x, y)
    sep = np.hypot((ra - tra) * np.cos(np.radians(tdec)), dec - tdec) * 3600
    assert sep[0] < 0.5
