"""Benchmark: interleaved before/after CPU seconds of the difference task's template resampling.

Usage: ``python bench/bench_resample_ab.py WORKDIR OLD_SRC [--ccd 28] [--repeat 5] [--out FILE]
[--keep-freed-memory]``

``WORKDIR`` is a work folder of ``bench/bench_exposure.py`` whose template exposure is
processed (e.g. ``--ccds 27,28,29 --workdir W``); the search exposure's products in it are
removed and rewritten. ``OLD_SRC`` is the ``src`` folder of another tree (e.g.
``git archive main src | tar -x -C DIR``); its ``desgw`` package is loaded as ``desgw_old``
(the copy of :func:`bench_se_ab._old_package`), so that both versions run in one process.

The search CCD runs once through ``run_sediff`` (SE, then difference imaging, in this process)
and the inputs of :func:`desgw.diff.pipeline.difference_ccd` are kept. The templates are then
cut and cropped as the pipeline does, each mapped to the search grid and registered (the same
mapping for both versions), and ``resample_to_grid`` of all of them is timed alternately with
the old and the new module, ``--repeat`` times (CPU seconds, ``time.process_time``; BLAS and
numba one thread; pin the process with ``taskset -c 1``); the least of each is reported, with
the templates' input and output pixel counts, whether the outputs (image, mask, weight,
coverage, noise correlation factor) are equal bit for bit, and the load before and after.
``new_split_cpu_s`` splits the new side (least of ``--repeat`` each, summed over the
templates): the input pass (``prepare_input``), the tap-box map (``box_any``), the
interpolation kernel with its output planes, and after it the coadd (``coadd_templates``)
and the relative sky of the sky match (``relative_sky``).

``--keep-freed-memory`` first calls :func:`desgw.util.malloc.keep_freed_memory`, as the
pipeline's workers do (freed planes are reused without page faults). Prints one JSON object
(also written to ``--out FILE``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_v] = "1"

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from bench_exposure import _settings
from bench_se_ab import _old_package

import desgw.diff.pipeline as diff_pipeline
from desgw.sim.truth import load_truth
from desgw.workflow.sediff import run_sediff
from benchjson import emit, load_average


def _capture(root: Path, ccd: int) -> tuple[Any, Any]:
    """Run the search CCD once; the inputs of its ``difference_ccd`` call (args, kwargs)."""
    truth = load_truth(root)
    (search,) = truth.search_expnums
    (template,) = truth.template_expnums
    got: list[tuple[Any, Any]] = []
    original = diff_pipeline.difference_ccd

    def wrapped(*a: Any, **k: Any) -> Any:
        if not got:
            got.append((a, k))
        return original(*a, **k)

    diff_pipeline.difference_ccd = wrapped
    try:
        for d in (root / "out").glob(f"**/{search}"):
            if d.is_dir():
                shutil.rmtree(d)
        run_sediff(search, settings=_settings(root), rnum=1, pnum=1, season=1,
                   templates=[template], ccds=[ccd], run_calibration=False,
                   single_process=True, progress=False)
    finally:
        diff_pipeline.difference_ccd = original
    if not got:
        raise RuntimeError(f"CCD {ccd}: difference_ccd was not called")
    return got[0]


def _inputs(a: Any, k: Any) -> tuple[Any, list[tuple[Any, Any]]]:
    """The pipeline's resampling inputs: (search, [(template, registered mapping), ...])."""
    from desgw.diff.pipeline_steps import footprint_overlaps, template_cut_reasons
    from desgw.diff.register import refine_registration, select_stars
    from desgw.diff.resample_mapping import mapping_grid
    from desgw.diff.template_crop import crop_to_search

    search, templates = a[0], a[1]
    config = k.get("config") or diff_pipeline.DiffConfig()
    s_stars = select_stars(search.catalog, search.wcs, config=config.registration)
    out = []
    for t in templates:
        if template_cut_reasons(t, search, config) or not footprint_overlaps(t, search):
            continue
        t = crop_to_search(t, search) if config.crop_templates else t
        mapping = mapping_grid(t.wcs, search.wcs, search.shape,
                               step=config.resample.grid_step,
                               tolerance=config.resample.wcs_tolerance)
        reg = refine_registration(s_stars, select_stars(t.catalog, t.wcs,
                                                        config=config.registration),
                                  mapping, config=config.registration)
        out.append((t, reg.apply(mapping)))
    return search, out


