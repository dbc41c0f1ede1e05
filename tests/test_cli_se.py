"""`desgw se` and `desgw expcalib`: options, products, exit codes 0 / 1 / 3."""

import pytest
from click.testing import CliRunner

from desgw.cli import main
from desgw.io.naming import allzp_csv_name, immask_name, zero_csv_name

EXPNUM, R, P = 880001, 4, 1

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sim_dirs(search_sim_2ccd, tmp_path_factory):
    """A simulated exposure (CCDs 28, 29) and its Gaia store (links to the shared, read-only
    folders) and an empty product root ``out``."""
    root = tmp_path_factory.mktemp("cli_se")
    for name in ("raw", "calib", "refcat"):
        (root / name).symlink_to(search_sim_2ccd / name, target_is_directory=True)
    return root


def _dirs(root):
    return ["--raw-dir", str(root / "raw"), "--calib-dir", str(root / "calib"),
            "--refcat", str(root / "refcat"), "--out", str(root / "out")]


@pytest.fixture(scope="module")
def processed(sim_dirs):
    """`desgw se -c 28 -C -s -Y` once: its result and the exposure directory."""
    result = CliRunner().invoke(main, ["se", "-E", str(EXPNUM), "-r", str(R), "-p", str(P),
                                       "-b", "r", "-S", "120", "-c", "28", "-C", "-s", "-Y",
                                       *_dirs(sim_dirs)])
    expdirs = list((sim_dirs / "out" / "scratch" / "gw" / "exp").glob(f"*/{EXPNUM}"))
    return result, expdirs


def test_se_processes_calibrates_and_exits_0(processed):
    result, expdirs = processed
    assert result.exit_code == 0, result.output
    assert "1 processed" in result.output and "zeropoint" in result.output
    assert "-Y" in result.output  # the compatibility switch says it has no effect
    assert len(expdirs) == 1
    d = expdirs[0]
    assert (d / immask_name(EXPNUM, "r", 28, R, P)).is_file()
    assert (d / zero_csv_name(EXPNUM, 28, R, P)).is_file()
    assert (d / f"{EXPNUM}.out").is_file()


def test_se_prints_one_named_zeropoint_the_one_in_the_files(processed):
    """The per-CCD zeropoint printed is Zero_*.csv's MAG_ZERO, and says so; the exposure line
    is allZP_*.csv's MAG_ZERO."""
    from desgw.io.zp_tables import read_expcalib_csv

    result, expdirs = processed
    d = expdirs[0]
    out = result.output
    assert "zeropoints: MAG_ZERO of Zero_*.csv" in out
    zero = read_expcalib_csv(d / zero_csv_name(EXPNUM, 28, R, P))
    assert f"MAG_ZERO {float(zero['MAG_ZERO'][0]):.4f}" in out
    allzp = read_expcalib_csv(d / allzp_csv_name(EXPNUM, R, P))
    assert f"exposure MAG_ZERO (allZP_*.csv): {float(allzp['MAG_ZERO'][0]):.4f}" in out
    assert " zp " not in out  # the SE (weighted) value is not printed beside it


def test_zp_csv_fwhmpsf_columns_filled(processed):
    """FWHMPSF_IMAGE / FWHMPSF_WORLD of _ZP.csv: the PSF model's FWHM, not NaN."""
    import numpy as np

    from desgw.io.naming import zp_csv_name
    from desgw.io.zp_tables import read_expcalib_csv

    _, expdirs = processed
    t = read_expcalib_csv(expdirs[0] / zp_csv_name(EXPNUM, 28, R, P))
    fi = np.asarray(t["FWHMPSF_IMAGE"], dtype=float)
    fw = np.asarray(t["FWHMPSF_WORLD"], dtype=float)
    assert np.all(np.isfinite(fi)) and np.all(np.isfinite(fw))
    assert 2.0 < np.median(fi) < 8.0  # pixels (simulated seeing ~1")
    np.testing.assert_allclose(fw * 3600 / fi, 0.263, rtol=0.03)  # DECam 0.263"/px


