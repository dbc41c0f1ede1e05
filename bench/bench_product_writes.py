"""Benchmark: the product writes of one search CCD, SE and difference imaging, one core.

Usage: ``python bench/bench_product_writes.py --workdir DIR [--ccd 28] [--repeat 5]``

``DIR`` is a night made by ``bench/bench_diff.py --workdir DIR`` (raw, calibrations, Gaia
store and the SE products of a template and a search exposure under ``DIR/out``); it is not
modified (products go to a scratch folder, deleted after). Pinned to one core, BLAS/numba
threads 1; CPU seconds (``time.process_time``, best of ``--repeat``) of:

* ``se_write``: the SE products of the search CCD as its task writes them (immask, catalogue,
  PSF model, QC JSON with the products' checksums), from a ``process_ccd`` result in memory;
* ``diff_write``: :func:`desgw.diff.pipeline_products.write_diff_products` of its
  difference against the overlapping template CCDs, without ``-F`` (difference image,
  candidate and fake tables, stamps, stamp PNGs, efficiency JSON); its wall time too
  (``diff_write_wall_s``: the PNGs' fsyncs).

``per_file_cpu_s``: the same runs split by writer (each writer function wrapped; best of
``--repeat`` per writer): the immask, catalogue, PSF model and QC JSON of SE, and the
difference image, candidate FITS and Parquet tables, fakes table, stamps FITS, stamp PNGs and
efficiency JSON of the difference imaging, with ``checksums`` (the markers' file records).
The SE PSF model and the JSON documents are written inline (no writer of their own): they are
in ``se_write`` less the named writers.

Run it with another tree's ``src`` first on ``PYTHONPATH`` for a before/after on the same
files and load. Prints one JSON object.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _best(f: Callable[[], Any], n: int) -> tuple[float, float]:
    cpu, wall = float("inf"), float("inf")
    for _ in range(max(1, n)):
        t, w = time.process_time(), time.perf_counter()
        f()
        cpu, wall = min(cpu, time.process_time() - t), min(wall, time.perf_counter() - w)
    return round(cpu, 3), round(wall, 3)


class _Split:
    """CPU seconds of named writer functions, per run (wrapping module attributes)."""

    def __init__(self) -> None:
        self.run: dict[str, float] = {}
        self.best: dict[str, float] = {}
        self._depth = 0

    def wrap(self, module: Any, attr: str, label: str) -> None:
        inner = getattr(module, attr)

        def timed(*a: Any, **k: Any) -> Any:
            self._depth += 1
            t = time.process_time()
            try:
                return inner(*a, **k)
            finally:
                self._depth -= 1
                if self._depth == 0:  # the outermost named writer gets the time
                    self.run[label] = self.run.get(label, 0.0) + time.process_time() - t

        setattr(module, attr, timed)

    def close_run(self) -> None:
        for k, v in self.run.items():
            self.best[k] = round(min(self.best.get(k, float("inf")), v), 4)
        self.run = {}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--ccd", type=int, default=28)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    import numpy as np

    import desgw
    from desgw.diff import pipeline_products as pp
    from desgw.diff.pipeline import DiffConfig, difference_ccd
    from desgw.diff.template_crop import crop_box_wcs
    from desgw.io.product_paths import ccd_product_paths, diff_product_paths
    from desgw.io.settings import load_settings
    from desgw.se.process import SEConfig
    from desgw.workflow import se_ccd
    from desgw.workflow.diff_ccd import find_template_ccds
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
    scratch = Path(tempfile.mkdtemp(prefix="bench_product_writes_"))
    res: dict[str, Any] = {"desgw": str(Path(desgw.__file__).parent), "search": [expnum, args.ccd],
                           "load_avg_start": os.getloadavg(), "cpu_s": {}}
    try:
        task = CCDTask(expnum=expnum, ccdnum=args.ccd, band=band, rnum=1, pnum=1,
                       raw_path=str(raw), bias_path=str(calib.bias), flat_path=str(calib.flat),
                       bpm_path=None if calib.bpm is None else str(calib.bpm),
                       refcat_dir=str(settings.refcat_dir), outdir=str(scratch / "se"),
                       overwrite=True)
        config = SEConfig()
        result, _ = se_ccd.read_and_process(task, config, {})
        chash = config.hash()
        se_ccd._write_products(task, result, chash, {}, 0.0)  # first call: numba kernels load
        res["cpu_s"]["se_write"], _ = _best(
            lambda: se_ccd._write_products(task, result, chash, {}, 0.0), args.repeat)
        from desgw.io import products as products_mod

        split = _Split()
        split.wrap(products_mod, "write_immask", "se_immask")
        split.wrap(products_mod, "write_fits_table", "se_fullcat")
        split.wrap(se_ccd, "file_record", "checksums")
        split.wrap(se_ccd, "atomic_write_text", "se_qc_json")

        def se_once() -> None:
            se_ccd._write_products(task, result, chash, {}, 0.0)
            split.close_run()

        _best(se_once, args.repeat)
        res["per_file_cpu_s"] = dict(split.best)

        sp = ccd_product_paths(sdir, expnum, band, args.ccd, 1, 1)
        search = pp.load_ccd_products(sp.immask, psfmodel=sp.psfmodel, fullcat=sp.fullcat,
                                      qc=sp.qc)
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
        dpaths = diff_product_paths(scratch / "diff", expnum, band, args.ccd, 1, 1, 99)
        res["cpu_s"]["diff_write"], res["diff_write_wall_s"] = _best(
            lambda: pp.write_diff_products(diff, dpaths, wcs=search.wcs, png=True), args.repeat)
        from desgw.io.checksums import file_record

        split = _Split()
        for attr, label in (("write_diff_image", "diff_image"), ("write_parquet", "cands_parquet"),
                            ("write_stamps_fits", "stamps_fits"),
                            ("write_stamps_png", "stamps_png"),
                            ("atomic_write_text", "efficiency_json")):
            split.wrap(pp, attr, label)
        tables = iter(["cands_fits", "fakes_fits"] * (args.repeat + 1))
        inner_table = pp.write_fits_table

        def table(*a: Any, **k: Any) -> Any:
            label = next(tables)
            t = time.process_time()
            try:
                return inner_table(*a, **k)
            finally:
                split.run[label] = split.run.get(label, 0.0) + time.process_time() - t

        pp.write_fits_table = table

        def diff_once() -> None:
            written = pp.write_diff_products(diff, dpaths, wcs=search.wcs, png=True)
            t = time.process_time()
            for v in written.values():  # the completion marker's records
                if Path(v).is_file():
                    file_record(v)
            split.run["checksums"] = time.process_time() - t
            split.close_run()

        _best(diff_once, args.repeat)
        res["per_file_cpu_s"].update({f"diff_{k}" if not k.startswith("diff") else k: v
                                      for k, v in split.best.items()})
        res["n_objects"] = len(result.catalog)
        res["n_candidates"] = len(diff.candidates)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    res["load_avg_end"] = os.getloadavg()
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
