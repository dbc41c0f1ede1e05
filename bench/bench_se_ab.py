"""Benchmark: interleaved before/after CPU seconds of the SE steps whose kernels change most.

Usage: ``python bench/bench_se_ab.py WORKDIR OLD_SRC [--ccd 28] [--repeat 5]``

``WORKDIR`` is a simulated night as for ``bench/bench_se_steps.py``; ``OLD_SRC`` is the ``src``
folder of another tree (e.g. a ``git worktree`` or an export of an older commit). Its
``desgw`` package is copied to a temporary folder as ``desgw_old`` (imports rewritten), so
both versions run in one process, pinned to one core with BLAS/numba threads 1, alternately:
old, new, old, new ... The best (least) CPU time of each over ``--repeat`` alternations is
reported. On a loaded machine this is far steadier than comparing two separate runs of
``bench_se_steps.py``, whose step times moved by +-30 % between identical runs at load 10-15.

The steps: detrend, bleed (``mask_bleed_trails``), the first background, the first-pass
detection, cosmic rays (the new side given the detrending's smooth sky, as ``process_ccd``
does), the second background (first-pass segments and wings masked, no rms map, as
``process_ccd`` does by default), the second detection. Each step's inputs come from the new
code. Prints one JSON object with, per step, ``old_cpu_s``, ``new_cpu_s``, their ratio,
``outputs_equal`` (the cosmic-ray mask, the bleed mask, the detrended image, the sky level
or the segmentation map, bit for bit), for the detections ``catalog_max_abs_diff`` (the
float columns that differ and by how much) and the load. The process keeps freed memory
for reuse as the pipeline's workers do (:func:`desgw.util.malloc.keep_freed_memory`).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import importlib
import json
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np


def _old_package(old_src: Path, dest: Path, *, imports_only: bool = False) -> None:
    """Copy ``old_src/desgw`` to ``dest/desgw_old`` with its imports renamed.

    By default every ``desgw`` followed by a dot or a space is renamed (dotted names in
    strings too); ``imports_only`` renames the package in import statements only, so that
    the text the old code writes (header comments, metadata keys that name desgw) stays as
    it is and its files can be compared byte for byte with the new code's."""
    target = dest / "desgw_old"
    shutil.copytree(old_src / "desgw", target, ignore=shutil.ignore_patterns("__pycache__"))
    if imports_only:
        pat, repl = re.compile(r"^(\s*)(from|import)\s+desgw\b", re.MULTILINE), r"\1\2 desgw_old"
    else:
        pat, repl = re.compile(r"\bdesgw(?=[. ])"), "desgw_old"
    for path in target.rglob("*.py"):
        text = path.read_text()
        path.write_text(pat.sub(repl, text))


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return bool(np.array_equal(a, b))
    for name in ("mask", "image", "segmap", "level"):
        if hasattr(a, name):
            return bool(np.array_equal(getattr(a, name), getattr(b, name)))
    return False


