"""Benchmark: CPU seconds of each step of ``process_ccd`` on one CCD, one core, best of N.

Usage: ``python bench/bench_se_steps.py WORKDIR [--ccd 28] [--repeat 3]``

``WORKDIR`` holds a simulated night with its Gaia catalogue ingested (``raw/``, ``calib/``,
``refcat/``), e.g. the ``--workdir`` of ``bench/bench_se.py`` (``--dense`` for a crowded
field). The inputs of the CCD are read once per run (not timed), ``process_ccd`` runs once to
load numba's compiled kernels, then ``--repeat`` times with the process pinned to one core and
BLAS/numba threads 1; the step times are CPU seconds (``time.process_time``, robust to other
processes' load, unlike wall time) of the run with the least total. Run it with another
tree's ``src`` first on ``PYTHONPATH`` for a before/after on the same files and load.

Prints one JSON object: ``steps_cpu_s``, ``total_cpu_s``, ``ms_per_object``, ``n_objects``,
the CCD's FWHM, astrometric rms and zeropoint (to see that the outputs did not move), the
load average, and ``io_cpu_s``: the task's reads and writes around ``process_ccd``, CPU-s:

* ``read_raw_cold`` / ``read_calib_cold``: the CCD (with its crosstalk sources; bias, flat,
  bad-pixel mask and linearity table) read first in a fresh process (a worker's first CCD);
* ``read_raw`` / ``read_calib``: best of ``--repeat`` reads of the CCD after another CCD of
  the same files was read (a warm worker: with desgw.io.fitsindex, files already indexed;
  with desgw.io.calib_cache, the CCD's calibration planes already decoded by an earlier task
  of the night, in a scratch cache folder deleted after). The other CCD is the raw file's CCD
  nearest in number; a raw file with this CCD only (a night simulated with ``ccds=[28]``):
  the same CCD of another exposure of ``raw/`` (``warm_read_after`` in the JSON says which),
  else no warm figures (null);
* ``read_calib_uncached``: as ``read_calib`` with the cache emptied before each read (the
  first task of the night to use the CCD's calibrations: decode, then keep the planes);
  absent in a desgw without the cache;
* ``read_raw``, with desgw's raw cache (a scratch folder too): the CCD and its crosstalk
  sources as far as the task that read the other CCD kept them (e.g. CCD 28 is a source of
  29); ``read_raw_uncached``: with that cache emptied before each read (every CCD decoded,
  those other CCDs need kept); absent in a desgw without the raw cache;
* ``write_se``: best of ``--repeat`` writes of the SE products (immask, catalogue, PSF,
  QC JSON with checksums) into a temporary folder (deleted after);
* ``template_prepare_from_immask`` / ``template_prepare_from_memory``: the CCD's prepared
  template form made as a template CCD's task made it before (from the immask just written)
  and now (from the SE result in memory; absent in a desgw without it).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import time
import types
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--ccd", type=int, default=28)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    import desgw
    import desgw.se.process as process
    from desgw.io.settings import load_settings
    from desgw.workflow.se_ccd import _read_inputs
    from desgw.workflow.se_types import CCDTask

    root = args.workdir
    raw = next((root / "raw").glob("DECam_*.fits*"))
    expnum = int(raw.name.split("_")[1].split(".")[0])
    settings = load_settings(raw_dir=root / "raw", calib_dir=root / "calib",
                             refcat_dir=root / "refcat", out_root=root / "out", environ={},
                             cwd=root)
    calib = settings.calib_paths("r")
    io = _io_times(root, raw, expnum, calib, settings, args)
    task = CCDTask(expnum=expnum, ccdnum=args.ccd, band="r", rnum=1, pnum=1,
                   raw_path=str(raw), bias_path=str(calib.bias), flat_path=str(calib.flat),
                   bpm_path=None if calib.bpm is None else str(calib.bpm),
                   refcat_dir=str(settings.refcat_dir), outdir=str(root / "out" / "single"),
                   overwrite=True)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    from desgw.util.malloc import keep_freed_memory

    keep_freed_memory()  # as the pipeline's workers do: freed CCD planes reused, no page faults
    # process_ccd times its steps with time.perf_counter: give it the CPU clock instead
    process.time = types.SimpleNamespace(perf_counter=time.process_time)  # type: ignore[assignment]
    scratch: dict[str, float] = {}
    process.process_ccd(_read_inputs(task, scratch, 30.0))  # loads the numba kernels
    best = None
    totals = []
    for _ in range(max(1, args.repeat)):
        result = process.process_ccd(_read_inputs(task, scratch, 30.0))
        totals.append(result.timings["total"])
        if best is None or result.timings["total"] < best.timings["total"]:
            best = result
    assert best is not None
    io.update(_write_times(task, best, process.SEConfig().hash(), args.repeat))
    n = len(best.catalog)
    out = {
        "benchmark": "se_steps",
        "desgw": str(Path(desgw.__file__).parent),
        "workdir": str(root),
        "ccdnum": args.ccd,
        "n_objects": n,
        "total_cpu_s_runs": [round(t, 3) for t in totals],
        "total_cpu_s": round(best.timings["total"], 3),
        "ms_per_object": round(1e3 * best.timings["total"] / max(n, 1), 3),
        "steps_cpu_s": {k: round(v, 3) for k, v in best.timings.items() if k != "total"},
        "fwhm_arcsec": float(best.header["FWHMASEC"]),
        "astrometric_rms_mas": 1e3 * float(best.header["ASTRRMS"]),
        "zeropoint": float(best.header["MAGZERO"]),
        "io_cpu_s": io,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(out, indent=1))
    return out


def _io_times(root: Path, raw: Path, expnum: int, calib: object, settings: object,
              args: argparse.Namespace) -> dict[str, float | str | None]:
    """CPU-s of the CCD's reads, cold (first in the process) and warm (best of N)."""
    from desgw.workflow import se_ccd
    from desgw.workflow.se_types import CCDTask

    import dataclasses
    import shutil
    import tempfile

    cache_dir = Path(tempfile.mkdtemp(prefix="bench_se_steps_calibcache_"))
    raw_cache = Path(tempfile.mkdtemp(prefix="bench_se_steps_rawcache_"))
    fields = {f.name for f in dataclasses.fields(CCDTask)}
    has_cache = "calib_cache_dir" in fields
    has_raw_cache = "raw_cache_dir" in fields

    def task(ccd: int) -> CCDTask:
        lin = getattr(calib, "linearity", None)
        extra = {"calib_cache_dir": str(cache_dir)} if has_cache else {}
        if has_raw_cache:
            extra["raw_cache_dir"] = str(raw_cache)
        return CCDTask(expnum=expnum, ccdnum=ccd, band="r", rnum=1, pnum=1, raw_path=str(raw),
                       bias_path=str(calib.bias), flat_path=str(calib.flat),  # type: ignore
                       bpm_path=None if calib.bpm is None else str(calib.bpm),  # type: ignore
                       linearity_path=None if lin is None else str(lin),
                       refcat_dir=str(settings.refcat_dir),  # type: ignore[attr-defined]
                       outdir=str(root / "out" / "single"), overwrite=True, **extra)

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    se_ccd.time = types.SimpleNamespace(perf_counter=time.process_time)  # type: ignore
    out: dict[str, float] = {}
    t: dict[str, float] = {}
    se_ccd._read_inputs(task(args.ccd), t, 30.0)
    out["read_raw_cold"], out["read_calib_cold"] = t["read_raw"], t["read_calib"]
    warm = _warm_source(raw, args.ccd)
    if warm is None:
        # nothing else to have read first: no warm-worker figures
        shutil.rmtree(cache_dir, ignore_errors=True)
        shutil.rmtree(raw_cache, ignore_errors=True)
        return {**{k: round(v, 3) for k, v in out.items()}, "read_raw": None, "read_calib": None,
                "warm_read_after": None}
    other_raw, other = warm

    def other_task() -> CCDTask:
        return dataclasses.replace(task(other), raw_path=str(other_raw))

    for key in ("read_raw", "read_calib"):
        out[key] = float("inf")
    try:
        for _ in range(max(1, args.repeat)):
            se_ccd._read_inputs(other_task(), {}, 30.0)
            t = {}
            se_ccd._read_inputs(task(args.ccd), t, 30.0)
            for key in ("read_raw", "read_calib"):
                out[key] = min(out[key], t[key])
        for present, key, folder in ((has_cache, "read_calib", cache_dir),
                                     (has_raw_cache, "read_raw", raw_cache)):
            if not present:
                continue
            # the read of a warm worker whose cache was emptied: a decode and a store
            out[f"{key}_uncached"] = float("inf")
            for _ in range(max(1, args.repeat)):
                se_ccd._read_inputs(other_task(), {}, 30.0)
                shutil.rmtree(folder, ignore_errors=True)
                t = {}
                se_ccd._read_inputs(task(args.ccd), t, 30.0)
                out[f"{key}_uncached"] = min(out[f"{key}_uncached"], t[key])
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
        shutil.rmtree(raw_cache, ignore_errors=True)
    return {**{k: round(v, 3) for k, v in out.items()},
            "warm_read_after": f"{other_raw.name} CCD {other}"}


