"""Benchmark: interleaved before/after CPU seconds of every step of ``process_ccd``, and
whether every SE output is bit-for-bit the same.

Usage: ``python bench/bench_se_fixed_ab.py WORKDIR OLD_SRC [--ccd 28] [--repeat 5]
[--keep-freed-memory]``

``WORKDIR`` is a simulated night as for ``bench/bench_se_steps.py`` (``raw/`` holding one
exposure with the CCD, ``calib/``, ``refcat/``); ``OLD_SRC`` the ``src`` folder of another
tree (e.g. ``git archive main src``). As in ``bench/bench_se_ab.py`` the old ``desgw`` is
loaded as ``desgw_old`` in the same process, pinned to one core with BLAS/numba threads 1,
and the two run alternately (old, new, old, new ...) on the same inputs (read once). For
each step of ``process_ccd`` (its ``timings``, made CPU seconds with ``time.process_time``)
the least time over ``--repeat`` runs is reported, as is the least total.

``outputs_equal`` compares the results of one old and one new run: the image, mask, weight,
every catalogue column and the PSF model's coefficients bit for bit (NaN equal to NaN), and
the product header's cards as written. ``--keep-freed-memory`` first calls
:func:`desgw.util.malloc.keep_freed_memory`, as the pipeline's workers do (freed CCD planes
reused instead of page-faulted in again). Prints one JSON object.
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
import types
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_se_ab import _old_package  # the old tree as desgw_old


def _same(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind == "f":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def _compare(ro: Any, rn: Any) -> dict[str, bool]:
    """Bit-for-bit equality of the parts of two ``CCDResult``."""
    out = {name: _same(getattr(ro, name), getattr(rn, name))
           for name in ("image", "mask", "weight")}
    co, cn = ro.catalog, rn.catalog
    out["catalog"] = (co.colnames == cn.colnames and len(co) == len(cn)
                      and all(_same(co[c], cn[c]) for c in co.colnames))
    out["psf"] = _same(ro.psf.coeffs, rn.psf.coeffs)
    out["header"] = ro.header.tostring() == rn.header.tostring()
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("workdir", type=Path)
    ap.add_argument("old_src", type=Path)
    ap.add_argument("--ccd", type=int, default=28)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--keep-freed-memory", action="store_true")
    args = ap.parse_args(argv)
    if args.keep_freed_memory:
        from desgw.util.malloc import keep_freed_memory

        keep_freed_memory()

    tmp = Path(tempfile.mkdtemp(prefix="desgw_old_"))
    _old_package(args.old_src, tmp)
    sys.path.insert(0, str(tmp))
    po = importlib.import_module("desgw_old.se.process")
    wo = importlib.import_module("desgw_old.workflow.se_ccd")
    import desgw.se.process as pn
    import desgw.workflow.se_ccd as wn
    from desgw.io.settings import load_settings
    from desgw.workflow.se_types import CCDTask

    root = args.workdir
    raw = next((root / "raw").glob("DECam_*.fits*"))
    settings = load_settings(raw_dir=root / "raw", calib_dir=root / "calib",
                             refcat_dir=root / "refcat", out_root=root / "out", environ={},
                             cwd=root)
    calib = settings.calib_paths("r")
    lin = getattr(calib, "linearity", None)
    task = CCDTask(expnum=int(raw.name.split("_")[1].split(".")[0]), ccdnum=args.ccd, band="r",
                   rnum=1, pnum=1, raw_path=str(raw), bias_path=str(calib.bias),
                   flat_path=str(calib.flat),
                   bpm_path=None if calib.bpm is None else str(calib.bpm),
                   linearity_path=None if lin is None else str(lin),
                   refcat_dir=str(settings.refcat_dir), outdir=str(root / "out" / "single"),
                   overwrite=True)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    clock = types.SimpleNamespace(perf_counter=time.process_time)
    po.time = clock  # type: ignore[attr-defined]
    pn.time = clock  # type: ignore[assignment]
    # the same inputs for both (each side reads them once: its own classes)
    ino = wo._read_inputs(task, {}, 30.0)
    inn = wn._read_inputs(task, {}, 30.0)

    def run(p: Any, inp: Any) -> Any:
        # process_ccd modifies its inputs' arrays in place: a fresh copy of each
        return p.process_ccd(_fresh(inp))

    ro, rn = run(po, ino), run(pn, inn)  # compiles the kernels; the outputs to compare
    equal = _compare(ro, rn)
    best: dict[str, dict[str, float]] = {"old": {}, "new": {}}
    for _ in range(max(1, args.repeat)):
        for side, p, inp in (("old", po, ino), ("new", pn, inn)):
            r = run(p, inp)
            for k, v in r.timings.items():
                best[side][k] = min(best[side].get(k, float("inf")), v)
    shutil.rmtree(tmp, ignore_errors=True)
    steps = {k: {"old_cpu_s": round(best["old"][k], 4), "new_cpu_s": round(best["new"][k], 4),
                 "diff_ms": round(1e3 * (best["new"][k] - best["old"][k]), 1)}
             for k in best["old"] if k in best["new"]}
    import desgw
    out = {"benchmark": "se_fixed_ab", "desgw": str(Path(desgw.__file__).parent),
           "old_src": str(args.old_src), "workdir": str(root), "ccdnum": args.ccd,
           "n_objects": len(rn.catalog), "repeat": args.repeat,
           "keep_freed_memory": bool(args.keep_freed_memory), "steps": steps,
           "outputs_equal": equal, "load_average_1min": round(os.getloadavg()[0], 2)}
    print(json.dumps(out, indent=1))
    return out


def _fresh(inp: Any) -> Any:
    """A copy of ``CCDInputs`` whose arrays (raw pixels, calibrations) are new copies."""
    import copy

    return copy.deepcopy(inp)


if __name__ == "__main__":
    main()
