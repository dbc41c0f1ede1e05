"""Benchmark: the product writes of one search CCD, a baseline tree against this one,
interleaved on one core, with a check that both wrote the same products.

Usage: ``python bench/bench_writes_ab.py WORKDIR OLD_SRC [--ccd 28] [--repeat 7]``

``WORKDIR`` is a work folder of ``bench/bench_exposure.py`` (or ``bench/bench_diff.py``) after
a run: raw, calibrations, Gaia store, the template SE products and the search exposure's SE
products under ``WORKDIR/out`` (it is not modified; products go to a scratch folder, deleted
after). ``OLD_SRC`` is the baseline's ``src`` folder (e.g. ``git archive main src | tar -x -C
DIR`` then ``DIR/src``), imported as ``desgw_old`` with only its import statements renamed
(``bench_se_ab._old_package(..., imports_only=True)``: the text it writes, e.g. header
comments that name desgw, stays).

The search CCD is processed once (SE, then its difference against the overlapping template
CCDs, as the fused task does), then, alternately old and new, best of ``--repeat`` CPU
seconds (``time.process_time``; pinned to one core, BLAS/numba threads 1):

* ``se_write``: ``workflow.se_ccd._write_products`` (immask, catalogue, PSF model, QC JSON);
* ``diff_write``: ``diff.pipeline_products.write_diff_products`` with the product header the
  difference task builds (difference image, candidate FITS and Parquet, fakes, stamps FITS,
  stamp PNGs, efficiency JSON);
* ``png``: ``diff.stamps.write_stamps_png`` of the same pictures alone;
* ``db``: ``workflow.diff_ccd._record_db`` (the CCD's template uses, fakes and detections,
  replacing the previous run's) into a copy of the work folder's SQLite database each.

Then every product of the last old and new runs is compared: FITS files byte for byte and,
read with astropy, HDU by HDU (header cards: keyword, value, comment; data), and each is read
by fitsio; PNGs and Parquet byte for byte; JSON documents equal but for ``timings``; the
two databases table by table (every row, ids included).
Prints one JSON object.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import importlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_se_ab import _old_package  # the old tree as desgw_old


def _fits_same(a: Path, b: Path) -> dict[str, Any]:
    """Byte equality and HDU-by-HDU equality (astropy) of two FITS files; fitsio reads ``b``."""
    import fitsio
    from astropy.io import fits

    out: dict[str, Any] = {"bytes_identical": a.read_bytes() == b.read_bytes()}
    problems: list[str] = []
    with fits.open(a) as ha, fits.open(b) as hb:
        if len(ha) != len(hb):
            problems.append(f"{len(ha)} HDUs against {len(hb)}")
        for i, (x, y) in enumerate(zip(ha, hb)):
            ca = [(c.keyword, repr(c.value), c.comment) for c in x.header.cards]
            cb = [(c.keyword, repr(c.value), c.comment) for c in y.header.cards]
            if ca != cb:
                problems.append(f"HDU {i}: header cards differ")
            da, db = x.data, y.data
            if (da is None) != (db is None):
                problems.append(f"HDU {i}: data in one file only")
            elif da is not None:
                if isinstance(da, np.ndarray) and da.dtype.names:
                    same = all(np.array_equal(np.asarray(da[n]), np.asarray(db[n]),
                                              equal_nan=np.asarray(da[n]).dtype.kind == "f")
                               for n in da.dtype.names)
                else:
                    arr = np.asarray(da)
                    same = np.array_equal(arr, np.asarray(db), equal_nan=arr.dtype.kind == "f")
                if not same:
                    problems.append(f"HDU {i}: data differ")
    with fitsio.FITS(str(b)) as f:
        for hdu in f:
            if hdu.has_data():
                hdu.read()
    out["hdus_equal"] = not problems
    if problems:
        out["problems"] = problems
    return out


def _tables(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of a SQLite file, sorted."""
    import sqlite3

    con = sqlite3.connect(path)
    try:
        names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {n: sorted(con.execute(f'SELECT * FROM "{n}"').fetchall(), key=repr)
                for n in names}
    finally:
        con.close()


