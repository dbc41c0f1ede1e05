"""Candidate measurement: dipoles, catalog context, sky positions, aperture fluxes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from astropy.table import Table
from astropy.wcs import WCS
from scipy.spatial import cKDTree

from desgw.diff.detect import detect_transients
from desgw.diff.measure import (
    MEASURE_COLUMNS,
    aperture_weights,
    catalog_positions,
    measure_candidates,
)
from desgw.diff.subtract import SubtractConfig, subtract
from desgw.diff.zogy_psf import TiledPSF
from desgw.diff.zogy_synth import MoffatPSFField, make_image_pair
from desgw.se import maskbits

SHAPE = (768, 768)


@pytest.fixture(scope="module")
def misaligned():
    """Bright stars with the template shifted by 0.1 px, plus clean transients."""
    ps, pt = MoffatPSFField(4.0, image_shape=SHAPE), MoffatPSFField(3.0, image_shape=SHAPE)
    pair = make_image_pair(SHAPE, ps, pt, seed=5, n_stars=50, star_flux_range=(2e5, 1e6),
                           n_transients=40, transient_flux=(4e3, 2e4),
                           template_offset=(0.1, 0.0), min_distance=40)
    m = np.zeros(SHAPE, np.int32)
    sub = subtract(pair.search, pair.search_var, m, ps, pair.template, pair.template_var, m,
                   pt, zp_search=pair.zp_search, zp_template=pair.zp_template,
                   config=SubtractConfig(tile=256, border=48))
    det = detect_transients(sub)
    return pair, sub, det


def test_misalignment_dipoles_flagged(misaligned):
    pair, sub, det = misaligned
    meas = measure_candidates(sub, det, search_image=pair.search, template_image=pair.template)
    assert tuple(meas.colnames) == MEASURE_COLUMNS
    d_star, _ = cKDTree(np.c_[pair.star_x, pair.star_y]).query(np.c_[meas["x"], meas["y"]])
    d_tr, _ = cKDTree(np.c_[pair.transient_x, pair.transient_y]).query(
        np.c_[meas["x"], meas["y"]])
    at_star, at_tr = d_star < 5, d_tr < 1.5
    assert at_tr.sum() == 40
    assert at_star.sum() >= 40  # both lobes of most bright stars
    assert np.all(meas["is_dipole"][at_star])
    assert not np.any(meas["is_dipole"][at_tr])
    assert np.all(np.asarray(meas["dipole_ratio"][at_star]) > 0.4)
    assert np.all(np.asarray(meas["dipole_ratio"][at_tr]) < 0.25)
    # lobes along x (the shift direction), about one FWHM apart
    sep = np.asarray(meas["dipole_sep"][at_star])
    assert np.all((sep > 3) & (sep < 10))
    assert np.all(np.isnan(np.asarray(meas["dipole_sep"][at_tr])))
    # with the astrometric term, the same misalignment no longer scores
    sub2 = subtract(pair.search, pair.search_var, np.zeros(SHAPE, np.int32), pair.search_psf,
                    pair.template, pair.template_var, np.zeros(SHAPE, np.int32),
                    pair.template_psf, zp_search=pair.zp_search, zp_template=pair.zp_template,
                    config=SubtractConfig(tile=256, border=48, astrometric_sigma=(0.1, 0.1)))
    det2 = detect_transients(sub2)
    d2, _ = cKDTree(np.c_[pair.star_x, pair.star_y]).query(np.c_[det2["x"], det2["y"]])
    assert np.count_nonzero(d2 < 5) <= 2
    d3, _ = cKDTree(np.c_[det2["x"], det2["y"]]).query(np.c_[pair.transient_x,
                                                             pair.transient_y])
    assert np.all(d3 < 1.5)


def test_context_columns(misaligned):
    pair, sub, det = misaligned
    keep = det[~det["negative"]][:5]
    # a catalog: two objects at the first detection (star and galaxy) + far objects
    x0, y0 = float(keep[0]["x"]), float(keep[0]["y"])
    cat = Table({"XWIN_IMAGE": [x0 + 1 + 3.0, x0 + 1, 5.0], "YWIN_IMAGE": [y0 + 1, y0 + 1 + 4.0,
                                                                          5.0],
                 "SPREAD_MODEL": [0.0005, 0.02, 0.001]})
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, -30.0]
    wcs.wcs.crpix = [384.5, 384.5]
    wcs.wcs.cd = [[-0.263 / 3600, 0], [0, 0.263 / 3600]]
    ra, dec = wcs.pixel_to_world_values(np.array([x0 + 3.0]), np.array([y0]))
    tcat = Table({"ALPHAWIN_J2000": ra, "DELTAWIN_J2000": dec, "CLASS_STAR": [0.99]})
    meas = measure_candidates(sub, keep, search_image=pair.search,
                              template_image=pair.template, search_catalog=cat,
                              template_catalog=tcat, wcs=wcs)
    r0 = meas[0]
    assert r0["search_star_dist"] == pytest.approx(3.0, abs=1e-6)
    assert r0["search_galaxy_dist"] == pytest.approx(4.0, abs=1e-6)
    assert r0["template_star_dist"] == pytest.approx(3.0, abs=1e-6)
    assert np.isinf(r0["template_galaxy_dist"])
    rr, dd = wcs.pixel_to_world_values(x0, y0)
    assert r0["ra"] == pytest.approx(float(rr), abs=1e-10)
    assert r0["dec"] == pytest.approx(float(dd), abs=1e-10)
    xs, ys = catalog_positions(tcat, wcs)
    assert xs[0] == pytest.approx(x0 + 3.0, abs=1e-6) and ys[0] == pytest.approx(y0, abs=1e-6)
    no_cat = measure_candidates(sub, keep, search_image=pair.search,
                                template_image=pair.template)
    assert np.all(np.isinf(no_cat["search_star_dist"])) and np.all(np.isnan(no_cat["ra"]))
    # transients are in the search only: template aperture flux ~ 0, search ~ diff
    for row in meas:
        assert abs(row["template_flux_aper"]) < 0.1 * row["search_flux_aper"]
        assert row["diff_flux_aper"] == pytest.approx(row["search_flux_aper"], rel=0.25)
        assert row["masked_frac"] == 0.0


def test_masked_fraction():
    ps, pt = MoffatPSFField(4.0, image_shape=SHAPE), MoffatPSFField(3.0, image_shape=SHAPE)
    pair = make_image_pair(SHAPE, ps, pt, seed=6, n_stars=0, n_transients=5,
                           transient_flux=2e4)
    sm = np.zeros(SHAPE, np.int32)
    x0, y0 = int(round(pair.transient_x[0])), int(round(pair.transient_y[0]))
    sm[y0 + 3:y0 + 30, x0 - 30:x0 + 30] = maskbits.BADPIX  # below the source, not on it
    sub = subtract(pair.search, pair.search_var, sm, ps, pair.template, pair.template_var,
                   np.zeros(SHAPE, np.int32), pt, zp_search=pair.zp_search,
                   zp_template=pair.zp_template,
                   config=SubtractConfig(tile=256, border=48, dilate_fwhm=0.0))
    det = detect_transients(sub)
    meas = measure_candidates(sub, det, search_image=pair.search, template_image=pair.template)
    d = np.hypot(meas["x"] - pair.transient_x[0], meas["y"] - pair.transient_y[0])
    row = meas[int(np.argmin(d))]
    assert d.min() < 0.5
    # rows y0+3 .. y0+8 of the 2-FWHM (8 px) circle are masked: ~ 20 % of it
    assert 0.1 < row["masked_frac"] < 0.35
    others = meas[d > 50]
    assert np.all(others["masked_frac"] == 0)


def test_aperture_weights_area():
    w = aperture_weights(0.3, -0.2, 5.0, 7, sub=9)
    assert w.sum() == pytest.approx(np.pi * 25, rel=0.01)
    assert w[7, 7] == 1.0 and w[0, 0] == 0.0


def test_block_measurement_equals_one_at_a_time(misaligned, monkeypatch):
    # detections are measured in blocks on cut-outs of the block's largest size; each row must
    # be what measuring that detection alone (a cut-out of its own size) gives
    import desgw.diff.measure as dm

    pair, sub0, det = misaligned
    # a difference PSF whose FWHM differs from tile to tile (2.5-6.5 px): the detections'
    # cut-outs differ in size within a block
    ny, nx, _, _ = sub0.psf_diff.stamps.shape
    fw = np.linspace(2.5, 6.5, ny * nx).reshape(ny, nx)
    stamps = np.array([[MoffatPSFField(fw[j, i], image_shape=SHAPE).render(0.0, 0.0, size=41)
                        for i in range(nx)] for j in range(ny)], dtype=np.float32)
    sub = dataclasses.replace(sub0, psf_diff=TiledPSF(stamps=stamps, tile=sub0.psf_diff.tile,
                                                      image_shape=SHAPE))
    monkeypatch.setattr(dm, "_BLOCK", 16)
    together = measure_candidates(sub, det, search_image=pair.search,
                                  template_image=pair.template)
    assert len(det) > 3 * 16
    for k in range(0, len(det), 5):
        alone = measure_candidates(sub, det[k:k + 1], search_image=pair.search,
                                   template_image=pair.template)
        for name in MEASURE_COLUMNS:
            a, b = np.asarray(together[name])[k], np.asarray(alone[name])[0]
            if isinstance(a, (float, np.floating)):
                assert a == pytest.approx(b, rel=1e-9, abs=1e-12, nan_ok=True), (k, name)
            else:
                assert a == b, (k, name)
    # the batched rendering of the tiled PSF is the PSF's own rendering
    x, y = np.asarray(det["x"], float), np.asarray(det["y"], float)
    dx, dy = x - np.round(x), y - np.round(y)
    batch = dm._rendered(sub.psf_diff, x, y, dx, dy)
    for k in range(len(x)):
        np.testing.assert_allclose(batch[k], sub.psf_diff.render(x[k], y[k], dx=dx[k], dy=dy[k]),
                                   rtol=0, atol=1e-7)
