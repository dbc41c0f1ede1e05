"""Tests of the simulated sky: counts, colours, Gaia catalogue, motions, light curves."""

from __future__ import annotations

import numpy as np
import pytest

from desgw.instrument import Pointing
from desgw.refcat.geometry import angular_separation_deg
from desgw.refcat.transforms import gaia_to_des
from desgw.sim.model import OBJECT_KINDS, ExposureSpec, PSFField, SimSwitches
from desgw.sim.scene import GAIA_COLUMNS, SceneConfig, cap_area_deg2, make_scene

CENTER = (30.0, -30.0)
SEARCH_MJD = 58710.1


@pytest.fixture(scope="module")
def scene():
    return make_scene(*CENTER, 0.6, seed=11, search_mjd=SEARCH_MJD, last_template_mjd=SEARCH_MJD - 40)


def _spec(mjd: float, band: str = "r", exptime: float = 90.0) -> ExposureSpec:
    p = Pointing(*CENTER)
    return ExposureSpec(expnum=1, band=band, mjd=mjd, exptime=exptime, airmass=1.2, pointing=p,
                        header_pointing=p, psf=PSFField(1.0), sky_mag_arcsec2=21.0,
                        sky_gradient=(0.0, 0.0), zeropoint=26.6)


def _kind(scene, name):
    return np.asarray(scene.objects["kind"]) == OBJECT_KINDS[name]


def test_star_and_gaia_densities(scene):
    area = cap_area_deg2(0.6)
    stars = _kind(scene, "star") | _kind(scene, "variable")
    # ~1000 (pole) x 1.02 (b = -75) stars/deg^2 at G < 20.7; ~2650 to G = 24
    assert 850 < len(scene.gaia) / area < 1200
    assert 2200 < stars.sum() / area < 3100
    g = np.asarray(scene.objects["gaia_g"])[stars]
    assert g.min() >= 12.0 and g.max() <= 24.0
    # counts rise steeply at the bright end: many more stars in 17-18 than in 13-14
    assert np.sum((g > 17) & (g < 18)) > 5 * np.sum((g > 13) & (g < 14))


def test_galaxy_counts_slope_and_density(scene):
    gal = _kind(scene, "galaxy")
    r = np.asarray(scene.objects["mag_r"])[gal]
    area = cap_area_deg2(0.6)
    assert 3.0e4 < gal.sum() / area < 4.2e4
    hist, edges = np.histogram(r, bins=np.arange(18.0, 24.01, 0.5))
    mid = 0.5 * (edges[1:] + edges[:-1])
    slope = np.polyfit(mid, np.log10(hist), 1)[0]
    assert 0.32 < slope < 0.40
    hlr = np.asarray(scene.objects["hlr_arcsec"])[gal]
    n = np.asarray(scene.objects["sersic_n"])[gal]
    assert n.min() >= 0.5 and n.max() <= 4.0
    # brighter galaxies are bigger
    assert np.median(hlr[r < 20]) > 2.0 * np.median(hlr[r > 23])


def test_star_des_mags_follow_the_calibration_transform(scene):
    stars = _kind(scene, "star") | _kind(scene, "variable")
    o = scene.objects[stars]
    valid = np.asarray(o["transform_valid"])
    assert valid.mean() > 0.98 and (~valid).sum() >= 1  # a few very red stars are flagged
    for band in "griz":
        pred = gaia_to_des(band, o["gaia_g"], o["gaia_bp"], o["gaia_rp"])
        assert np.array_equal(pred.valid, valid)
        d = np.asarray(o[f"mag_{band}"])[valid] - pred.mag[valid]
        assert abs(np.mean(d)) < 0.002
        assert 0.008 < np.std(d) < 0.012
    bp_rp = np.asarray(o["gaia_bp"] - o["gaia_rp"])
    assert np.percentile(bp_rp, 1) >= 0.5 and np.percentile(bp_rp, 98) <= 3.0


def test_no_intrinsic_scatter_reproduces_transform_exactly():
    s = make_scene(*CENTER, 0.15, seed=2, config=SceneConfig(intrinsic_scatter_mag=0.0),
                   switches=SimSwitches(galaxies=False))
    o = s.objects[_kind(s, "star")]
    pred = gaia_to_des("r", o["gaia_g"], o["gaia_bp"], o["gaia_rp"])
    np.testing.assert_allclose(np.asarray(o["mag_r"])[pred.valid], pred.mag[pred.valid], atol=1e-12)


