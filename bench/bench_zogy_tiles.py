"""Benchmark: ZOGY on one 4096 x 2048 CCD, this tree's code against another git revision's.

Usage: ``python bench/bench_zogy_tiles.py [--against main] [--repeat 5] [--inputs F.pkl]
[--keep-freed-memory]``

The zogy module of revision ``--against`` (``git show REV:src/desgw/diff/zogy.py``, loaded as
a separate module) and this tree's :func:`desgw.diff.zogy.zogy` subtract the same inputs,
interleaved, pinned to one core with BLAS/numba threads 1; PSF stamps are rendered once and
cached, so that only ZOGY is timed. Inputs: the varying Moffat pair of
``bench_zogy_grid.py`` (300 stars, 50 transients) with the filter grid fixed at 128 px
(``border`` 64, 640-point tile transforms: the grid the rule keeps on 55 of the 58 CCDs of the
sparse 60-CCD benchmark) and with the grid the rule chooses (64 px, 576 points); or, with
``--inputs``, a pickle of ``(args, kwargs)`` of one :func:`zogy` call (e.g. captured in the
pipeline). Prints one JSON object: best CPU seconds of each revision per case over
``--repeat`` runs, and whether the five outputs are bit-identical (else the largest
difference relative to each output's maximum). ``--keep-freed-memory`` first calls
:func:`desgw.util.malloc.keep_freed_memory`, as the pipeline's workers do: freed tile buffers
and outputs are then reused instead of page-faulted afresh on every call (without it, ~0.1-0.2
system CPU-s of each call is the kernel zero-filling them).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import importlib.util
import json
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_zogy_grid import _Cached

OUTPUTS = ("diff", "diff_var", "score", "flux", "flux_err")


def _module_at(rev: str, tmp: Path) -> ModuleType:
    """``src/desgw/diff/zogy.py`` of git revision ``rev`` as a module of its own."""
    root = Path(__file__).resolve().parents[1]
    text = subprocess.run(["git", "show", f"{rev}:src/desgw/diff/zogy.py"], cwd=root,
                          check=True, capture_output=True, text=True).stdout
    path = tmp / "zogy_before.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("zogy_before", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["zogy_before"] = mod
    spec.loader.exec_module(mod)
    return mod


def _synthetic() -> tuple[list, dict]:
    from desgw.diff.zogy_synth import MoffatPSFField, make_image_pair

    shape = (4096, 2048)
    ps = MoffatPSFField(4.0, beta=3.5, dfwhm_dy=0.24 / 4096, dfwhm_dx=0.1 / 2048, e1=0.02,
                        de1_dx=0.03 / 2048, image_shape=shape, stamp=25)
    pt = MoffatPSFField(4.6, beta=3.5, dfwhm_dy=-0.2 / 4096, e2=0.03, de2_dy=-0.03 / 4096,
                        image_shape=shape, stamp=25)
    pair = make_image_pair(shape, ps, pt, seed=1, n_stars=300, n_transients=50)
    args = [pair.search, pair.template, pair.search_var, pair.template_var, ps, pt]
    return args, {"f_new": 1.0, "f_ref": 1.0 / pair.scale, "gain_new": 1.0, "gain_ref": 1.0}


def _compare(a, b) -> dict[str, object]:
    """Per output: "identical", or its largest difference relative to its maximum."""
    out: dict[str, object] = {}
    for name in OUTPUTS:
        x, y = getattr(a, name), getattr(b, name)
        if np.array_equal(x, y, equal_nan=True):
            out[name] = "identical"
            continue
        fin = np.isfinite(x) & np.isfinite(y)
        scale = float(np.abs(x[fin]).max()) or 1.0
        out[name] = {"max_rel_diff": float(np.abs(x[fin] - y[fin]).max() / scale),
                     "finite_mask_same": bool(np.array_equal(np.isfinite(x), np.isfinite(y)))}
    return out


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", default="main", help="git revision to compare with")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--inputs", type=Path, default=None,
                    help="pickle of (args, kwargs) of one zogy call instead of the synthetic "
                         "pair")
    ap.add_argument("--keep-freed-memory", action="store_true",
                    help="reuse freed memory as the pipeline's workers do "
                         "(desgw.util.malloc.keep_freed_memory)")
    a = ap.parse_args()
    if a.keep_freed_memory:
        from desgw.util.malloc import keep_freed_memory

        keep_freed_memory()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    from desgw.diff import zogy as after

    with tempfile.TemporaryDirectory(prefix="bench_zogy_tiles_") as tmp:
        before = _module_at(a.against, Path(tmp))
        if a.inputs is None:
            args, kw = _synthetic()
            cases = {"grid_128": after.ZogyConfig(auto_kernel=False),
                     "grid_chosen": after.ZogyConfig()}
        else:
            with open(a.inputs, "rb") as f:
                args, kw = pickle.load(f)
            args = list(args)
            cases = {"captured": kw.pop("config", after.ZogyConfig())}
        args[4], args[5] = _Cached(args[4]), _Cached(args[5])
        result: dict = {"benchmark": "zogy, one 4096x2048 CCD, one core, two revisions",
                        "against": a.against, "repeat": a.repeat,
                        "keep_freed_memory": bool(a.keep_freed_memory), "cases": {}}
        for case, cfg in cases.items():
            cfg_before = before.ZogyConfig(**{f: getattr(cfg, f)
                                              for f in cfg.__dataclass_fields__})
            r0 = before.zogy(*args, **kw, config=cfg_before)  # warm, and the comparison
            r1 = after.zogy(*args, **kw, config=cfg)
            best = [np.inf, np.inf]
            for _ in range(max(1, a.repeat)):
                for i, (mod, c) in enumerate(((before, cfg_before), (after, cfg))):
                    t0 = time.process_time()
                    mod.zogy(*args, **kw, config=c)
                    best[i] = min(best[i], time.process_time() - t0)
            result["cases"][case] = {
                "kernel_size": int(r1.kernel_size), "border": int(r1.border),
                "cpu_best_s": {"before": round(best[0], 3), "after": round(best[1], 3)},
                "saved_s": round(best[0] - best[1], 3), "outputs": _compare(r0, r1)}
    result["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
