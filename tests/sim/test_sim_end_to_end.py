"""`desgw sim` end to end with the real renderer: the files it writes are what the rest of the
package reads (raw sections, gains, headers, overscan, sky), and its Gaia catalogue ingests into a
refcat that returns exactly the stars inside a CCD footprint."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from desgw.cli import main
from desgw.instrument import ccd_corners_sky, get_ccd
from desgw.io.products import read_csv
from desgw.io.raw import RawExposure
from desgw.refcat import RefCatStore, ingest_gaia, mjd_to_jyear
from desgw.refcat.geometry import convex_footprint, propagate_proper_motion
from desgw.sim.truth import load_truth

# Simulates a night with the real renderer: minutes.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e")
    result = CliRunner().invoke(main, ["sim", str(out), "--ccds", "28", "--n-templates", "1", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "search" in result.output and "template" in result.output
    return out, load_truth(out)


def test_raw_files_read_back_with_real_layout(night):
    _out, truth = night
    for expnum in truth.expnums:
        spec = truth.exposure_spec(expnum)
        with RawExposure(truth.raw_path(expnum)) as raw:
            hdr = raw.header
            assert hdr.expnum == expnum and hdr.band == spec.band
            assert hdr.exptime == pytest.approx(spec.exptime)
            assert hdr.mjd_obs == pytest.approx(spec.mjd, abs=1e-6)
            assert sorted(raw.ccdnums) == sorted(truth.ccdnums(expnum))
            for ccdnum in raw.ccdnums:
                ccd = raw.read_ccd(ccdnum)
                model = get_ccd(ccdnum)
                assert ccd.detpos == model.detpos
                assert ccd.pixels.shape == (4146, 2160) and ccd.trimmed_shape == (4096, 2048)
                for name, amp in ccd.amps.items():
                    m = model.amps[name]
                    assert amp.data_section.slices == m.raw_data.slices
                    assert amp.bias_section.slices == m.raw_overscan.slices
                    assert amp.gain == pytest.approx(m.gain)
                    assert amp.read_noise_e == pytest.approx(m.read_noise_e)
                    assert amp.saturation_adu == pytest.approx(m.saturation_adu)


def test_overscan_and_sky_as_simulated(night):
    """Per amp: the overscan carries a bias level of its own; (data - overscan) x gain is the sky."""
    _out, truth = night
    expnum = truth.search_expnums[0]
    row = truth.ccd_row(expnum, 28)
    with RawExposure(truth.raw_path(expnum)) as raw:
        ccd = raw.read_ccd(28)
    levels = {}
    for name, amp in ccd.amps.items():
        over = np.median(amp.overscan[:, 5:])
        levels[name] = over
        assert 500 < over < 5000
        sky_e = (np.median(amp.data) - over) * amp.gain
        # the median of a sky-dominated amp sits within a few % of the true mean sky level
        assert sky_e == pytest.approx(row["sky_e_mean"], rel=0.04)
        # overscan noise is the read noise (ADU) with a bit of row drift
        over = amp.overscan[:, 5:]
        assert 0.8 < np.std(over - np.median(over, axis=1)[:, None]) * amp.gain / amp.read_noise_e < 1.2
    assert abs(levels["A"] - levels["B"]) > 1.0


def test_header_wcs_is_off_like_a_raw_header(night):
    """The raw TAN WCS is near but not on the truth: pointing error plus neglected distortion."""
    from astropy.wcs import WCS

    _out, truth = night
    expnum = truth.search_expnums[0]
    with RawExposure(truth.raw_path(expnum)) as raw:
        ccd = raw.read_ccd(28)
    wcs = WCS(ccd.header)
    xs = np.array([100.0, 1000.0, 1900.0])
    ys = np.array([200.0, 2000.0, 3900.0])
    dx = min(a.data_section.slices[1].start for a in ccd.amps.values())
    dy = min(a.data_section.slices[0].start for a in ccd.amps.values())
    ra_h, dec_h = wcs.all_pix2world(xs + dx, ys + dy, 0)  # the raw WCS is in raw pixel coordinates
    ra_t, dec_t = truth.true_pixel_to_sky(expnum, 28, xs, ys)
    sep = np.hypot((ra_h - ra_t) * np.cos(np.deg2rad(dec_t)), dec_h - dec_t) * 3600
    assert 0.3 < sep.max() < 25.0


def test_refcat_from_sim_gaia_returns_exactly_the_footprint(night, tmp_path):
    out, truth = night
    store_dir = tmp_path / "store"
    index = ingest_gaia([out / "gaia" / "gaia_sim.csv"], store_dir, order=8)
    gaia = read_csv(out / "gaia" / "gaia_sim.csv")
    assert index.total == len(gaia)
    spec = truth.exposure_spec(truth.search_expnums[0])
    ra_c, dec_c = ccd_corners_sky(28, spec.pointing, spec.distortion)
    epoch = mjd_to_jyear(spec.mjd)
    got = RefCatStore(store_dir).query_footprint(ra_c, dec_c, margin_arcsec=5.0, epoch=epoch)
    # brute force on the CSV: propagate every star, test against the same footprint
    pmra = np.nan_to_num(np.asarray(gaia["pmra"], dtype=float))
    pmdec = np.nan_to_num(np.asarray(gaia["pmdec"], dtype=float))
    dt = epoch - np.asarray(gaia["ref_epoch"], dtype=float)
    ra, dec = propagate_proper_motion(np.asarray(gaia["ra"]), np.asarray(gaia["dec"]), pmra, pmdec, dt)
    inside = convex_footprint(ra_c, dec_c, margin_arcsec=5.0).contains(ra, dec)
    expected = set(np.asarray(gaia["source_id"])[inside])
    assert len(expected) > 20
    assert set(np.asarray(got["source_id"])) == expected
