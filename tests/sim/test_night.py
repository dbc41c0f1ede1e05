"""Tests of the night driver and the truth it writes (with a stand-in renderer, and with the real one)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
from astropy.io import fits

from desgw.errors import MissingFileError
from desgw.instrument import get_ccd, pixel_to_sky
from desgw.io.products import read_csv
from desgw.sim import night as night_mod
from desgw.sim.model import OBJECT_KINDS, SimSwitches
from desgw.sim.night import simulate_night
from desgw.sim.scene import SceneConfig
from desgw.sim.survey import plan_night
from desgw.sim.truth import load_truth

SPARSE = SceneConfig(star_density_scale=0.3, galaxy_density_scale=0.05)


@dataclass
class _FakeCCD:
    ccdnum: int
    header: fits.Header
    raw: np.ndarray
    truth: object


def _fake_truth(c):
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[2, 3] = 1
    mask[5, 1] = c % 64
    return SimpleNamespace(zeropoint=26.0, qe=1.0, sky_e_per_pixel=2000.0 + c, sky_e_mean=2000.0,
                           psf_fwhm_arcsec=1.0, psf_e1=0.0, psf_e2=0.0, pixel_scale_arcsec=0.263,
                           n_cosmic_rays=3, satellite=False, bleed_lost_e=0.0, dead=False, mask=mask)


def _fake_api(calls):
    def render_exposure(spec, objects, ccdnums, *, switches, seed, calib):
        calls.append((spec.expnum, tuple(ccdnums), len(objects), seed))
        out = []
        for c in ccdnums:
            h = fits.Header()
            h["CCDNUM"] = c
            h["DETPOS"] = get_ccd(c).detpos
            out.append(_FakeCCD(c, h, np.full((6, 5), spec.expnum % 1000, dtype=np.uint16), _fake_truth(c)))
        return out

    def exposure_primary_header(spec):
        h = fits.Header()
        h["EXPNUM"] = spec.expnum
        h["MJD-OBS"] = spec.mjd
        h["FILTER"] = spec.band
        return h

    def make_detector_calib(ccdnums, seed, band, *, nonlinearity=True):
        return SimpleNamespace(ccds={int(c): SimpleNamespace(qe=1.0 + 0.01 * (c % 3 - 1)) for c in ccdnums})

    def write_calibrations(outdir, calib):
        p = outdir / "calib" / "bias.fits.fz"
        p.parent.mkdir(parents=True, exist_ok=True)
        fits.PrimaryHDU().writeto(p)
        return {"bias": p}

    return render_exposure, exposure_primary_header, make_detector_calib, write_calibrations


@pytest.fixture(scope="module")
def fake_night(tmp_path_factory):
    calls: list = []
    mp = pytest.MonkeyPatch()
    mp.setattr(night_mod, "_render_api", lambda: _fake_api(calls))
    out = tmp_path_factory.mktemp("night")
    try:
        summary = simulate_night(out, seed=4, band="i", ccds=[28, 35], n_templates=2, n_search=2,
                                 scene_config=SPARSE)
    finally:
        mp.undo()
    return out, summary, calls


def test_night_writes_all_files(fake_night):
    out, summary, calls = fake_night
    assert len(summary.raw_files) == 4
    for p in summary.raw_files:
        assert p.parent == out / "raw" and p.name.startswith("DECam_00") and p.name.endswith(".fits.fz")
        assert p.exists()
    for name in ("objects.parquet", "exposures.csv", "ccds.csv", "fluxes.parquet", "transients.csv",
                 "variables.csv", "moving.csv", "night.json"):
        assert (out / "truth" / name).exists()
    assert (out / "gaia" / "gaia_sim.csv").exists() and (out / "calib" / "bias.fits.fz").exists()
    assert not list(out.rglob(".*tmp*"))  # no temporary files left
    text = str(summary)
    assert "search" in text and "template" in text and "Gaia catalogue" in text
    # search exposures render the requested CCDs, templates those overlapping them
    for _expnum, ccds, _, _ in calls[2:]:
        assert ccds == (28, 35)
    for _expnum, ccds, _, _ in calls[:2]:
        assert len(ccds) >= 2
    # raw file holds the CCDs the renderer returned, EXPNUM in the header
    with fits.open(summary.raw_files[-1]) as h:
        assert h[0].header["EXPNUM"] == summary.exposures[-1][0]
        assert sorted(x.header["CCDNUM"] for x in h[1:]) == [28, 35]


def test_load_truth_is_consistent(fake_night):
    out, summary, _ = fake_night
    truth = load_truth(out)
    assert truth.expnums == [e[0] for e in summary.exposures]
    assert len(truth.template_expnums) == 2 and len(truth.search_expnums) == 2
    # specs round-trip through the CSV exactly
    planned = plan_night(seed=4, band="i", n_templates=2, n_search=2)
    assert [truth.exposure_spec(e) for e in truth.expnums] == planned
    spec = truth.exposure_spec(truth.search_expnums[0])
    assert truth.raw_path(spec.expnum).exists()
    # objects on a CCD: their pixel positions map back to their sky positions
    rows = truth.objects_on_ccd(spec.expnum, 28)
    assert len(rows) > 20
    ra, dec = truth.true_pixel_to_sky(spec.expnum, 28, rows["x"], rows["y"])
    np.testing.assert_allclose(ra, rows["ra"], atol=1e-9)
    np.testing.assert_allclose(dec, rows["dec"], atol=1e-9)
    x, _y = truth.true_sky_to_pixel(spec.expnum, 28, rows["ra"], rows["dec"])
    np.testing.assert_allclose(x, rows["x"], atol=1e-6)
    # flux = exptime * 10**(-0.4 (mag - zp_ccd)), zp_ccd = zp + 2.5 log10(qe)
    zp = spec.zeropoint + 2.5 * np.log10(1.0 + 0.01 * (28 % 3 - 1))
    np.testing.assert_allclose(rows["flux_e"], spec.exptime * 10 ** (-0.4 * (rows["mag"] - zp)), rtol=1e-9)
    assert truth.ccd_row(spec.expnum, 28)["n_objects"] == len(rows)
    # the static truth agrees with the per-exposure rows for galaxies
    gal = rows[rows["kind"] == OBJECT_KINDS["galaxy"]]
    np.testing.assert_allclose(gal["mag"], truth.objects["mag_i"][gal["id"] - 1])
    assert truth.ccd_row(spec.expnum, 35)["sky_e_per_pix"] == 2035.0
    # the Gaia catalogue is readable and within the field
    gaia = read_csv(out / "gaia" / "gaia_sim.csv")
    assert len(gaia) > 10 and np.all(np.asarray(gaia["phot_g_mean_mag"]) < 20.7)
    assert truth.meta["seed"] == 4 and truth.meta["band"] == "i"
    masks = truth.artefact_masks(spec.expnum)
    assert set(masks) == {28, 35}
    assert masks[35].shape == (4096, 2048) and masks[35][2, 3] == 1 and masks[35][5, 1] == 35
    assert int(np.count_nonzero(masks[35])) == 2


def test_transients_land_on_search_ccds(fake_night):
    out, _, _ = fake_night
    truth = load_truth(out)
    for expnum in truth.search_expnums:
        on = np.concatenate([np.asarray(truth.objects_on_ccd(expnum, c)["id"]) for c in (28, 35)])
        assert set(np.asarray(truth.transients["id"])) <= set(on)
        assert set(np.asarray(truth.moving["id"])) <= set(on)
    for expnum in truth.template_expnums:
        for c in truth.ccdnums(expnum):
            rows = truth.objects_on_ccd(expnum, c)
            assert not np.any(rows["kind"] == OBJECT_KINDS["transient"])


def test_night_is_deterministic(fake_night, tmp_path, monkeypatch):
    out, _, calls = fake_night
    again: list = []
    monkeypatch.setattr(night_mod, "_render_api", lambda: _fake_api(again))
    simulate_night(tmp_path, seed=4, band="i", ccds=[28, 35], n_templates=2, n_search=2, scene_config=SPARSE)
    assert again == calls
    for name in ("exposures.csv", "ccds.csv", "transients.csv"):
        assert (tmp_path / "truth" / name).read_bytes() == (out / "truth" / name).read_bytes()
    assert (tmp_path / "gaia" / "gaia_sim.csv").read_bytes() == (out / "gaia" / "gaia_sim.csv").read_bytes()


def test_old_truth_reads_the_profile_from_night_json(fake_night, tmp_path):
    """Truth written before exposures.csv had ``psf_profile`` (the audit's nights of session
    11) reads back the profile night.json's survey setting names, not Moffat."""
    import json
    import shutil

    from desgw.io.products import write_csv

    out, _, _ = fake_night
    shutil.copytree(out / "truth", tmp_path / "truth")
    exp = read_csv(tmp_path / "truth" / "exposures.csv")
    exp.remove_column("psf_profile")
    write_csv(tmp_path / "truth" / "exposures.csv", exp)
    meta = json.loads((tmp_path / "truth" / "night.json").read_text())
    meta["survey_config"]["psf_profile"] = "kolmogorov"
    (tmp_path / "truth" / "night.json").write_text(json.dumps(meta))
    truth = load_truth(tmp_path)
    assert {truth.exposure_spec(e).psf.profile for e in truth.expnums} == {"kolmogorov"}
    assert {load_truth(out).exposure_spec(e).psf.profile for e in truth.expnums} == {"moffat"}