def test_gaia_catalog_columns_cut_and_errors(scene):
    cat = scene.gaia_catalog()
    assert tuple(cat.colnames) == GAIA_COLUMNS
    assert np.all(np.asarray(cat["phot_g_mean_mag"]) < 20.7)
    assert np.all(cat["ref_epoch"] == 2016.0)
    assert len(np.unique(cat["source_id"])) == len(cat)
    truth = scene.objects[np.asarray(scene.objects["in_gaia"])]
    assert np.array_equal(np.asarray(truth["source_id"]), np.asarray(cat["source_id"]))
    # positions are perturbed by their errors: pulls ~ N(0, 1), not zero
    dra = (np.asarray(cat["ra"]) - np.asarray(truth["ra"])) * np.cos(np.deg2rad(truth["dec"])) * 3.6e6
    pull = dra / np.asarray(cat["ra_error"])
    assert 0.9 < np.std(pull) < 1.1
    assert np.all(dra != 0)
    ok = np.isfinite(np.asarray(cat["pmra"]))
    pull_pm = (np.asarray(cat["pmra"]) - np.asarray(truth["pmra"]))[ok] / np.asarray(cat["pmra_error"])[ok]
    assert 0.9 < np.std(pull_pm) < 1.1
    # errors grow with magnitude
    g = np.asarray(cat["phot_g_mean_mag"])
    e = np.asarray(cat["ra_error"])
    assert np.median(e[g > 20]) > 5 * np.median(e[g < 17])
    # a realistic proper-motion spread: nearby stars move tens of mas/yr
    pm = np.hypot(truth["pmra"], truth["pmdec"])
    assert np.percentile(pm, 99) > 20.0 and np.median(pm) < 15.0


def test_proper_motion_moves_stars_by_pm_times_dt(scene):
    a = scene.objects_at(_spec(57000.0, exptime=0.0))
    b = scene.objects_at(_spec(57000.0 + 3 * 365.25, exptime=0.0))
    sa, sb = a.kind == OBJECT_KINDS["star"], b.kind == OBJECT_KINDS["star"]
    assert sa.sum() > 500
    assert np.array_equal(a.id[sa], b.id[sb])
    rows = a.id[sa] - 1
    # small-angle offsets (exact to << 0.01 mas for offsets of < 1 arcsec)
    dxi = (b.ra[sb] - a.ra[sa]) * np.cos(np.deg2rad(a.dec[sa])) * 3.6e6
    deta = (b.dec[sb] - a.dec[sa]) * 3.6e6
    pmra = np.asarray(scene.objects["pmra"])[rows]
    pmdec = np.asarray(scene.objects["pmdec"])[rows]
    np.testing.assert_allclose(dxi, pmra * 3.0, atol=0.01)
    np.testing.assert_allclose(deta, pmdec * 3.0, atol=0.01)
    assert np.max(np.hypot(dxi, deta)) > 60.0  # some stars move by > 60 mas in 3 years
    # galaxies do not move
    g, gb = a.kind == OBJECT_KINDS["galaxy"], b.kind == OBJECT_KINDS["galaxy"]
    np.testing.assert_array_equal(a.ra[g], b.ra[gb])


def test_proper_motion_switch_off_keeps_stars_still():
    s = make_scene(*CENTER, 0.15, seed=2, switches=SimSwitches(proper_motion=False, galaxies=False))
    a = s.objects_at(_spec(57000.0))
    b = s.objects_at(_spec(59000.0))
    st = a.kind == OBJECT_KINDS["star"]
    np.testing.assert_allclose(a.ra[st], b.ra[st], atol=1e-12)


def test_transients_absent_before_explosion_and_fading_after(scene):
    t = scene.transients
    assert len(t) == 5
    assert set(t["type"]) == {"kilonova", "sn"}
    assert np.all(t["t_expl"] > SEARCH_MJD - 40) and np.all(t["t_expl"] < SEARCH_MJD)
    assert np.any(t["host_id"] == 0) and np.any(t["host_id"] > 0)
    rows = np.asarray(t["id"]) - 1
    before = scene.mags_at("r", float(np.min(t["t_expl"])) - 0.01)[rows]
    assert np.all(np.isnan(before))
    kn = np.asarray(t["type"]) == "kilonova"
    m_search = scene.mags_at("r", SEARCH_MJD)[rows]
    assert np.all(np.isfinite(m_search))
    m1 = scene.mags_at("r", SEARCH_MJD + 1.0)[rows]
    m3 = scene.mags_at("r", SEARCH_MJD + 3.0)[rows]
    # kilonovae fade 0.5-1 mag/day in r, and g fades faster (blue early, red later)
    rate = (m3 - m1)[kn] / 2.0
    assert np.all((rate > 0.5) & (rate < 1.0))
    g1 = scene.mags_at("g", SEARCH_MJD + 1.0)[rows][kn]
    g3 = scene.mags_at("g", SEARCH_MJD + 3.0)[rows][kn]
    assert np.all((g3 - m3[kn]) > (g1 - m1[kn]))
    # peak absolute magnitude ~ -16 for kilonovae
    assert np.all(np.abs(np.asarray(t["abs_peak_r"])[kn] + 16.0) < 2.0)
    # hosted transients lie within a few half-light radii of their host
    hosted = np.asarray(t["host_id"]) > 0
    h = scene.objects[np.asarray(t["host_id"])[hosted] - 1]
    assert np.all(h["kind"] == OBJECT_KINDS["galaxy"])
    sep = angular_separation_deg(t["ra"][hosted], t["dec"][hosted], h["ra"], h["dec"]) * 3600
    assert np.all(sep < 6 * np.asarray(h["hlr_arcsec"]) + 0.01)


