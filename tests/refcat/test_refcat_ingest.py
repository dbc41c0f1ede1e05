"""Ingest: CSV / CSV.gz / FITS / Parquet round trips, layout, index, errors, real Gaia rows."""

from __future__ import annotations

import glob
import json
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy_healpix import HEALPix
import astropy.units as u

from desgw.errors import CorruptFileError, DesgwInputError, MissingFileError
from desgw.refcat import RefCatStore, StoreIndex, ingest_gaia, refcat_ingest_main
from desgw.refcat.ingest import pixel_path

from refcat_factory import GAIA_COLUMNS, gaia_like, random_cap

REAL_GAIA = sorted(glob.glob("/work/shared/realdata/legacypipe/testcase*/gaia/chunk-*.fits"))


def _catalog(n=3000, seed=5, ra0=30.0, dec0=-20.0, radius=1.5, first_id=1):
    rng = np.random.default_rng(seed)
    ra, dec = random_cap(rng, n, ra0, dec0, radius)
    return gaia_like(rng, ra, dec, first_id=first_id)


def _write(cat: dict, path: Path, fmt: str, upper: bool = False) -> Path:
    names = {k: (k.upper() if upper else k) for k in cat}
    if fmt == "parquet":
        pq.write_table(pa.table({names[k]: v for k, v in cat.items()}), path)
    elif fmt == "fits":
        Table({names[k]: v for k, v in cat.items()}).write(path, format="fits")
    else:  # csv / csv.gz: text with full float precision
        tab = pa.table({names[k]: v for k, v in cat.items()})
        if str(path).endswith(".gz"):
            with pa.CompressedOutputStream(str(path), "gzip") as out:
                pacsv.write_csv(tab, out)
        else:
            pacsv.write_csv(tab, path)
    return path


def _read_store(store: Path) -> dict[str, np.ndarray]:
    idx = StoreIndex.read(store)
    tabs = [pq.read_table(pixel_path(store, idx.order, p)) for p in sorted(idx.pixel_counts)]
    tab = pa.concat_tables(tabs)
    order = np.argsort(tab.column("source_id").to_numpy())
    return {c: tab.column(c).to_numpy()[order] for c in tab.column_names}


@pytest.mark.parametrize("fmt,suffix,upper", [
    ("parquet", ".parquet", False), ("fits", ".fits", False), ("fits", ".fits", True),
    ("csv", ".csv", False), ("csv", ".csv.gz", False)])
def test_round_trip(tmp_path, fmt, suffix, upper):
    cat = _catalog()
    src = _write(cat, tmp_path / f"gaia{suffix}", fmt, upper)
    store = tmp_path / "store"
    idx = ingest_gaia([src], store, order=6)
    assert idx.total == 3000 and idx.order == 6 and idx.nside == 64
    assert idx.ref_epoch == 2016.0
    got = _read_store(store)
    for name in GAIA_COLUMNS:
        exp = cat[name]
        if name == "ra":
            np.testing.assert_allclose(got[name], exp, rtol=0, atol=1e-12)
        elif exp.dtype == np.float32:
            assert got[name].dtype == np.float32
            np.testing.assert_array_equal(got[name], exp)
        else:
            np.testing.assert_array_equal(got[name], exp)
    assert got["source_id"].dtype == np.int64 and got["ra"].dtype == np.float64
    assert not got["pm_missing"].any()


def test_partition_layout_and_index(tmp_path):
    cat = _catalog(n=5000, radius=3.0)
    src = _write(cat, tmp_path / "g.parquet", "parquet")
    store = tmp_path / "s"
    idx = ingest_gaia([src], store, order=5, chunk_rows=700)  # many chunks
    doc = json.loads((store / "index.json").read_text())
    assert doc["order"] == 5 and doc["nside"] == 32 and doc["total"] == 5000
    assert sum(doc["pixels"].values()) == 5000
    hp = HEALPix(nside=32, order="nested")
    pix = hp.lonlat_to_healpix(cat["ra"] * u.deg, cat["dec"] * u.deg)
    expect = dict(zip(*np.unique(pix, return_counts=True)))
    assert {int(k): v for k, v in doc["pixels"].items()} == {int(k): int(v) for k, v in
                                                            expect.items()}
    files = sorted((store / "order=5").glob("pix=*.parquet"))
    assert len(files) == len(expect)
    # every star sits in the file of its own pixel
    for p in list(expect)[:5]:
        t = pq.read_table(pixel_path(store, 5, int(p)))
        ppix = hp.lonlat_to_healpix(t.column("ra").to_numpy() * u.deg,
                                    t.column("dec").to_numpy() * u.deg)
        assert np.all(ppix == p)
    # no staging or temporary files left behind
    assert [q.name for q in store.iterdir() if q.name.startswith(".")] == []
    assert idx.max_pm_masyr == pytest.approx(
        float(np.max(np.hypot(cat["pmra"].astype(float), cat["pmdec"].astype(float)))), rel=1e-6)
    assert StoreIndex.read(store).pixel_counts == idx.pixel_counts


