"""desgw calib import: CP master bias / dome flat MEFs and DECam bad-pixel masks, written in
the archive's format, converted into desgw's calibration layout and read back by CalibFile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from click.testing import CliRunner

from desgw.cli import main
from desgw.instrument import get_ccd
from desgw.io.calib import CalibFile

pytestmark = pytest.mark.slow  # 4096 x 2048 float images written losslessly: ~1 min

GAINS = {28: (4.0, 4.2), 29: (3.8, 3.9)}


def _cp_master(path: Path, obstype: str, images: dict, *, bunit: str | None, filt: str = ""):
    """A CP master calibration as the archive serves it: PROCTYPE MasterCal, one compressed
    image HDU per CCD (EXTNAME DETPOS, CCDNUM, GAINA/B), CP-trimmed 2046 x 4094."""
    prim = fits.PrimaryHDU()
    prim.header["PROCTYPE"] = "MasterCal"
    prim.header["PRODTYPE"] = "image"
    prim.header["OBSTYPE"] = obstype
    prim.header["INSTRUME"] = "DECam"
    if filt:
        prim.header["FILTER"] = filt
    hdus = [prim]
    for ccd, img in images.items():
        h = fits.Header()
        h["EXTNAME"] = get_ccd(ccd).detpos
        h["CCDNUM"] = ccd
        h["GAINA"], h["GAINB"] = GAINS[ccd]
        h["LTV1"], h["LTV2"] = -1.0, -1.0
        if bunit:
            h["BUNIT"] = bunit
        if str(path).endswith(".fz"):  # lossless, so that the values can be compared
            hdus.append(fits.CompImageHDU(img.astype(np.float32), header=h,
                                          compression_type="GZIP_2", quantize_level=0.0))
        else:
            hdus.append(fits.ImageHDU(img.astype(np.float32), header=h))
    fits.HDUList(hdus).writeto(path)
    return path


def _amp_gain(ccd, ncols=2048):
    amps = get_ccd(ccd).amp_at(np.arange(ncols))
    ga, gb = GAINS[ccd]
    return np.where(amps == "A", ga, gb)


@pytest.fixture(scope="module")
def calib_env(tmp_path_factory):
    rng = np.random.default_rng(3)
    tmp = tmp_path_factory.mktemp("calib_import")
    bias_adu = {c: rng.normal(2.0, 0.5, (4094, 2046)) for c in (28, 29)}
    flat = {c: rng.normal(1.3, 0.02, (4094, 2046)) * (1.0 + 0.1 * (c == 29)) for c in (28, 29)}
    src = tmp / "src"
    src.mkdir()
    b = _cp_master(src / "c4d_171110_zci_v1.fits.fz", "zero", bias_adu, bunit="adu")
    f = _cp_master(src / "c4d_171110_fci_r_v1.fits", "dome flat", flat, bunit=None,
                   filt="r DECam SDSS c0002 6415.0 1480.0")
    nob = _cp_master(src / "c4d_171110_zci_nounit.fits", "zero", {29: bias_adu[29]},
                     bunit=None)
    bpm_files = []
    for c in (28, 29):
        m = np.zeros((4096, 2048), dtype=np.int16)
        m[100:110, 500] = 1
        m[2000, :] = 4 if c == 28 else 8
        h = fits.Header()
        h["CCDNUM"] = c
        p = src / f"DECam_Master_20170101_cd_{c}.fits"
        fits.PrimaryHDU(m, header=h).writeto(p)
        bpm_files.append(p)
    return tmp, bias_adu, flat, b, f, nob, bpm_files


def _run(args):
    return CliRunner().invoke(main, args)


def test_bias_adu_to_electrons_per_amplifier(calib_env):
    tmp, bias_adu, _, b, _, _, _ = calib_env
    res = _run(["calib", "import", "bias", str(b), "--calib-dir", str(tmp / "calib")])
    assert res.exit_code == 0, res.output
    assert "bias: 2 CCDs" in res.output
    with CalibFile(tmp / "calib" / "bias.fits.fz", "bias") as cf:
        for ccd in (28, 29):
            got = cf.read(ccd)
            assert got.shape == (4096, 2048)
            want = bias_adu[ccd] * _amp_gain(ccd)[1:-1][None, :]
            np.testing.assert_allclose(got[1:-1, 1:-1], want, rtol=1e-6, atol=1e-5)
            assert np.all(got[0] == 0) and np.all(got[:, -1] == 0)
    again = _run(["calib", "import", "bias", str(b), "--calib-dir", str(tmp / "calib")])
    assert again.exit_code == 3 and "--overwrite" in again.output


def test_bias_without_unit_needs_it(calib_env):
    tmp, bias_adu, _, _, _, nob, _ = calib_env
    res = _run(["calib", "import", "bias", str(nob), "--calib-dir", str(tmp / "c2")])
    assert res.exit_code == 3
    assert "no BUNIT" in res.output and "c4d_171110_zci_nounit.fits" in res.output
    res = _run(["calib", "import", "bias", str(nob), "--bias-unit", "electron",
                "--calib-dir", str(tmp / "c2")])
    assert res.exit_code == 0, res.output
    with CalibFile(tmp / "c2" / "bias.fits.fz", "bias") as cf:
        np.testing.assert_allclose(cf.read(29)[1:-1, 1:-1], bias_adu[29], rtol=1e-6)


def test_flat_normalised_per_ccd_band_from_filter(calib_env):
    tmp, _, flat, _, f, _, _ = calib_env
    res = _run(["calib", "import", "flat", str(f), "--calib-dir", str(tmp / "calib")])
    assert res.exit_code == 0, res.output
    with CalibFile(tmp / "calib" / "flat_r.fits.fz", "flat") as cf:
        for ccd in (28, 29):
            got = cf.read(ccd)
            inner = got[1:-1, 1:-1]
            assert inner.mean() == pytest.approx(1.0, abs=1e-6)
            np.testing.assert_allclose(inner, flat[ccd] / flat[ccd].mean(), rtol=1e-5)
            assert np.all(got[0] == 1.0)


def test_bpm_from_per_ccd_files(calib_env):
    tmp, *_, bpm_files = calib_env
    res = _run(["calib", "import", "bpm", *map(str, bpm_files), "--calib-dir",
                str(tmp / "calib")])
    assert res.exit_code == 0, res.output
    with CalibFile(tmp / "calib" / "bpm.fits.fz", "bpm") as cf:
        m = cf.read(29)
        assert m[105, 500] == 1 and m[2000, 7] == 8 and m[0, 0] == 0
        assert int((m != 0).sum()) == 10 + 2048


def test_ingest_says_cp_master_calibration(calib_env, tmp_path):
    tmp, *_ = calib_env
    res = _run(["ingest", str(tmp / "src" / "c4d_171110_zci_v1.fits.fz"), "--db-url",
                f"sqlite:///{tmp_path / 'db.sqlite'}"])
    assert "CP master calibration, not registered" in res.output
