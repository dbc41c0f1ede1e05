"""render_ccd / render_exposure against their truth: sky, stars, PSF, headers, determinism."""

import dataclasses

import galsim
import numpy as np
import pytest
from astropy.wcs import WCS
from scipy.optimize import least_squares

from desgw.instrument import get_ccd, pixel_scale_arcsec, pixel_to_sky
from desgw.sim.calib import make_detector_calib
from desgw.sim.model import SimSwitches
from desgw.sim.render import render_ccd, render_exposure

from sim_render_factory import CCD, QUIET, concat, data_e, make_spec, objects_at


@pytest.fixture(scope="module")
def calib():
    return make_detector_calib([CCD, 36, 28, 29], seed=11, band="r")


@pytest.fixture(scope="module")
def quiet_star(calib):
    """A bright star at the CCD centre, a fainter one, a galaxy; no detector effects."""
    spec = make_spec(sky=30.0)
    objs = concat(objects_at(spec, CCD, [1023.3, 500.6], [2047.8, 3000.2], [17.0, 19.0]),
                  objects_at(spec, CCD, [1500.0], [1000.0], [18.0], kind=1, hlr=0.8, n=1.0, q=0.6,
                             pa=30.0, id0=10))
    r = render_ccd(spec, objs, CCD, switches=QUIET, rng=np.random.default_rng(0), calib=calib)
    return spec, r


def test_star_truth_flux_centroid(quiet_star):
    spec, r = quiet_star
    img = data_e(r.raw, CCD)
    t = r.truth.objects
    assert len(t) == 3 and set(t.id) == {1, 2, 10}
    zp = r.truth.zeropoint
    assert zp == pytest.approx(spec.zeropoint)  # flat (and QE) off
    for k in range(3):
        assert t.flux_e[k] == pytest.approx(spec.exptime * 10 ** (-0.4 * (t.mag[k] - zp)))
        yy, xx = np.mgrid[-80:81, -80:81]
        cx, cy = int(round(t.x[k])), int(round(t.y[k]))
        stamp = img[cy - 80:cy + 81, cx - 80:cx + 81]
        # rounding to integer ADU (gain ~4 e-) over 26000 pixels leaves ~0.1 % noise on 1e5 e-
        assert stamp.sum() == pytest.approx(t.flux_e[k], rel=3e-3)
        assert (stamp * (xx + cx)).sum() / stamp.sum() == pytest.approx(t.x[k], abs=0.01)
        assert (stamp * (yy + cy)).sum() / stamp.sum() == pytest.approx(t.y[k], abs=0.01)


def test_rendered_star_fwhm_matches_truth(quiet_star):
    spec, r = quiet_star
    img = data_e(r.raw, CCD)
    t = r.truth.objects
    cx, cy = int(round(t.x[0])), int(round(t.y[0]))
    h = 25
    stamp = img[cy - h:cy + h + 1, cx - h:cx + h + 1]

    def model(p):
        im = galsim.ImageD(2 * h + 1, 2 * h + 1, scale=1.0)
        galsim.Moffat(beta=3.0, fwhm=p[3]).withFlux(p[0]).drawImage(
            im, offset=(p[1], p[2]), method="auto")
        return im.array

    fit = least_squares(lambda p: (model(p) - stamp).ravel(),
                        x0=[t.flux_e[0], t.x[0] - cx, t.y[0] - cy, 3.5])
    assert fit.x[3] == pytest.approx(r.truth.psf_fwhm_pix, rel=0.02)
    scale = pixel_scale_arcsec(CCD, 1023.5, 2047.5)
    assert r.truth.psf_fwhm_pix == pytest.approx(r.truth.psf_fwhm_arcsec / scale, rel=1e-3)
    fwhm, _, _ = spec.psf.at(0.0, 0.0)
    assert r.truth.psf_fwhm_arcsec == pytest.approx(float(fwhm), rel=0.01)  # CCD 35 is near the axis