def test_load_truth_names_missing_file(tmp_path):
    with pytest.raises(MissingFileError, match=r"objects\.parquet"):
        load_truth(tmp_path)


def test_bad_ccd_list_is_rejected(tmp_path, monkeypatch):
    monkeypatch.setattr(night_mod, "_render_api", lambda: _fake_api([]))
    with pytest.raises(ValueError, match="CCDNUM"):
        simulate_night(tmp_path, ccds=[0, 63])


_HAVE_RENDER = importlib.util.find_spec("desgw.sim.render") is not None
needs_render = pytest.mark.skipif(not _HAVE_RENDER, reason="desgw.sim.render not available")


@needs_render
def test_flux_truth_matches_what_the_renderer_put_in():
    from desgw.sim.calib import make_detector_calib
    from desgw.sim.render import render_exposure
    from desgw.sim.scene import make_scene

    spec = plan_night(seed=2, band="r", n_templates=0, n_search=1)[0]
    scene = make_scene(30.0, -30.0, 0.4, seed=2, config=SPARSE, search_mjd=spec.mjd)
    objects = scene.objects_at(spec)
    calib = make_detector_calib([35], 2, "r")
    sw = SimSwitches(crosstalk=False, cosmic_rays=False, satellite=False)
    (ccd,) = render_exposure(spec, objects, [35], switches=sw, seed=3, calib=calib)
    mine = night_mod.object_flux_rows(spec, objects, [35], {35: calib.ccds[35].qe})
    theirs = ccd.truth.objects
    assert len(mine["id"]) > 20
    order = np.argsort(theirs.id)
    np.testing.assert_array_equal(np.sort(mine["id"]), theirs.id[order])
    k = np.argsort(mine["id"])
    np.testing.assert_allclose(mine["x"][k], theirs.x[order], atol=1e-6)
    np.testing.assert_allclose(mine["y"][k], theirs.y[order], atol=1e-6)
    np.testing.assert_allclose(mine["flux_e"][k], theirs.flux_e[order], rtol=1e-6)


