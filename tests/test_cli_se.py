"""`desgw se` and `desgw expcalib`: options, products, exit codes 0 / 1 / 3."""

import pytest
from click.testing import CliRunner

from desgw.cli import main
from desgw.io.naming import allzp_csv_name, immask_name, zero_csv_name

EXPNUM, R, P = 880001, 4, 1

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sim_dirs(tmp_path_factory):
    """A simulated exposure (CCDs 28, 29), its Gaia store and an empty product root."""
    from desgw.refcat import ingest_gaia
    from desgw.sim.night import simulate_night

    root = tmp_path_factory.mktemp("cli_se_sim")
    simulate_night(root, seed=5, ccds=[28, 29], n_templates=0, n_search=1)
    ingest_gaia(sorted((root / "gaia").glob("*.csv")), root / "refcat")
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