def test_sky_level_matches_spec(calib):
    spec = make_spec(sky=21.0)
    r = render_ccd(spec, objects_at(spec, CCD, [], [], []), CCD,
                   switches=dataclasses.replace(QUIET, noise=True), rng=np.random.default_rng(2),
                   calib=calib)
    img = data_e(r.raw, CCD)
    scale = pixel_scale_arcsec(CCD, 1023.5, 2047.5)
    expect = spec.exptime * 10 ** (-0.4 * (spec.sky_mag_arcsec2 - spec.zeropoint)) * scale**2
    assert r.truth.sky_e_per_pixel == pytest.approx(expect, rel=1e-3)
    centre = img[1948:2148, 924:1124]
    assert centre.mean() == pytest.approx(expect, rel=2e-3)
    # shot noise + read noise (+ ADU rounding) in electrons
    amp = get_ccd(CCD).amps["A"]
    var = expect + amp.read_noise_e**2 + amp.gain**2 / 12
    assert centre[:, :100].var() == pytest.approx(var, rel=0.05)


def test_determinism_and_seed(calib):
    spec = make_spec()
    objs = objects_at(spec, CCD, [300.0, 1700.0], [300.0, 3900.0], [15.0, 20.0])
    sw = SimSwitches(satellite=False)
    a = render_exposure(spec, objs, [CCD], switches=sw, seed=4, calib=calib, crosstalk_neighbours=False)[0]
    b = render_exposure(spec, objs, [CCD], switches=sw, seed=4, calib=calib, crosstalk_neighbours=False)[0]
    c = render_exposure(spec, objs, [CCD], switches=sw, seed=5, calib=calib, crosstalk_neighbours=False)[0]
    assert np.array_equal(a.raw, b.raw)
    assert np.array_equal(a.truth.mask, b.truth.mask)
    assert not np.array_equal(a.raw, c.raw)
    assert a.truth.crosstalk_missing == (36,)


def test_header_sections_and_wcs(quiet_star, tmp_path):
    from desgw.io.raw import RawExposure, read_exposure_header
    from desgw.sim.raw_writer import write_rendered_exposure

    spec, r = quiet_star
    path = write_rendered_exposure(tmp_path / "DECam_00001000.fits.fz", spec, [r])
    eh = read_exposure_header(path)
    assert eh.expnum == spec.expnum and eh.band == "r" and eh.exptime == spec.exptime
    assert eh.filter.startswith("r DECam SDSS")
    assert eh.ra_deg == pytest.approx(spec.header_pointing.ra_deg, abs=1e-4)
    assert eh.header["DESGWSIM"] is True
    with RawExposure(path) as ex:
        ccd = ex.read_ccd(CCD)
    assert np.array_equal(ccd.pixels, r.raw.astype(np.float32))
    for name, amp in get_ccd(CCD).amps.items():
        assert ccd.amps[name].gain == pytest.approx(amp.gain)
        assert ccd.amps[name].saturation_adu == pytest.approx(amp.saturation_adu)
    # the approximate raw WCS (raw 1-based pixels) is within a few arcsec near the optical axis
    w = WCS(r.header)
    data = get_ccd(CCD).raw_datasec
    x = np.array([10.0, 1000.0, 2040.0])
    y = np.array([10.0, 2000.0, 4090.0])
    ra_w, dec_w = w.all_pix2world(x + data.x0 + 1, y + data.y0 + 1, 1)
    ra_t, dec_t = pixel_to_sky(CCD, x, y, spec.pointing, spec.distortion)
    sep = np.hypot((ra_w - ra_t) * np.cos(np.deg2rad(dec_t)), dec_w - dec_t) * 3600
    assert sep.max() < 3.0


def test_wcs_error_follows_header_pointing(calib):
    spec = make_spec()
    off = dataclasses.replace(spec, header_pointing=dataclasses.replace(
        spec.pointing, ra_deg=spec.pointing.ra_deg + 0.002))
    from desgw.sim.render_headers import ccd_header

    w0, w1 = WCS(ccd_header(spec, CCD)), WCS(ccd_header(off, CCD))
    ra0, _ = w0.all_pix2world([1000.0], [2000.0], 1)
    ra1, _ = w1.all_pix2world([1000.0], [2000.0], 1)
    assert (ra1 - ra0)[0] == pytest.approx(0.002, abs=1e-6)
