"""Settings precedence (options > env > TOML > defaults) and the raw/calibration file look-ups."""

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from desgw.errors import DesgwInputError, MissingFileError
from desgw.io.settings import Settings, load_settings


def test_defaults_are_relative_to_the_working_directory(tmp_path):
    s = load_settings(environ={}, cwd=tmp_path)
    assert s == Settings(tmp_path / "raw", tmp_path / "calib", tmp_path / "refcat", tmp_path / "out")
    assert s.db_url is None


def test_precedence_option_over_env_over_toml(tmp_path):
    (tmp_path / "desgw.toml").write_text(
        'raw_dir = "toml_raw"\ncalib_dir = "/abs/calib"\nrefcat = "toml_refcat"\n'
        'out = "toml_out"\ndb_url = "sqlite:///toml.sqlite"\n')
    env = {"DESGW_RAW_DIR": "/env/raw", "DESGW_OUT": "env_out"}
    s = load_settings(raw_dir="/opt/raw", environ=env, cwd=tmp_path)
    assert s.raw_dir == Path("/opt/raw")                 # option wins over env and TOML
    assert s.out_root == tmp_path / "env_out"            # env (relative: to the cwd) over TOML
    assert s.calib_dir == Path("/abs/calib")             # TOML
    assert s.refcat_dir == tmp_path / "toml_refcat"      # TOML alias, relative to the file
    assert s.db_url == "sqlite:///toml.sqlite"


def test_config_file_from_env_relative_to_its_folder_and_desgw_table(tmp_path):
    conf = tmp_path / "site" / "conf.toml"
    conf.parent.mkdir()
    conf.write_text('[desgw]\nraw_dir = "raw2"\n')
    s = load_settings(environ={"DESGW_CONFIG": str(conf)}, cwd=tmp_path)
    assert s.raw_dir == tmp_path / "site" / "raw2"
    assert s.calib_dir == tmp_path / "calib"


def test_bad_or_missing_settings_file(tmp_path):
    with pytest.raises(MissingFileError):
        load_settings(config_file=tmp_path / "nope.toml", environ={}, cwd=tmp_path)
    bad = tmp_path / "bad.toml"
    bad.write_text("raw_dir = [1, 2\n")
    with pytest.raises(DesgwInputError, match="TOML"):
        load_settings(config_file=bad, environ={}, cwd=tmp_path)
    bad.write_text("raw_dir = 3\n")
    with pytest.raises(DesgwInputError, match="string"):
        load_settings(config_file=bad, environ={}, cwd=tmp_path)


def _fits(path: Path, **cards) -> None:
    hdr = fits.Header()
    for k, v in cards.items():
        hdr[k] = v
    fits.HDUList([fits.PrimaryHDU(header=hdr)]).writeto(path)


def test_raw_lookup_by_name_then_by_expnum_keyword(tmp_path):
    s = load_settings(environ={}, cwd=tmp_path)
    s.raw_dir.mkdir()
    with pytest.raises(MissingFileError, match="DECam_00000042"):
        s.raw_path(42)
    _fits(s.raw_dir / "c4d_190815_022400_ori.fits", EXPNUM=41)
    _fits(s.raw_dir / "c4d_190815_023000_ori.fits", EXPNUM=42)
    assert s.raw_path(42).name == "c4d_190815_023000_ori.fits"
    _fits(s.raw_dir / "DECam_00000042.fits", EXPNUM=42)
    assert s.raw_path(42).name == "DECam_00000042.fits"     # the desgw name first
    with pytest.raises(MissingFileError):
        s.raw_path(43)


def test_calibration_lookup(tmp_path):
    s = load_settings(environ={}, cwd=tmp_path)
    s.calib_dir.mkdir()
    with pytest.raises(MissingFileError, match="bias"):
        s.calib_paths("r")
    for name in ("bias.fits.fz", "flat_g.fits"):
        (s.calib_dir / name).write_bytes(np.zeros(10, np.uint8).tobytes())
    with pytest.raises(MissingFileError, match="flat_r"):
        s.calib_paths("r")
    c = s.calib_paths("g")
    assert (c.bias.name, c.flat.name, c.bpm) == ("bias.fits.fz", "flat_g.fits", None)
    (s.calib_dir / "bpm.fits.fz").write_bytes(b"x")
    assert s.calib_paths("g").bpm == s.calib_dir / "bpm.fits.fz"