def test_multiple_sources_missing_pm_duplicates_and_optional(tmp_path):
    a = _catalog(n=1000, seed=1)
    b = _catalog(n=800, seed=2, first_id=5000)
    b["pmra"][:10] = np.nan
    b["pmdec"][5:15] = np.nan
    for k in ("phot_g_mean_flux_over_error", "phot_bp_mean_flux_over_error",
              "phot_rp_mean_flux_over_error", "ra_error"):
        del b[k]
    dup = {k: v[:50] for k, v in a.items()}  # 50 repeated rows (same source_id)
    srcs = [_write(a, tmp_path / "a.fits", "fits"), _write(b, tmp_path / "b.csv", "csv"),
            _write(dup, tmp_path / "dup.parquet", "parquet")]
    idx = ingest_gaia(srcs, tmp_path / "s", order=7)
    assert idx.total == 1800
    got = _read_store(tmp_path / "s")
    nb = got["source_id"] >= 5000
    miss = got["pm_missing"]
    assert miss.sum() == 15 and np.all(nb[miss])
    assert np.all(got["pmra"][miss] == 0) and np.all(got["pmdec"][miss] == 0)
    # optional columns present in one source are kept, NaN for the other source
    assert np.all(np.isnan(got["ra_error"][nb])) and np.all(np.isfinite(got["ra_error"][~nb]))
    assert np.all(np.isnan(got["phot_g_mean_flux_over_error"][nb]))
    np.testing.assert_array_equal(got["dec_error"][nb], b["dec_error"])


def test_nonfinite_positions_dropped(tmp_path):
    cat = _catalog(n=100)
    cat["ra"][3] = np.nan
    cat["dec"][7] = np.inf
    idx = ingest_gaia([_write(cat, tmp_path / "c.parquet", "parquet")], tmp_path / "s")
    assert idx.total == 98


def test_overwrite(tmp_path):
    src1 = _write(_catalog(n=500, ra0=10), tmp_path / "a.parquet", "parquet")
    src2 = _write(_catalog(n=300, ra0=200), tmp_path / "b.parquet", "parquet")
    store = tmp_path / "s"
    i1 = ingest_gaia([src1], store, order=7)
    with pytest.raises(FileExistsError):
        ingest_gaia([src2], store, order=7)
    i2 = ingest_gaia([src2], store, order=6, overwrite=True)
    assert i2.total == 300
    assert not (store / "order=7").exists()  # old partition removed
    assert len(list((store / "order=6").glob("*.parquet"))) == len(i2.pixel_counts)
    assert i1.order == 7
    assert len(RefCatStore(store).query_cone(200, -20, 3)) == 300
    assert len(RefCatStore(store).query_cone(10, -20, 3)) == 0


def test_missing_required_column_names_file_and_column(tmp_path):
    cat = _catalog(n=20)
    del cat["pmdec"]
    src = _write(cat, tmp_path / "nopm.fits", "fits")
    with pytest.raises(DesgwInputError, match="pmdec") as info:
        ingest_gaia([src], tmp_path / "s")
    assert "nopm.fits" in str(info.value)
    assert info.value.column == "pmdec"
    err = pickle.loads(pickle.dumps(info.value))
    assert str(err) == str(info.value)
    assert not (tmp_path / "s" / "index.json").exists()


def test_bad_inputs(tmp_path):
    with pytest.raises(MissingFileError):
        ingest_gaia([tmp_path / "nothere.csv"], tmp_path / "s")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(DesgwInputError, match="unsupported"):
        ingest_gaia([tmp_path / "x.txt"], tmp_path / "s")
    (tmp_path / "bad.fits").write_bytes(b"not a fits file at all" * 100)
    with pytest.raises(CorruptFileError, match=r"bad\.fits"):
        ingest_gaia([tmp_path / "bad.fits"], tmp_path / "s")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1garbage")
    with pytest.raises(CorruptFileError):
        ingest_gaia([tmp_path / "bad.parquet"], tmp_path / "s")
    cat = _catalog(n=5)
    tab = pa.table({k: v for k, v in cat.items()}).set_column(
        0, "source_id", pa.array(["a", "b", "c", "d", "e"]))
    pacsv.write_csv(tab, tmp_path / "strid.csv")
    with pytest.raises(CorruptFileError, match=r"strid\.csv"):
        ingest_gaia([tmp_path / "strid.csv"], tmp_path / "s")
    with pytest.raises(ValueError, match="order"):
        ingest_gaia([tmp_path / "strid.csv"], tmp_path / "s", order=20)
    with pytest.raises(ValueError, match="no sources"):
        ingest_gaia([], tmp_path / "s")
    with pytest.raises(MissingFileError):
        RefCatStore(tmp_path / "empty")