def test_se_exit_1_lists_the_failed_ccd_and_skips_the_done_one(sim_dirs, processed):
    result = CliRunner().invoke(main, ["se", "-E", str(EXPNUM), "-r", str(R), "-p", str(P),
                                       "-c", "28,30", *_dirs(sim_dirs)])
    assert result.exit_code == 1, result.output
    assert "1 skipped" in result.output
    assert "FAILED CCD 30" in result.output and "not in the file" in result.output


def test_se_exit_3_on_bad_input(sim_dirs, tmp_path):
    runner = CliRunner()
    missing = runner.invoke(main, ["se", "-E", "123", "-r", "1", "-p", "1", *_dirs(sim_dirs)])
    assert missing.exit_code == 3
    assert "DECam_00000123" in missing.output
    wrong_band = runner.invoke(main, ["se", "-E", str(EXPNUM), "-r", "1", "-p", "1", "-b", "g",
                                      *_dirs(sim_dirs)])
    assert wrong_band.exit_code == 3
    assert "band" in wrong_band.output and "'r'" in wrong_band.output
    no_calib = runner.invoke(main, ["se", "-E", str(EXPNUM), "-r", "1", "-p", "1",
                                    *_dirs(sim_dirs)[:2], "--calib-dir", str(tmp_path),
                                    *_dirs(sim_dirs)[4:]])
    assert no_calib.exit_code == 3 and "bias" in no_calib.output


def test_se_usage_errors(sim_dirs):
    runner = CliRunner()
    assert runner.invoke(main, ["se", "-E", str(EXPNUM), "-r", "1"]).exit_code == 2  # no -p
    bad = runner.invoke(main, ["se", "-E", str(EXPNUM), "-r", "1", "-p", "1", "-d", "tape"])
    assert bad.exit_code == 2


@pytest.mark.parametrize("command", ["se", "sediff"])
def test_rp_errors_show_this_commands_form(command):
    """-r/-p of se and sediff are the numbers of r{R}p{P}; diffimg's forms get an error that
    shows this command's form."""
    runner = CliRunner()
    extra = ["-S", "91"] if command == "sediff" else []
    res = runner.invoke(main, [command, "-E", "1", "-r", "r4p7", "-p", "7", *extra])
    assert res.exit_code == 2
    assert f"`desgw {command}` takes the processing version as two numbers, -r R -p P" in res.output
    assert "'r4p7' is diffimg's -r form" in res.output
    res = runner.invoke(main, [command, "-E", "1", "-r", "4", "-p", "dp91", *extra])
    assert res.exit_code == 2 and "looks like a season" in res.output
    # "r4" / "p7" are accepted for the numbers (they fail later, on the missing raw file)
    res = runner.invoke(main, [command, "-E", "1", "-r", "r4", "-p", "p7", *extra,
                               "--raw-dir", "/nonexistent-raw"])
    assert res.exit_code != 2, res.output


def test_expcalib_on_processed_fullcats(sim_dirs, processed):
    _, expdirs = processed
    d = expdirs[0]
    allzp = d / allzp_csv_name(EXPNUM, R, P)
    before = allzp.stat().st_mtime_ns
    runner = CliRunner()
    result = runner.invoke(main, ["expcalib", "--expnum", str(EXPNUM), "--reqnum", str(R),
                                  "--attnum", str(P), "--ccd", "28", "--magsType", "mag_auto",
                                  "--sex_mag_zeropoint", "25", "--verbose", "1", "--debug",
                                  "--out", str(sim_dirs / "out"),
                                  "--refcat", str(sim_dirs / "refcat")])
    assert result.exit_code == 0, result.output
    assert "CCD 28" in result.output and "mag_auto" in result.output
    assert allzp.stat().st_mtime_ns > before
    assert "mag_auto" in allzp.read_text()
    assert any(d.glob("*_match.csv"))  # --debug
    none = runner.invoke(main, ["expcalib", "--expnum", str(EXPNUM), "--reqnum", "99",
                                "--attnum", "99", "--out", str(sim_dirs / "out"),
                                "--refcat", str(sim_dirs / "refcat")])
    assert none.exit_code == 3 and "r99p99" in none.output