def test_variables_vary_within_their_amplitude(scene):
    v = scene.variables
    assert 0.01 < len(v) / np.sum(_kind(scene, "star") | _kind(scene, "variable")) < 0.05
    rows = np.asarray(v["id"]) - 1
    mags = np.array([scene.mags_at("r", SEARCH_MJD + t)[rows] for t in np.linspace(0, 40, 400)])
    ptp = mags.max(0) - mags.min(0)
    amp = np.asarray(v["amp_r"])
    assert np.all(ptp <= amp + 1e-9) and np.median(ptp / amp) > 0.9
    assert amp.min() >= 0.1 and amp.max() <= 1.0


def test_moving_object_moves_at_its_rate(scene):
    m = scene.moving
    assert len(m) == 1
    rate = float(m["rate_arcsec_min"][0])
    assert 0.4 <= rate <= 0.8
    a = scene.objects_at(_spec(SEARCH_MJD))
    b = scene.objects_at(_spec(SEARCH_MJD + 10.0 / 1440.0))
    ka, kb = a.kind == OBJECT_KINDS["moving"], b.kind == OBJECT_KINDS["moving"]
    sep = angular_separation_deg(a.ra[ka], a.dec[ka], b.ra[kb], b.dec[kb])[0] * 3600.0
    assert sep == pytest.approx(rate * 10.0, rel=1e-6)
    # weeks earlier it is far away and not in the exposure's object table
    c = scene.objects_at(_spec(SEARCH_MJD - 60))
    assert not np.any(c.kind == OBJECT_KINDS["moving"])


def test_objects_at_epoch_band_and_determinism(scene):
    o = scene.objects_at(_spec(SEARCH_MJD, band="g"))
    assert o.meta["band"] == "g" and o.meta["mjd_mid"] == pytest.approx(SEARCH_MJD + 45 / 86400)
    static = (o.kind == OBJECT_KINDS["galaxy"])
    np.testing.assert_array_equal(o.mag[static], np.asarray(scene.objects["mag_g"])[o.id[static] - 1])
    again = make_scene(*CENTER, 0.6, seed=11, search_mjd=SEARCH_MJD, last_template_mjd=SEARCH_MJD - 40)
    assert len(again) == len(scene)
    for col in ("ra", "dec", "mag_r", "pmra"):
        np.testing.assert_array_equal(np.asarray(again.objects[col]), np.asarray(scene.objects[col]))
    other = make_scene(*CENTER, 0.6, seed=12, search_mjd=SEARCH_MJD)
    assert len(other) != len(scene) or not np.array_equal(other.objects["ra"], scene.objects["ra"])


def test_switches_remove_populations_without_changing_the_stars():
    full = make_scene(*CENTER, 0.2, seed=5)
    bare = make_scene(*CENTER, 0.2, seed=5, switches=SimSwitches(galaxies=False, transients=False,
                                                                  variables=False, moving=False))
    counts = bare.counts()
    assert counts["galaxy"] == counts["transient"] == counts["moving"] == counts["variable"] == 0
    n_star = counts["star"]
    np.testing.assert_array_equal(np.asarray(bare.objects["ra"]), np.asarray(full.objects["ra"])[:n_star])


def test_transients_and_asteroid_placed_in_footprint():
    def footprint(ra, dec):
        return (np.asarray(ra) > 30.0) & (np.asarray(dec) > -30.0)

    s = make_scene(*CENTER, 0.4, seed=3, footprint=footprint)
    t = s.transients
    assert np.all(footprint(t["ra"], t["dec"]) | (t["host_id"] > 0))
    hosts = s.objects[np.asarray(t["host_id"])[t["host_id"] > 0] - 1]
    assert np.all(footprint(hosts["ra"], hosts["dec"]))
    assert footprint(s.moving["ra0"], s.moving["dec0"]).all()
