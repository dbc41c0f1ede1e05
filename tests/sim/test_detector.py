"""Detector effects of the renderer: overscan, gain and read noise, crosstalk, saturation and bleed,
cosmic rays, satellite, switches."""

import dataclasses

import numpy as np
import pytest

from desgw.instrument import get_ccd, terms_for_victim
from desgw.sim.calib import make_detector_calib
from desgw.sim.detector import (CR_RATE_PER_CM2_MIN, FULL_WELL_FACTOR, TRUTH_BLEED, TRUTH_COSMIC_RAY,
                                TRUTH_HOT, TRUTH_SATELLITE, TRUTH_SATURATED, SatelliteTrail,
                                add_satellite, bleed_columns)
from desgw.sim.model import SimSwitches
from desgw.sim.render import render_ccd, render_exposure

from sim_render_factory import CCD, QUIET, data_e, make_spec, objects_at


@pytest.fixture(scope="module")
def calib():
    return make_detector_calib([CCD, 36], seed=11, band="r")


@pytest.fixture(scope="module")
def sky_pair(calib):
    """Two full-physics renders of an empty sky (different seeds), no flat/defects/CRs."""
    spec = make_spec(sky=20.5)
    sw = SimSwitches(flat=False, bad_pixels=False, cosmic_rays=False, satellite=False,
                     sky_gradient=False, crosstalk=False)
    empty = objects_at(spec, CCD, [], [], [])
    return spec, [render_ccd(spec, empty, CCD, switches=sw, rng=np.random.default_rng(s), calib=calib)
                  for s in (1, 2)]


def _overscan_row_level(raw, amp):
    o = amp.raw_overscan
    return raw[o.y0:o.y1, o.x0:o.x1].astype(np.float64)


def test_overscan_is_bias_plus_read_noise_per_amp(sky_pair):
    _, (r, _) = sky_pair
    means = {}
    for name, amp in get_ccd(CCD).amps.items():
        over = _overscan_row_level(r.raw, amp)
        means[name] = over.mean()
        assert over.mean() == pytest.approx(r.truth.bias_adu[name], abs=4.0)  # drift is a few ADU
        resid = over - over.mean(axis=1, keepdims=True)
        sigma = np.sqrt(resid.var() * over.shape[1] / (over.shape[1] - 1))
        expect = np.sqrt((amp.read_noise_e / amp.gain) ** 2 + 1 / 12)  # + rounding
        assert sigma == pytest.approx(expect, rel=0.05)
    assert abs(means["A"] - means["B"]) > 5.0


def test_row_drift_is_common_to_data_and_overscan(calib):
    spec = make_spec(sky=30.0)
    sw = dataclasses.replace(QUIET, bias_overscan=True)
    r = render_ccd(spec, objects_at(spec, CCD, [], [], []), CCD, switches=sw,
                   rng=np.random.default_rng(7), calib=calib)
    for amp in get_ccd(CCD).amps.values():
        d, o = amp.raw_data, amp.raw_overscan
        data_rows = np.median(r.raw[d.y0:d.y1, d.x0:d.x1], axis=1)
        over_rows = np.median(r.raw[o.y0:o.y1, o.x0:o.x1], axis=1)
        assert np.ptp(over_rows) >= 1.0  # there is a drift...
        diff = (data_rows - over_rows)[300:-300]  # past the start-of-readout transient
        assert np.ptp(diff) <= 1.0  # ...and overscan subtraction removes it


def test_gain_and_read_noise_recovered(sky_pair):
    _, (r1, r2) = sky_pair
    for _name, amp in get_ccd(CCD).amps.items():
        d = amp.raw_data
        rows = slice(d.y0 + 500, d.y1 - 500)
        cols = slice(d.x0 + 50, d.x1 - 50)
        b1 = _overscan_row_level(r1.raw, amp).mean(axis=1)[500:-500, None]
        b2 = _overscan_row_level(r2.raw, amp).mean(axis=1)[500:-500, None]
        a1 = r1.raw[rows, cols] - b1
        a2 = r2.raw[rows, cols] - b2
        o = _overscan_row_level(r1.raw, amp)
        rn_adu2 = (o - o.mean(axis=1, keepdims=True)).var() * 50 / 49
        var_signal = np.var(a1 - a2) / 2 - rn_adu2
        gain = 0.5 * (a1.mean() + a2.mean()) / var_signal
        assert gain == pytest.approx(amp.gain, rel=0.03)
        assert np.sqrt(rn_adu2 - 1 / 12) * amp.gain == pytest.approx(amp.read_noise_e, rel=0.05)