def _catalog_diff(a: Any, b: Any) -> dict[str, float] | None:
    """Largest absolute difference of each float column of two detection catalogues of one
    length (None when the outputs are not detections or the lengths differ)."""
    ca, cb = getattr(a, "catalog", None), getattr(b, "catalog", None)
    if ca is None or cb is None or len(ca) != len(cb):
        return None
    out: dict[str, float] = {}
    for name in ca.colnames:
        va, vb = np.asarray(ca[name]), np.asarray(cb[name])
        if va.dtype.kind == "f":
            d = np.abs(va.astype(np.float64) - vb.astype(np.float64))
            d = d[np.isfinite(d)]
            out[name] = float(d.max()) if d.size else 0.0
    return {k: v for k, v in out.items() if v > 0.0}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("workdir", type=Path)
    ap.add_argument("old_src", type=Path)
    ap.add_argument("--ccd", type=int, default=28)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="desgw_old_"))
    _old_package(args.old_src, tmp)
    sys.path.insert(0, str(tmp))
    po = importlib.import_module("desgw_old.se.process")
    import desgw.se.process as pn
    from desgw.io.settings import load_settings
    from desgw.se import maskbits
    from desgw.util.malloc import keep_freed_memory
    from desgw.workflow.se_ccd import _read_inputs
    from desgw.workflow.se_types import CCDTask

    root = args.workdir
    raw = next((root / "raw").glob("DECam_*.fits*"))
    settings = load_settings(raw_dir=root / "raw", calib_dir=root / "calib",
                             refcat_dir=root / "refcat", out_root=root / "out", environ={},
                             cwd=root)
    calib = settings.calib_paths("r")
    task = CCDTask(expnum=int(raw.name.split("_")[1].split(".")[0]), ccdnum=args.ccd, band="r",
                   rnum=1, pnum=1, raw_path=str(raw), bias_path=str(calib.bias),
                   flat_path=str(calib.flat),
                   bpm_path=None if calib.bpm is None else str(calib.bpm),
                   refcat_dir=str(settings.refcat_dir), outdir=str(root / "out" / "single"),
                   overwrite=True)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    # as a pipeline worker does (desgw.workflow.tasks): freed CCD planes are reused, not
    # page-faulted in again on every call (without it ~1 s of system time per CCD)
    keep_freed_memory()
    inp = _read_inputs(task, {}, 30.0)
    cfg = pn.SEConfig()
    steps: dict[str, dict] = {}

    def ab(name: str, fo: Callable[[], Any], fn: Callable[[], Any]) -> None:
        out_old, out_new = fo(), fn()
        same = _equal(out_old, out_new)
        cdiff = _catalog_diff(out_old, out_new)
        del out_old, out_new
        to = tn = float("inf")
        for _ in range(max(1, args.repeat)):
            t = time.process_time()
            fo()
            to = min(to, time.process_time() - t)
            t = time.process_time()
            fn()
            tn = min(tn, time.process_time() - t)
        steps[name] = {"old_cpu_s": round(to, 4), "new_cpu_s": round(tn, 4),
                       "ratio": round(tn / to, 3), "outputs_equal": same,
                       **({} if cdiff is None else {"catalog_max_abs_diff": cdiff}),
                       "load_average_1min": round(os.getloadavg()[0], 2)}

    xt = pn.correct_crosstalk(inp.raw, inp.crosstalk_sources, args.ccd)
    corr = replace(inp.raw, pixels=xt.pixels)

    def detrend(p: Any) -> Callable[[], Any]:
        return lambda: p.detrend_ccd(corr, bias=inp.bias, flat=inp.flat, bpm=inp.bpm,
                                     mask=xt.mask, amps=xt.amps, ccdnum=args.ccd,
                                     config=cfg.detrend, linearity=inp.linearity,
                                     calib_paths=inp.calib_paths)

    ab("detrend", detrend(po), detrend(pn))
    d = detrend(pn)()
    sat = (d.mask & maskbits.SAT) != 0
    ab("bleed", lambda: po.mask_bleed_trails(d.image, sat),
       lambda: pn.mask_bleed_trails(d.image, sat))
    mask = d.mask | pn.mask_bleed_trails(d.image, sat).mask
    ab("first_background", lambda: po.estimate_background(d.image, mask, config=cfg.background),
       lambda: pn.estimate_background(d.image, mask, config=cfg.background))
    bkg1 = pn.estimate_background(d.image, mask, config=cfg.background)
    sub = d.image - bkg1.level
    fp = pn.first_pass_config(cfg)
    ab("first_pass_detect", lambda: po.detect_sources(sub, bkg1.rms, mask, config=fp),
       lambda: pn.detect_sources(sub, bkg1.rms, mask, config=fp))
    det1 = pn.detect_sources(sub, bkg1.rms, mask, config=fp)
    sat_e = min(a.saturation_e for a in d.amps)
    seeing = pn.estimate_seeing(det1, sub, max_peak=0.8 * sat_e - bkg1.global_level)
    rn = float(np.mean([a.read_noise_e for a in d.amps]))
    crc = replace(cfg.cosmics, objlim=pn.cosmics_objlim(seeing.fwhm_px))
    um = mask & maskbits.UNUSABLE
    kw: dict[str, Any] = dict(read_noise_e=rn, gain=1.0, psf_fwhm_px=seeing.fwhm_px, config=crc)
    ab("cosmics", lambda: po.find_cosmic_rays(d.image, um, **kw),
       lambda: pn.find_cosmic_rays(d.image, um, smooth_sky_e=d.sky, **kw))
    cr = pn.find_cosmic_rays(d.image, um, smooth_sky_e=d.sky, **kw)
    weight = d.weight.copy()
    pn.flag_pixels(mask, weight, pn.grow_mask(cr, 1) & (weight > 0), maskbits.CRAY)
    c1 = det1.catalog
    wings = pn.ObjectWings(x=np.asarray(c1["x"], dtype=np.float64),
                           y=np.asarray(c1["y"], dtype=np.float64),
                           peak=np.asarray(c1["peak"], dtype=np.float64),
                           fwhm_px=seeing.fwhm_px, noise=bkg1.global_rms)

    def bkg2(p: Any) -> Callable[[], Any]:
        wo = p.ObjectWings(**{k: getattr(wings, k) for k in ("x", "y", "peak", "fwhm_px",
                                                                "noise")})
        return lambda: p.estimate_background(d.image, mask, objects=det1.segmap, wings=wo,
                                             config=cfg.background, rms_map=False)

    ab("second_background", bkg2(po), bkg2(pn))
    bkg = pn.estimate_background(d.image, mask, objects=det1.segmap, wings=wings,
                                 config=cfg.background, rms_map=False)
    sub2 = d.image - bkg.level
    dc = pn.detect_config_for_seeing(cfg.detect, seeing.fwhm_px, snr=cfg.detect_snr,
                                     minarea=cfg.detect_minarea)
    ab("second_detect",
       lambda: po.detect_sources(sub2, weight, mask, noise_type="weight", config=dc),
       lambda: pn.detect_sources(sub2, weight, mask, noise_type="weight", config=dc))
    shutil.rmtree(tmp, ignore_errors=True)
    import desgw
    out = {"benchmark": "se_ab", "desgw": str(Path(desgw.__file__).parent),
           "old_src": str(args.old_src), "workdir": str(root), "ccdnum": args.ccd,
           "n_first_pass": len(det1.catalog), "repeat": args.repeat, "steps": steps}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
