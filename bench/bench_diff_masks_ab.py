"""Benchmark: interleaved before/after CPU seconds of the difference's mask passes.

Usage: ``python bench/bench_diff_masks_ab.py WORKDIR OLD_SRC [--ccd 28] [--repeat 5]
[--out FILE]``

``WORKDIR`` is a work folder of ``bench/bench_exposure.py`` whose template exposure is
processed (e.g. ``--ccds 27,28,29 --workdir W``); the search exposure's products in it are
removed and rewritten. ``OLD_SRC`` is the ``src`` folder of another tree (e.g.
``git archive main src | tar -x -C DIR``), loaded as ``desgw_old``
(:func:`bench_se_ab._old_package`), so that both versions run in one process.

The search CCD runs once through ``run_sediff`` (as :mod:`bench_resample_ab` does) and the
inputs of :func:`desgw.diff.pipeline.difference_ccd` are kept. ``difference_ccd`` of the old
and of the new package then runs alternately on them ``--repeat`` times, with the workers'
memory set-up (``keep_freed_memory``), BLAS and numba one thread (pin the process with
``taskset -c 1``). Reported, least CPU seconds (``time.process_time``) of each: the whole
call, and the calls the pipeline makes of the mask prediction (``predict_difference_mask``),
its update after the fakes' injection (``MaskPrediction.update``), the fakes' plan and
injection, the subtraction and, inside it, ZOGY (``subtract_not_zogy``: the subtraction's
own passes), and the release of the grown mask (``release_grown_mask``); then whether the
outputs of the last old and new runs are equal bit for bit (difference, variance, score,
mask, candidates, fakes) and the load before and after. Prints one JSON object (also
written to ``--out FILE``).
"""

from __future__ import annotations

import argparse
import collections
import copy
import importlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_v] = "1"

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from bench_resample_ab import _capture
from bench_se_ab import _old_package
from benchjson import emit, load_average

#: The pipeline module's names whose CPU seconds are reported.
TIMED = ("predict_difference_mask", "plan_fakes", "inject_fakes", "subtract",
         "release_grown_mask")


def _timed(acc: dict[str, float], key: str, f: Callable[..., Any]) -> Callable[..., Any]:
    def call(*a: Any, **k: Any) -> Any:
        t0 = time.process_time()
        try:
            return f(*a, **k)
        finally:
            acc[key] += time.process_time() - t0
    return call


def _run(pkg: str, a: Any, k: Any) -> tuple[float, dict[str, float], Any]:
    """One ``difference_ccd`` of package ``pkg`` (``desgw`` or ``desgw_old``): its CPU
    seconds, those of the timed calls, and the result."""
    pipeline: ModuleType = importlib.import_module(f"{pkg}.diff.pipeline")
    subtract_mod: Any = importlib.import_module(f"{pkg}.diff.subtract")
    acc: dict[str, float] = collections.defaultdict(float)
    saved = {name: getattr(pipeline, name) for name in TIMED}
    zogy, update = subtract_mod.zogy, subtract_mod.MaskPrediction.update
    for name in TIMED:
        setattr(pipeline, name, _timed(acc, name, saved[name]))
    subtract_mod.zogy = _timed(acc, "zogy", zogy)
    subtract_mod.MaskPrediction.update = _timed(acc, "update", update)
    try:
        kk = copy.deepcopy(k)  # a fresh rng each run
        t0 = time.process_time()
        res = pipeline.difference_ccd(*a, **kk)
        total = time.process_time() - t0
    finally:
        for name in TIMED:
            setattr(pipeline, name, saved[name])
        subtract_mod.zogy = zogy
        subtract_mod.MaskPrediction.update = update
    parts = dict(acc)
    parts["subtract_not_zogy"] = parts.get("subtract", 0.0) - parts.get("zogy", 0.0)
    parts["fakes_step"] = (parts.get("predict_difference_mask", 0.0) + parts.get("update", 0.0)
                           + parts.get("plan_fakes", 0.0) + parts.get("inject_fakes", 0.0))
    return total, parts, res


def _table_equal(p: Any, q: Any) -> bool:
    if p.colnames != q.colnames or len(p) != len(q):
        return False
    return all(np.array_equal(np.asarray(p[c]), np.asarray(q[c]), equal_nan=True)
               if np.asarray(p[c]).dtype.kind == "f" else np.array_equal(p[c], q[c])
               for c in p.colnames)


def _compare(old: Any, new: Any) -> dict[str, bool]:
    out = {name: bool(np.array_equal(getattr(old, name), getattr(new, name), equal_nan=True))
           for name in ("diff", "diff_var", "score", "mask")}
    out["candidates"] = _table_equal(old.candidates, new.candidates)
    out["fakes"] = _table_equal(old.fakes, new.fakes)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("workdir", type=Path)
    ap.add_argument("old_src", type=Path)
    ap.add_argument("--ccd", type=int, default=28)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="desgw_old_"))
    try:
        _old_package(args.old_src, tmp)
        sys.path.insert(0, str(tmp))
        a, k = _capture(args.workdir, args.ccd)
        from desgw.util.malloc import keep_freed_memory

        keep_freed_memory()  # as the workers do: freed planes reused, no page faults
        load_before = os.getloadavg()
        best: dict[str, dict[str, float]] = {"old": {}, "new": {}}
        last: dict[str, Any] = {}
        for i in range(args.repeat + 1):  # the first round compiles / loads the kernels
            for name, pkg in (("old", "desgw_old"), ("new", "desgw")):
                last.pop(name, None)
                total, parts, last[name] = _run(pkg, a, k)
                if i == 0:
                    continue
                parts["total"] = total
                for key, v in parts.items():
                    best[name][key] = min(best[name].get(key, np.inf), v)
        keys = sorted(best["new"])
        result: dict[str, Any] = {
            "workdir": str(args.workdir), "ccd": args.ccd, "repeat": args.repeat,
            "old_cpu_s": {key: round(best["old"].get(key, 0.0), 4) for key in keys},
            "new_cpu_s": {key: round(best["new"].get(key, 0.0), 4) for key in keys},
            "saved_cpu_s": {key: round(best["old"].get(key, 0.0) - best["new"][key], 4)
                            for key in keys},
            "outputs_equal": _compare(last["old"], last["new"]),
            "n_candidates": len(last["new"].candidates), "n_fakes": len(last["new"].fakes),
            "masked_fraction": last["new"].meta.get("masked_fraction"),
            "load_before": [round(v, 2) for v in load_before],
            "load_after": load_average(),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