def test_refcat_ingest_main_expands_directories(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    _write(_catalog(n=100, seed=1), d / "a.parquet", "parquet")
    _write(_catalog(n=50, seed=2, first_id=1000), d / "b.fits", "fits")
    (d / "README").write_text("ignored")
    idx = refcat_ingest_main([d], tmp_path / "s", order=4)
    assert idx.total == 150 and len(idx.sources) == 2


@pytest.mark.skipif(not REAL_GAIA, reason="real Gaia chunks not present")
def test_real_gaia_dr2_chunks(tmp_path):
    idx = ingest_gaia(REAL_GAIA, tmp_path / "real", order=7)
    rows = {}
    for f in REAL_GAIA:
        with fits.open(f) as h:
            d = h[1].data
            for sid, ra, dec, g in zip(d["source_id"], d["ra"], d["dec"], d["phot_g_mean_mag"]):
                rows[int(sid)] = (float(ra), float(dec), float(g))
    assert idx.total == len(rows)  # repeated chunks across test cases are de-duplicated
    assert idx.ref_epoch == 2015.5  # Gaia DR2
    got = _read_store(tmp_path / "real")
    for sid, ra, dec, g in zip(got["source_id"][:200], got["ra"], got["dec"],
                               got["phot_g_mean_mag"]):
        r0, d0, g0 = rows[int(sid)]
        assert ra == r0 and dec == d0 and (g == np.float32(g0) or np.isnan(g0))
    # DR2 stars with only a 2-parameter solution have no proper motion: flagged, pm = 0
    assert got["pm_missing"].sum() > 100
    assert np.all(got["pmra"][got["pm_missing"]] == 0)
    # a cone query around the first star returns it
    store = RefCatStore(tmp_path / "real")
    t = store.query_cone(float(got["ra"][0]), float(got["dec"][0]), 1 / 3600, epoch=2015.5)
    assert int(got["source_id"][0]) in set(t["source_id"].tolist())


@pytest.mark.parametrize("fmt,suffix", [("csv", ".csv"), ("csv", ".csv.gz"),
                                         ("parquet", ".parquet"), ("fits", ".fits")])
def test_variable_flag_text_or_boolean(tmp_path, fmt, suffix):
    """Gaia's phot_variable_flag, as the archive writes it ("VARIABLE" / "NOT_AVAILABLE", or
    empty) or as true/false (legacypipe's chunks), is stored as 1 / 0 / NaN."""
    cat = _catalog(n=400, seed=9)
    n = len(cat["source_id"])
    text = np.array(["NOT_AVAILABLE"] * n, dtype=object)
    text[::7] = "VARIABLE"
    if fmt != "fits":  # FITS text columns have no null
        text[3::50] = None
    as_text = dict(cat, phot_variable_flag=text.astype(str) if fmt == "fits" else text)
    store = tmp_path / "text"
    ingest_gaia([_write(as_text, tmp_path / f"t{suffix}", fmt)], store, order=5)
    got = _read_store(store)
    order = np.argsort(np.asarray(cat["source_id"]))
    want = np.where(text[order] == "VARIABLE", 1.0, 0.0)
    if fmt != "fits":
        want[np.asarray([v is None for v in text[order]])] = np.nan
    np.testing.assert_array_equal(got["phot_variable_flag"], want)
    # the same flags as booleans
    as_bool = dict(cat, phot_variable_flag=(text == "VARIABLE"))
    store_b = tmp_path / "bool"
    ingest_gaia([_write(as_bool, tmp_path / f"b{suffix}", fmt)], store_b, order=5)
    got_b = _read_store(store_b)
    np.testing.assert_array_equal(got_b["phot_variable_flag"], (text[order] == "VARIABLE") * 1.0)


@pytest.mark.skipif(not REAL_GAIA, reason="real Gaia chunks not present")
def test_real_gaia_variable_flag_and_photometric_errors(tmp_path):
    """Real DR2 rows keep their variability flags and flux-over-error columns."""
    ingest_gaia(REAL_GAIA, tmp_path / "real", order=7)
    got = _read_store(tmp_path / "real")
    assert np.isin(got["phot_variable_flag"], [0.0, 1.0]).all()
    foe = got["phot_bp_mean_flux_over_error"]
    assert np.nanmedian(foe) > 5 and np.isfinite(foe).mean() > 0.8
