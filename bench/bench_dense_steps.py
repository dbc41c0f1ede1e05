"""Benchmark: CPU seconds of the source-dense steps of one fused search CCD, on one core.

Usage: ``python bench/bench_dense_steps.py --workdir W [--ccd 28] [--repeat 5]
[--psf-max-stars N] [--out FILE]``

``W`` is a work folder of ``bench/bench_exposure.py`` (``--field dense`` for the dense field)
whose template exposure is processed; the search exposure's products in it are removed and
rewritten. The search CCD runs once through ``run_sediff`` (SE, then difference imaging, in
this process), and the inputs of the steps whose cost grows with the number of sources are
kept: the bleed-trail mask, the cosmic-ray finder, the PSF fit, the SE measurement and the
difference-image measurement. Each is then called again ``--repeat`` times on copies of its
inputs and the least CPU time (``time.process_time``) kept. BLAS, OpenMP and numba run one
thread; pin the process to a core (``taskset -c 1``) on a shared machine.

``--psf-max-stars N`` also times the PSF fit with ``PSFConfig.max_stars = N`` (e.g. 500, the
earlier default) and reports how its model differs: FWHM on a 3 x 3 grid of the CCD.

Prints one JSON object (also written to ``--out FILE``): CPU seconds per step, the numbers of
detections, PSF stars and difference-image candidates, and the load average before and after.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_v] = "1"

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_exposure as be

import desgw.diff.pipeline as diff_pipeline
import desgw.se.process as se_process
from desgw.sim.truth import load_truth
from desgw.workflow.sediff import run_sediff
from benchjson import emit, load_average

# (module, function name, step label)
STEPS = [(se_process, "mask_bleed_trails", "bleed"),
         (se_process, "find_cosmic_rays", "cosmics"),
         (se_process, "fit_ccd_psf", "psf"),
         (se_process, "measure_sources", "measure"),
         (diff_pipeline, "measure_candidates", "diff_measure")]


def _capture(root: Path, ccd: int) -> dict[str, tuple[Any, Any]]:
    """Run the search CCD once; the first call of each step: (function, deep-copied inputs)."""
    truth = load_truth(root)
    (search,) = truth.search_expnums
    (template,) = truth.template_expnums
    settings = be._settings(root)
    got: dict[str, tuple[Any, Any]] = {}
    originals = {}
    for mod, name, label in STEPS:
        fn = getattr(mod, name)
        originals[(mod, name)] = fn

        def wrapped(*a: Any, _fn: Any = fn, _label: str = label, **k: Any) -> Any:
            if _label not in got:
                got[_label] = (_fn, copy.deepcopy((a, k)))
            return _fn(*a, **k)

        setattr(mod, name, wrapped)
    try:
        for d in (root / "out").glob(f"**/{search}"):
            if d.is_dir():
                shutil.rmtree(d)
        run_sediff(search, settings=settings, rnum=1, pnum=1, season=1, templates=[template],
                   ccds=[ccd], run_calibration=False, single_process=True, progress=False)
    finally:
        for (mod, name), fn in originals.items():
            setattr(mod, name, fn)
    return got


def _best(fn: Any, args: tuple[Any, Any], repeat: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        a, k = copy.deepcopy(args)
        t0 = time.process_time()
        out = fn(*a, **k)
        best = min(best, time.process_time() - t0)
    return best, out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--ccd", type=int, default=28)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--psf-max-stars", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    got = _capture(args.workdir, args.ccd)
    result: dict[str, Any] = {"workdir": str(args.workdir), "ccd": args.ccd,
                              "repeat": args.repeat, "cpu_s": {}}
    for _mod, _name, label in STEPS:
        if label not in got:
            continue
        fn, inputs = got[label]
        dt, out = _best(fn, inputs, args.repeat)
        result["cpu_s"][label] = round(dt, 4)
        if label == "psf":
            result["psf_stars"] = int(out.n_stars)
            ny, nx = out.image_shape
            grid = [(x, y) for y in (100, ny / 2, ny - 100) for x in (100, nx / 2, nx - 100)]
            fwhm = [out.fwhm_at(x, y) for x, y in grid]
            result["psf_fwhm_grid"] = [round(float(f), 4) for f in fwhm]
            if args.psf_max_stars:
                a, k = inputs
                a = list(a)
                a[5] = replace(a[5], max_stars=args.psf_max_stars)
                dt2, out2 = _best(fn, (tuple(a), k), args.repeat)
                result["cpu_s"][f"psf_max_stars_{args.psf_max_stars}"] = round(dt2, 4)
                result[f"psf_stars_max_stars_{args.psf_max_stars}"] = int(out2.n_stars)
                f2 = [out2.fwhm_at(x, y) for x, y in grid]
                result["psf_fwhm_rel_diff_max"] = round(
                    max(abs(p / q - 1) for p, q in zip(fwhm, f2)), 6)
        elif label == "measure":
            result["detections"] = len(out)
        elif label == "diff_measure":
            result["candidates"] = len(out)
    result["load_before"] = [round(v, 2) for v in load_before]
    result["load_after"] = load_average()
    emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