def _best(fn: Any, repeat: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.process_time()
        out = fn()
        best = min(best, time.process_time() - t0)
    return best, out


def _split(search: Any, work: list[tuple[Any, Any]], resampled: list[Any], config: Any,
           repeat: int) -> dict[str, float]:
    """CPU seconds of the new resampling's parts and of the coadd and relative sky after it."""
    from desgw.diff.coadd import coadd_templates
    from desgw.diff.pipeline_steps import relative_sky, search_sky, usable_pixels
    from desgw.diff.resample import kernel_order, output_box, prepare_input
    from desgw.diff.resample_kernels import box_any, lanczos_table, resample_kernel
    from desgw.se.maskbits import BADPIX, EDGE, UNUSABLE

    order = kernel_order(config.resample_kernel)
    out = {"prepare_input": 0.0, "box_any": 0.0, "kernel_and_planes": 0.0}
    ny, nx = search.shape
    for t, m in work:
        dt, prep = _best(lambda t=t: prepare_input(t.image, t.mask, t.weight), repeat)
        out["prepare_input"] += dt
        img, var, mask, good, flagged = prep
        dt, near = _best(lambda f=flagged: box_any(f, order - 1, order), repeat)
        out["box_any"] += dt
        box = output_box(m, img.shape, order)

        def kernel(img=img, var=var, mask=mask, good=good, near=near, m=m, box=box) -> Any:
            planes = (np.zeros((ny, nx), np.float32), np.full((ny, nx), int(EDGE), np.int32),
                      np.zeros((ny, nx), np.float32), np.zeros((ny, nx), np.uint8))
            return resample_kernel(img, var, mask, good, near, m.xin, m.yin, m.area, m.x0,
                                   m.y0, float(m.step), lanczos_table(order), order,
                                   float(config.resample.mask_threshold), int(EDGE),
                                   int(UNUSABLE), int(BADPIX), *planes, *box)

        out["kernel_and_planes"] += _best(kernel, repeat)[0]
    zps = [t.zp_stamp for t, _ in work]
    out["coadd"], coadd = _best(lambda: coadd_templates(
        resampled, zps, search.zp_stamp, [t.psf for t, _ in work], method=config.coadd_method,
        reject=config.coadd_reject), repeat)
    s_img, _, s_rms = search_sky(search, config)
    good = usable_pixels(search.mask, search.weight, coadd.mask, coadd.weight)
    out["relative_sky"] = _best(lambda: relative_sky(s_img, coadd.image, good, s_rms, config),
                                repeat)[0]
    return {k: round(v, 4) for k, v in out.items()}


def _same(a: Any, b: Any) -> bool:
    return bool(np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
                and np.array_equal(a.weight, b.weight) and np.array_equal(a.coverage, b.coverage)
                and a.noise_correlation_factor == b.noise_correlation_factor)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("workdir", type=Path)
    ap.add_argument("old_src", type=Path)
    ap.add_argument("--ccd", type=int, default=28)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--keep-freed-memory", action="store_true",
                    help="reuse freed memory as the pipeline's workers do "
                         "(desgw.util.malloc.keep_freed_memory)")
    args = ap.parse_args(argv)
    if args.keep_freed_memory:
        from desgw.util.malloc import keep_freed_memory

        keep_freed_memory()
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="desgw_old_"))
    try:
        _old_package(args.old_src, tmp)
        sys.path.insert(0, str(tmp))
        old = importlib.import_module("desgw_old.diff.resample")
        import desgw.diff.resample as new

        a, k = _capture(args.workdir, args.ccd)
        search, work = _inputs(a, k)
        config = k.get("config") or diff_pipeline.DiffConfig()
        best = {"old": float("inf"), "new": float("inf")}
        outs: dict[str, list[Any]] = {}
        for _ in range(args.repeat):
            for name, mod in (("old", old), ("new", new)):
                t0 = time.process_time()
                outs[name] = [mod.resample_to_grid(t.image, t.mask, t.weight, t.wcs, search.wcs,
                                                   search.shape, kernel=config.resample_kernel,
                                                   config=config.resample, mapping=m)
                              for t, m in work]
                best[name] = min(best[name], time.process_time() - t0)
        result: dict[str, Any] = {
            "workdir": str(args.workdir), "ccd": args.ccd, "repeat": args.repeat,
            "keep_freed_memory": bool(args.keep_freed_memory),
            "templates": len(work),
            "input_mpix": round(sum(t.image.size for t, _ in work) / 1e6, 3),
            "covered_mpix": round(sum(int(r.coverage.sum()) for r in outs["new"]) / 1e6, 3),
            "old_cpu_s": round(best["old"], 4), "new_cpu_s": round(best["new"], 4),
            "ratio": round(best["new"] / best["old"], 3),
            "outputs_equal": all(_same(p, q) for p, q in zip(outs["old"], outs["new"])),
            "new_split_cpu_s": _split(search, work, outs["new"], config, args.repeat),
            "load_before": [round(v, 2) for v in load_before],
            "load_after": load_average(),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