def test_crosstalk_ghost_amplitude_and_position(calib):
    # a bright, wide star on amp B (trimmed x >= 1024 on N4), below the non-linear level; the
    # same noise in both renders (crosstalk draws no random numbers) dithers the ADU rounding
    spec = make_spec(sky=22.0, fwhm=2.0, variation=False)
    objs = objects_at(spec, CCD, [1300.0], [2000.0], [14.1])
    sw = dataclasses.replace(QUIET, noise=True)
    on = render_ccd(spec, objs, CCD, switches=dataclasses.replace(sw, crosstalk=True),
                    rng=np.random.default_rng(0), calib=calib)
    off = render_ccd(spec, objs, CCD, switches=sw, rng=np.random.default_rng(0), calib=calib)
    ccd = get_ccd(CCD)
    term = next(t for t in terms_for_victim(CCD) if t.source_ccd == CCD and t.victim_amp == "A")
    src, vic = ccd.amps[term.source_amp], ccd.amps[term.victim_amp]
    diff = on.raw.astype(np.float64) - off.raw
    ghost = diff[vic.raw_data.y0:vic.raw_data.y1, vic.raw_data.x0:vic.raw_data.x1]
    source = off.raw[src.raw_data.y0:src.raw_data.y1, src.raw_data.x0:src.raw_data.x1].astype(np.float64)
    assert 20000 < source.max() < term.src_nl
    sy, sx = np.unravel_index(np.argmax(source), source.shape)
    assert src.readout_left != vic.readout_left  # N4's amps read out at opposite sides
    gx = source.shape[1] - 1 - sx  # mirrored in x
    h = 30
    sbox = source[sy - h:sy + h + 1, sx - h:sx + h + 1]
    gbox = ghost[sy - h:sy + h + 1, gx - h:gx + h + 1][:, ::-1]
    # amplitude: coeff x source ADU (rounding noise ~17 ADU on ~950)
    assert gbox.sum() == pytest.approx(term.coeff * sbox.sum(), rel=0.06)
    yy, xx = np.mgrid[-h:h + 1, -h:h + 1]
    peak = gbox > 3
    assert abs((gbox * xx)[peak].sum() / gbox[peak].sum()) < 0.5
    assert abs((gbox * yy)[peak].sum() / gbox[peak].sum()) < 0.5
    # the ghost is only where the source is bright
    assert abs(ghost[:1000].mean()) < 0.05


def test_crosstalk_from_neighbour_ccd(calib):
    spec = make_spec(sky=30.0)
    term = next(t for t in terms_for_victim(CCD) if t.source_ccd != CCD)
    src_amp = get_ccd(term.source_ccd).amps[term.source_amp]
    x = 0.5 * (src_amp.trimmed.x0 + src_amp.trimmed.x1)
    objs = objects_at(spec, term.source_ccd, [x], [2000.0], [14.0])
    sw = dataclasses.replace(QUIET, crosstalk=True)
    with_n = render_exposure(spec, objs, [CCD], switches=sw, seed=1, calib=calib)[0]
    without = render_exposure(spec, objs, [CCD], switches=sw, seed=1, calib=calib,
                              crosstalk_neighbours=False)[0]
    assert with_n.truth.crosstalk_missing == () and without.truth.crosstalk_missing == (term.source_ccd,)
    d = with_n.raw.astype(np.float64) - without.raw
    assert d.max() >= 1.0  # a ghost of a 14th mag star at 6.7e-5 is a few ADU


def test_saturation_and_bleed(calib):
    spec = make_spec(sky=30.0)
    objs = objects_at(spec, CCD, [400.0], [2000.0], [9.0])
    sw = dataclasses.replace(QUIET, saturation=True, bias_overscan=True)
    r = render_ccd(spec, objs, CCD, switches=sw, rng=np.random.default_rng(0), calib=calib)
    amp = get_ccd(CCD).amps["A"]
    sat = (r.truth.mask & TRUTH_SATURATED) > 0
    bleed = (r.truth.mask & TRUTH_BLEED) > 0
    assert sat.sum() > 100 and bleed.sum() > 50
    ys, xs = np.nonzero(bleed)
    assert np.ptp(ys) > 3 * np.ptp(xs)  # trails run along columns
    d = amp.raw_data
    trim = amp.trimmed
    raw_sat = r.raw[d.y0:d.y1, d.x0:d.x1][sat[trim.y0:trim.y1, trim.x0:trim.x1]]
    level = FULL_WELL_FACTOR * amp.saturation_adu
    over = _overscan_row_level(r.raw, amp).mean()
    assert np.all(np.abs(raw_sat - over - level) < 3.0)  # bias structure ~1 e-, rounding
    assert np.all(raw_sat - over >= amp.saturation_adu)  # SE sees them as saturated
    # charge is conserved by bleeding (the star is far from the top and bottom edges)
    assert r.truth.bleed_lost_e == 0.0
    img = data_e(r.raw, CCD, overscan=True)
    assert img.sum() == pytest.approx(r.truth.objects.flux_e[0] + calib.bias_e(CCD).sum(), rel=2e-3)