def _warm_source(raw: Path, ccd: int) -> tuple[Path, int] | None:
    """The read a warm worker did before this CCD's: (raw file, CCD). Another CCD of the same
    file, the nearest in number (the higher of two); else this CCD of another exposure of the
    raw folder; None when there is neither."""
    from desgw.io.raw import RawExposure

    with RawExposure(raw) as r:
        others = [c for c in r.ccdnums if c != ccd]
    if others:
        return raw, min(others, key=lambda c: (abs(c - ccd), -c))
    for path in sorted(raw.parent.glob("DECam_*.fits*")):
        if path == raw:
            continue
        with RawExposure(path) as r:
            if ccd in r.ccdnums:
                return path, ccd
    return None


def _write_times(task: object, result: object, config_hash: str, repeat: int
                 ) -> dict[str, float]:
    """Best-of-N CPU-s of writing the SE products of ``result`` (scratch folder)."""
    import dataclasses
    import shutil
    import tempfile

    from desgw.workflow import se_ccd

    scratch = Path(tempfile.mkdtemp(prefix="bench_se_steps_write_"))
    wtask = dataclasses.replace(task, outdir=str(scratch))  # type: ignore[type-var]
    best = float("inf")
    out: dict[str, float] = {}
    try:
        for _ in range(max(1, repeat)):
            t0 = time.process_time()
            se_ccd._write_products(wtask, result, config_hash, {}, 0.0)  # type: ignore
            best = min(best, time.process_time() - t0)
        out["write_se"] = round(best, 3)
        out.update(_template_prepare_times(wtask, result, config_hash, repeat))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out


