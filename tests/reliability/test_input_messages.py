"""Issue 10 case 7 (messages): out-of-range Gaia rows are called out of range (not non-finite),
and ``ingest`` of two files with one EXPNUM says so instead of "registered" twice."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from desgw.db import connect, get_exposure, ingest_raw
from desgw.refcat import ingest_gaia

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "db"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "refcat"))
from refcat_factory import gaia_like, random_cap
from test_db_ingest import write_primary


def test_out_of_range_rows_are_named_as_such(tmp_path, caplog):
    rng = np.random.default_rng(3)
    ra, dec = random_cap(rng, 200, 30.0, -20.0, 1.0)
    cat = gaia_like(rng, ra, dec)
    cat["dec"] = np.asarray(cat["dec"], float).copy()
    cat["ra"] = np.asarray(cat["ra"], float).copy()
    cat["dec"][:3] = [95.0, -91.0, 120.0]
    cat["ra"][3:5] = np.nan
    src = tmp_path / "g.parquet"
    pq.write_table(pa.table(cat), src)
    with caplog.at_level(logging.WARNING):
        idx = ingest_gaia([src], tmp_path / "store", order=6)
    assert sum(idx.pixel_counts.values()) == 195
    text = caplog.text
    assert "dropped 3 rows with dec out of range" in text
    assert "dropped 2 rows with non-finite ra/dec" in text


def test_two_files_with_one_expnum(tmp_path):
    a = write_primary(tmp_path / "a.fits", EXPNUM=601)
    b = write_primary(tmp_path / "b.fits", EXPNUM=601, AIRMASS=1.9)
    with connect(f"sqlite:///{tmp_path / 'db.sqlite'}") as db:
        report = ingest_raw(db, [a, b])
        assert report.registered == (601,)
        (path, why), = report.rejected
        assert path == b and "same EXPNUM as" in why and a in why
        assert get_exposure(db, 601).raw_path == a


def test_exptime_zero_names_the_file(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
    from io_rawfactory import ccd_header, ccd_pixels, primary_header

    from desgw.errors import HeaderError
    from desgw.io.raw import write_raw_exposure
    from desgw.workflow.se_ccd import run_ccd_task
    from desgw.workflow.se_types import CCDTask

    ph = primary_header(expnum=668439)
    ph["EXPTIME"] = 0.0
    h = ccd_header(28, "S28")
    raw = tmp_path / "DECam_00668439.fits"
    write_raw_exposure(raw, ph, [(h, ccd_pixels(h, 1))])
    task = CCDTask(expnum=668439, ccdnum=28, band="r", rnum=1, pnum=1, raw_path=str(raw),
                   bias_path=str(tmp_path / "bias.fits"), flat_path=str(tmp_path / "flat.fits"),
                   bpm_path=None, refcat_dir=str(tmp_path), outdir=str(tmp_path / "out"))
    s = run_ccd_task(task)
    assert not s.ok and isinstance(s.error, HeaderError)
    assert str(raw) in str(s.error) and "EXPTIME is 0.0" in str(s.error)


def test_truncated_raw_file_is_one_bad_input_error(tmp_path):
    """A truncated raw file gave one identical failure per CCD; now one error, exit 3."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
    from click.testing import CliRunner
    from io_rawfactory import ccd_header, ccd_pixels, primary_header

    from desgw.cli import main
    from desgw.io.raw import write_raw_exposure

    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    raw = raw_dir / "DECam_00668439.fits"
    items = []
    for ccd, detpos in ((28, "S28"), (29, "S29"), (35, "N4")):
        h = ccd_header(ccd, detpos)
        items.append((h, ccd_pixels(h, ccd)))
    write_raw_exposure(raw, primary_header(expnum=668439), items)
    data = raw.read_bytes()
    raw.write_bytes(data[: len(data) - 3_000_000])
    res = CliRunner().invoke(main, ["se", "-E", "668439", "-r", "1", "-p", "1", "-c", "28,29,35",
                                    "-s", "--raw-dir", str(raw_dir), "--calib-dir",
                                    str(tmp_path), "--refcat", str(tmp_path), "--out",
                                    str(tmp_path / "out")])
    assert res.exit_code == 3, (res.output, res.exception)
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(raw) in lines[0] and "truncated" in lines[0]