@needs_render
@pytest.mark.slow
def test_tiny_real_night(tmp_path):
    sw = SimSwitches(cosmic_rays=False)
    summary = simulate_night(tmp_path, seed=1, band="r", ccds=[35], n_templates=1, n_search=1,
                             switches=sw, scene_config=SPARSE, template_ccds="same")
    truth = load_truth(tmp_path)
    assert len(summary.raw_files) == 2 and all(p.exists() for p in summary.raw_files)
    assert {p.name for p in summary.calib_files} == {"bias.fits.fz", "flat_r.fits.fz", "bpm.fits.fz",
                                                     "linearity.fits"}
    from desgw.io.raw import RawExposure

    spec = truth.exposure_spec(truth.search_expnums[0])
    with RawExposure(truth.raw_path(spec.expnum)) as raw:
        assert raw.header.expnum == spec.expnum
    rows = truth.objects_on_ccd(spec.expnum, 35)
    assert len(rows) > 10
    ra, _dec = pixel_to_sky(35, rows["x"], rows["y"], spec.pointing, spec.distortion)
    np.testing.assert_allclose(ra, rows["ra"], atol=1e-9)
    c = truth.ccd_row(spec.expnum, 35)
    assert c["n_objects"] == len(rows)
    assert 0.98 < c["qe"] < 1.03 and abs(c["fwhm_arcsec"] / spec.psf.fwhm_arcsec - 1) < 0.1
    # r band, 90 s: the sky is ~1000-3000 e-/pixel
    assert 500 < c["sky_e_per_pix"] < 5000
    masks = truth.artefact_masks(spec.expnum)
    assert set(masks) == {35} and np.any(masks[35] & 16)  # the real bad-pixel boxes are there
    assert "35" in str(summary)


def test_truth_keeps_the_psf_profile(tmp_path):
    """A Kolmogorov night's exposures read back as Kolmogorov (the truth used to drop the
    profile, so every night read back as Moffat); truth written before the column existed
    reads back the renderer's default, Moffat."""
    from dataclasses import replace as dc_replace

    from desgw.io.products import write_csv
    from desgw.sim.truth import exposure_row, spec_from_row

    spec = plan_night(seed=4, band="i", n_templates=1, n_search=1)[0]
    kolm = dc_replace(spec, psf=dc_replace(spec.psf, profile="kolmogorov"))
    rows = [exposure_row(kolm), exposure_row(spec)]
    path = tmp_path / "exposures.csv"
    from astropy.table import Table

    write_csv(path, Table(rows=rows, names=list(rows[0])))
    table = read_csv(path)
    assert spec_from_row(table[0]) == kolm
    assert spec_from_row(table[1]) == spec
    old = Table(table)
    old.remove_column("psf_profile")
    assert spec_from_row(old[0]).psf.profile == "moffat"