def _compare_trees(old: Path, new: Path) -> dict[str, Any]:
    files: dict[str, Any] = {}
    names = sorted(str(p.relative_to(old)) for p in old.rglob("*") if p.is_file())
    names_new = sorted(str(p.relative_to(new)) for p in new.rglob("*") if p.is_file())
    ok = names == names_new
    for name in names:
        a, b = old / name, new / name
        if not b.exists():
            files[name] = "missing in the new run"
            continue
        if ".fits" in name:
            res = _fits_same(a, b)
            ok &= res["hdus_equal"]
        elif name.endswith(".json"):
            da, db = json.loads(a.read_text()), json.loads(b.read_text())
            for d in (da, db):
                d.pop("timings", None)
            res = {"equal_but_timings": da == db}
            ok &= res["equal_but_timings"]
        else:
            res = {"bytes_identical": a.read_bytes() == b.read_bytes()}
            ok &= res["bytes_identical"]
        files[name] = res
    n_bytes = sum(1 for v in files.values() if isinstance(v, dict) and v.get("bytes_identical"))
    summary: dict[str, Any] = {"same_products": bool(ok), "n_files": len(names),
               "n_bytes_identical": n_bytes}
    summary["not_bytes_identical"] = {k: v for k, v in files.items()
                                      if not (isinstance(v, dict) and v.get("bytes_identical"))}
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("workdir", type=Path)
    ap.add_argument("old_src", type=Path)
    ap.add_argument("--ccd", type=int, default=28)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    scratch = Path(tempfile.mkdtemp(prefix="bench_writes_ab_"))
    _old_package(args.old_src, scratch, imports_only=True)
    sys.path.insert(0, str(scratch))
    old_se = importlib.import_module("desgw_old.workflow.se_ccd")
    old_pp = importlib.import_module("desgw_old.diff.pipeline_products")
    old_stamps = importlib.import_module("desgw_old.diff.stamps")
    old_dc = importlib.import_module("desgw_old.workflow.diff_ccd")

    import desgw
    from desgw.diff import pipeline_products as pp
    from desgw.diff import stamps as new_stamps
    from desgw.diff.pipeline import DiffConfig, difference_ccd
    from desgw.diff.template_crop import crop_box_wcs
    from desgw.workflow import diff_ccd as new_dc
    from desgw.io.product_paths import ccd_product_paths, diff_product_paths
    from desgw.io.settings import load_settings
    from desgw.se.process import SEConfig
    from desgw.workflow import se_ccd
    from desgw.workflow.diff_ccd import _header, find_template_ccds
    from desgw.workflow.se_types import CCDTask
    from desgw.workflow.templates import ccd_corners_from_wcs

    root = args.workdir
    out_root = root / "out"
    sdir = sorted(out_root.glob("*/*/exp/*/*"), key=lambda d: (d.parent.name, d.name))[-1]
    expnum = int(sdir.name)
    band = next(sdir.glob(f"D{expnum:08d}_*_{args.ccd:02d}_r1p1_immask.fits.fz")).name.split("_")[1]
    raw = next(p for p in (root / "raw").glob("DECam_*.fits*")
               if int(p.name.split("_")[1].split(".")[0]) == expnum)
    settings = load_settings(raw_dir=root / "raw", calib_dir=root / "calib",
                             refcat_dir=root / "refcat", out_root=out_root, environ={}, cwd=root)
    calib = settings.calib_paths(band)
    res: dict[str, Any] = {"desgw": str(Path(desgw.__file__).parent),
                           "old_src": str(args.old_src), "search": [expnum, args.ccd],
                           "load_avg_start": os.getloadavg()}
    try:
        def se_task(tag: str) -> Any:
            return CCDTask(expnum=expnum, ccdnum=args.ccd, band=band, rnum=1, pnum=1,
                           raw_path=str(raw), bias_path=str(calib.bias),
                           flat_path=str(calib.flat),
                           bpm_path=None if calib.bpm is None else str(calib.bpm),
                           refcat_dir=str(settings.refcat_dir),
                           outdir=str(scratch / tag / "se"), overwrite=True)

        tasks = {"old": se_task("old"), "new": se_task("new")}
        config = SEConfig()
        result, _ = se_ccd.read_and_process(tasks["new"], config, {})
        chash = config.hash()
        header = se_ccd._product_header(tasks["new"], chash, result.header)
        search = se_ccd_search(result, header, band, expnum, args.ccd)
        dcfg = DiffConfig(require_template_qc=False)
        found = find_template_ccds(ccd_corners_from_wcs(search.wcs), args.ccd, (),
                                   out_root=out_root, band=band, rnum=1, pnum=1,
                                   search_expnum=expnum)
        tpaths = [ccd_product_paths(d, e, band, c, 1, 1) for e, (d, cs) in sorted(found.items())
                  for c in cs]

        def crop(wcs: Any, shape: tuple[int, int]) -> Any:
            return crop_box_wcs(wcs, shape, search.wcs, search.shape)

        templates = [pp.load_template_products(p.immask, psfmodel=p.psfmodel, fullcat=p.fullcat,
                                               qc=p.qc, config=dcfg, crop=crop, prepare=False)
                     for p in tpaths]
        diff = difference_ccd(search, templates, config=dcfg, rng=np.random.default_rng(0))
        dtask: Any = SimpleNamespace(search_expnum=expnum, ccdnum=args.ccd, band=band, rnum=1,
                                     pnum=1, season=1, version="bench")
        dheader = _header(dtask, diff, pp.config_hash(dcfg))  # as the difference task
        dpaths = {tag: diff_product_paths(scratch / tag / "diff", expnum, band, args.ccd, 1, 1,
                                          1) for tag in ("old", "new")}
        c = diff.candidates
        sel = np.flatnonzero(~np.asarray(c["negative"], bool) & ~np.asarray(c["veto"], bool)
                             & ~np.asarray(c["is_fake"], bool))
        st = diff.stamps
        sub = new_stamps.Stamps(data=st.data[sel], valid=st.valid[sel], kinds=st.kinds,
                                x0=st.x0[sel], y0=st.y0[sel], fill=st.fill)
        ids = [int(i) for i in np.asarray(c["id"])[sel]]
        db_tasks: dict[str, Any] = {}
        for tag in ("old", "new"):
            shutil.copy(root / "desgw.sqlite", scratch / f"{tag}.sqlite")
            db_tasks[tag] = SimpleNamespace(
                search_expnum=expnum, ccdnum=args.ccd, band=band, rnum=1, pnum=1, season=1,
                settings=SimpleNamespace(db_url=f"sqlite:///{scratch / f'{tag}.sqlite'}",
                                         db_timeout_s=60.0))

        units: dict[str, dict[str, Callable[[], Any]]] = {
            "se_write": {
                "old": lambda: old_se._write_products(tasks["old"], result, chash, {}, 0.0),
                "new": lambda: se_ccd._write_products(tasks["new"], result, chash, {}, 0.0)},
            "diff_write": {
                "old": lambda: old_pp.write_diff_products(diff, dpaths["old"], header=dheader,
                                                          wcs=search.wcs, png=True),
                "new": lambda: pp.write_diff_products(diff, dpaths["new"], header=dheader,
                                                      wcs=search.wcs, png=True)},
            "png": {
                "old": lambda: old_stamps.write_stamps_png(scratch / "png_old", sub, ids),
                "new": lambda: new_stamps.write_stamps_png(scratch / "png_new", sub, ids)},
            "db": {"old": lambda: old_dc._record_db(db_tasks["old"], diff),
                   "new": lambda: new_dc._record_db(db_tasks["new"], diff)},
        }
        best: dict[str, dict[str, float]] = {u: {"old": np.inf, "new": np.inf} for u in units}
        for unit in units.values():  # first calls: numba kernels, caches
            for f in unit.values():
                f()
        for _ in range(max(1, args.repeat)):
            for name, unit in units.items():
                for tag, f in unit.items():
                    t = time.process_time()
                    f()
                    best[name][tag] = min(best[name][tag], time.process_time() - t)
        res["cpu_s"] = {u: {k: round(v, 4) for k, v in b.items()} for u, b in best.items()}
        res["saved_cpu_s"] = {u: round(b["old"] - b["new"], 4) for u, b in best.items()}
        res["n_objects"] = len(result.catalog)
        res["n_candidates"] = len(diff.candidates)
        res["n_pngs"] = len(ids)
        res["products"] = _compare_trees(scratch / "old", scratch / "new")
        res["db_tables_identical"] = _tables(scratch / "old.sqlite") == _tables(
            scratch / "new.sqlite")
        res["png_bytes_identical"] = all(
            (scratch / "png_old" / p.name).read_bytes() == p.read_bytes()
            for p in (scratch / "png_new").iterdir())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    res["load_avg_end"] = os.getloadavg()
    print(json.dumps(res, indent=1))
    return res


def se_ccd_search(result: Any, header: Any, band: str, expnum: int, ccdnum: int) -> Any:
    """The search CCD's products in memory, as the fused task hands them to the difference."""
    from desgw.workflow.sediff_ccd import search_products_from_se

    return search_products_from_se(result, header, band=band, expnum=expnum, ccdnum=ccdnum)


if __name__ == "__main__":
    main()