def test_bleed_columns_conserves_charge_and_caps():
    img = np.zeros((200, 3), np.float32)
    img[100, 1] = 1e6
    img[103, 1] = 3e5
    img[197, 2] = 1e6  # near the top: part of it is pushed off the CCD
    fw = np.array([1e5, 1e5, 1e5])
    mask = np.zeros(img.shape, np.uint8)
    lost = bleed_columns(img, fw, mask)
    assert img.max() <= 1e5
    assert img.sum() + lost == pytest.approx(2.3e6, rel=1e-6)
    assert lost > 0
    # 1.3e6 e- in the column: 12 pixels at full well and two half-filled ends
    assert np.count_nonzero(img[:, 1] >= 1e5) == 12
    assert np.count_nonzero((img[:, 1] > 0) & (img[:, 1] < 1e5)) == 2
    assert np.all(mask[img >= 1e5] & TRUTH_SATURATED)


def test_cosmic_rays_rate_and_mask(calib):
    spec = make_spec(sky=30.0)
    sw = dataclasses.replace(QUIET, cosmic_rays=True)
    r = render_ccd(spec, objects_at(spec, CCD, [], [], []), CCD, switches=sw,
                   rng=np.random.default_rng(3), calib=calib)
    area = 2048 * 4096 * 0.0015**2
    expect = CR_RATE_PER_CM2_MIN * area * spec.exptime / 60
    assert abs(r.truth.n_cosmic_rays - expect) < 5 * np.sqrt(expect)
    cr = (r.truth.mask & TRUTH_COSMIC_RAY) > 0
    img = data_e(r.raw, CCD)
    assert img[cr].min() >= 5.0 and img[~cr].max() < 15.0
    off = render_ccd(spec, objects_at(spec, CCD, [], [], []), CCD, switches=QUIET,
                     rng=np.random.default_rng(3), calib=calib)
    assert off.truth.n_cosmic_rays == 0 and not off.truth.mask.any()


def test_satellite_trail_crosses_ccd():
    img = np.zeros((4096, 2048), np.float32)
    mask = np.zeros(img.shape, np.uint8)
    from desgw.instrument import DECAM_DISTORTION, focal_to_tangent, pixel_to_focal

    xi, eta = focal_to_tangent(*pixel_to_focal(CCD, 1000.0, 2000.0), DECAM_DISTORTION)
    trail = SatelliteTrail(float(xi), float(eta), 30.0, 2000.0, 8.0)
    assert add_satellite(img, mask, trail, CCD, DECAM_DISTORTION, fwhm_pix=3.8, beta=3.0,
                         pixel_scale_arcsec=0.263)
    on = (mask & TRUTH_SATELLITE) > 0
    assert on.sum() > 2000
    ys = np.nonzero(on[:, 1000])[0]
    assert 1900 < ys.mean() < 2100
    col = img[ys.min() - 60:ys.max() + 60, 1000].sum()
    # xi runs along pixel +y on DECam: 30 deg from xi is 60 deg from the pixel x axis, and a
    # column cuts the trail over 1/cos(60 deg) pixels of its length
    assert col == pytest.approx(2000.0 * 0.263 / np.cos(np.deg2rad(60.0)), rel=0.03)


def test_hot_pixels_and_defects(calib):
    spec = make_spec(sky=25.0)
    sw = dataclasses.replace(QUIET, bad_pixels=True)
    r = render_ccd(spec, objects_at(spec, CCD, [], [], []), CCD, switches=sw,
                   rng=np.random.default_rng(3), calib=calib)
    hot = (r.truth.mask & TRUTH_HOT) > 0
    img = data_e(r.raw, CCD)
    assert hot.sum() >= 100
    assert np.median(img[hot]) > 10 * np.median(img[~hot])
    assert np.array_equal(calib.bpm(CCD) > 0, r.truth.mask > 0)