def test_expcalib_puts_detections_on_its_zeropoints(sim_dirs, processed, tmp_path):
    """With a database, ``desgw expcalib`` records its zeropoints and puts the exposure's
    detections (stored on the SE zeropoint by the CCD tasks) on them; an exposure the database
    does not know is reported."""
    import math
    from types import SimpleNamespace

    from desgw.db import (NewDetection, connect, get_detections, get_zeropoints,
                          register_exposure, replace_ccd_results)
    from desgw.io.zp_tables import read_expcalib_csv

    url = f"sqlite:///{tmp_path / 'desgw.db'}"
    args = ["expcalib", "--expnum", str(EXPNUM), "--reqnum", str(R), "--attnum", str(P),
            "--ccd", "28", "--out", str(sim_dirs / "out"), "--refcat", str(sim_dirs / "refcat"),
            "--db-url", url]
    with connect(url):
        pass
    runner = CliRunner()
    unknown = runner.invoke(main, args)
    assert unknown.exit_code == 0, unknown.output
    assert "not registered" in unknown.output
    with connect(url) as db:
        register_exposure(db, SimpleNamespace(
            expnum=EXPNUM, nite=20190901, mjd_obs=58727.1, band="r", exptime=90.0,
            ra_deg=10.0, dec_deg=-43.0, object=None, propid=None, obstype="object",
            airmass=1.1, kind="raw"), "/raw/x.fits.fz")
        replace_ccd_results(db, EXPNUM, 28, detections=[NewDetection(
            ra=10.0, dec=-43.0, flux=500.0, fluxerr=20.0, snr=25.0,
            mag=31.0 - 2.5 * math.log10(500.0), zp=31.0, zp_source="se")])
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "1 detections' magnitudes" in result.output
    zp = float(read_expcalib_csv(_zero_csv(processed))["MAG_ZERO"][0])
    with connect(url) as db:
        (det,) = get_detections(db, expnum=EXPNUM)
        recorded = {z.ccdnum: z.zp for z in get_zeropoints(db, EXPNUM, rnum=R, pnum=P)}
    assert det.zp_source == "expcalib" and det.zp == pytest.approx(zp, abs=2e-6)
    assert det.mag == pytest.approx(zp - 2.5 * math.log10(500.0), abs=2e-6)
    assert recorded[28] == pytest.approx(zp, abs=2e-6) and 0 in recorded


def _zero_csv(processed):
    _, expdirs = processed
    return expdirs[0] / zero_csv_name(EXPNUM, 28, R, P)


def test_every_fullcat_column_is_filled(processed):
    """#14 "every catalog column filled or dropped": no column of the fullcat is NaN in every
    row (a column nothing fills is dropped, not written empty)."""
    import numpy as np

    from desgw.io.naming import fullcat_name
    from desgw.io.products import read_fits_table

    _, expdirs = processed
    cat = read_fits_table(expdirs[0] / fullcat_name(EXPNUM, "r", 28, R, P))
    assert len(cat) > 20
    empty = [c for c in cat.colnames if np.asarray(cat[c]).dtype.kind == "f"
             and not np.isfinite(np.asarray(cat[c], dtype=np.float64)).any()]
    assert empty == []


def test_readme_states_the_shipped_real_bogus_threshold():
    """#14: the real/bogus threshold is published in the README, and is the shipped model's."""
    from pathlib import Path

    from desgw.workflow.diff_ccd import real_bogus_threshold

    threshold = real_bogus_threshold()
    assert threshold is not None
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert f"real/bogus threshold of the shipped model ({threshold:.3f}" in readme