def _template_prepare_times(task: object, result: object, config_hash: str, repeat: int
                            ) -> dict[str, float]:
    """Best-of-N CPU-s of making the CCD's prepared template form (as a template CCD):
    ``template_prepare_from_immask`` (decompress the immask just written, sky, write, read
    back: :func:`load_template_products` without a prepared file) and, where this desgw has
    it, ``template_prepare_from_memory`` (sky and write from the SE result)."""
    from desgw.diff import pipeline_products as pp

    paths = task.paths  # type: ignore[attr-defined]

    def clear() -> None:
        for f in paths.immask.parent.glob("*_tmplprep-*"):
            f.unlink()

    out: dict[str, float] = {}
    best = float("inf")
    for _ in range(max(1, repeat)):
        clear()
        t0 = time.process_time()
        pp.load_template_products(paths.immask, psfmodel=paths.psfmodel)
        best = min(best, time.process_time() - t0)
    out["template_prepare_from_immask"] = round(best, 3)
    if hasattr(pp, "prepare_template_from_memory"):
        from desgw.io.products import immask_sci_header
        from desgw.workflow.se_ccd import _product_header

        best = float("inf")
        for _ in range(max(1, repeat)):
            clear()
            t0 = time.process_time()
            header = immask_sci_header(_product_header(task, config_hash,  # type: ignore
                                                       result.header),  # type: ignore
                                       result.wcs)  # type: ignore[attr-defined]
            pp.prepare_template_from_memory(paths.immask, result.image,  # type: ignore
                                            result.mask, result.weight,  # type: ignore
                                            header)
            best = min(best, time.process_time() - t0)
        out["template_prepare_from_memory"] = round(best, 3)
    clear()
    return out


if __name__ == "__main__":
    main()
