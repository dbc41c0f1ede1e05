"""The PSF aperture correction's noise from the PSF stars themselves: the correction of the
model fitted to all PSF candidates and to each grouped-jackknife subset, by ``main``'s
:func:`desgw.se.process_steps.wing_outside_flux` and by the working tree's (issue 13, item 8).

Usage::

    nice -n 5 env PYTHONPATH=src python bench/bench_apcor_jackknife.py --root /work/sci11f \\
        --cases kolmogorov_sparse_bad_seeing:649674:28,moffat3.5_dense:679983:28 \\
        [--groups 8] [--old-ref main] [--out F]

For each CCD (``NIGHT:EXPNUM:CCD`` under ``--root``, a night of bench/bench_science.py) the raw
CCD is processed as ``desgw se`` does (:func:`desgw.workflow.se_ccd.read_and_process`, nothing
written; bench/bench_sky_truth.py's ``_process``), the PSF step's arguments are recorded, and
the model is refitted (:func:`desgw.se.process.fit_ccd_psf`, the pipeline's settings) to all
candidates and without each of ``--groups`` groups dealt at random as in
bench/bench_psf_flux_split.py (same seed ``1000 * expnum + ccdnum``, so the same groups). Each
model's mean stamp (as :func:`desgw.se.process_steps.psf_aperture_correction` averages it over
the CCD) goes through the old function (``git show OLD_REF:src/desgw/se/process_steps.py``
loaded as a separate module) and the new one: the full-sample correction (``full``), the
grouped-jackknife standard error ``sqrt((G - 1) / G * sum (c_g - mean)**2)`` (``jk_sigma``)
and the subsets' range; and the CPU time of one call of each (best of 5, process time).

Prints one JSON object (``--out`` writes it) with a row per CCD, the commit and the load.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from bench_sky_truth import _process
from benchjson import run_cases


def _old_module(ref: str) -> ModuleType:
    """``src/desgw/se/process_steps.py`` of git ``ref`` as the module ``process_steps_old``."""
    text = subprocess.run(["git", "-C", str(BENCH.parent), "show",
                           f"{ref}:src/desgw/se/process_steps.py"], capture_output=True,
                          text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "process_steps_old.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("process_steps_old", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["process_steps_old"] = mod
    spec.loader.exec_module(mod)
    return mod


def mean_stamp(psf: Any, margin: float, grid: tuple[int, int] = (4, 7)) -> np.ndarray:
    """The model averaged over the CCD as psf_aperture_correction averages it (sum 1)."""
    ny, nx = psf.image_shape
    gx, gy = np.meshgrid(np.linspace(margin, nx - 1 - margin, grid[0]),
                         np.linspace(margin, ny - 1 - margin, grid[1]))
    m = np.mean([psf.centred(x, y) for x, y in zip(gx.ravel(), gy.ravel())], axis=0)
    return m / m.sum()


def _stats(values: list[float]) -> dict[str, Any]:
    v = np.asarray(values[1:])
    g = v.size
    return {"full": round(values[0], 5),
            "jk_sigma": round(float(np.sqrt((g - 1) / g * np.sum((v - v.mean()) ** 2))), 5),
            "range": [round(float(v.min()), 5), round(float(v.max()), 5)],
            "subsets": [round(float(x), 5) for x in v]}


def _cpu(fn: Callable[[np.ndarray], float], stamp: np.ndarray) -> float:
    best = np.inf
    for _ in range(5):
        t0 = time.process_time()
        fn(stamp)
        best = min(best, time.process_time() - t0)
    return best


def measure(root: Path, night: str, e: int, c: int, groups: int, old: ModuleType
            ) -> dict[str, Any]:
    import desgw.se.process as proc
    from desgw.se.process_steps import wing_outside_flux

    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    orig = proc.fit_ccd_psf

    def rec(*args: Any, **kw: Any) -> Any:
        calls.append((args, kw))
        return orig(*args, **kw)

    proc.fit_ccd_psf = rec
    try:
        _process(root / night, e, c, None)
    finally:
        proc.fit_ccd_psf = orig
    args, kw = calls[-1]
    sub, pw, pm, px, py, psf_cfg, config, seeing = args[:8]
    ny, nx = sub.shape
    margin = min(100.0, 0.25 * min(ny, nx))
    label = np.random.default_rng(1000 * e + c).permutation(len(px)) % groups
    stamps, n_stars = [], []
    for g in range(-1, groups):
        keep = label != g
        psf = orig(sub, pw, pm, px[keep], py[keep], psf_cfg, config, seeing, {}, **kw)
        stamps.append(mean_stamp(psf, margin))
        n_stars.append(psf.n_stars)
    res = {}
    for name, fn in (("old", old.wing_outside_flux), ("new", wing_outside_flux)):
        res[name] = _stats([1.0 + fn(s) for s in stamps])
        res[name]["cpu_ms"] = round(1e3 * _cpu(fn, stamps[0]), 2)
    return {"night": night, "expnum": e, "ccdnum": c, "n_stars": n_stars,
            "full_new_minus_old": round(res["new"]["full"] - res["old"]["full"], 5), **res}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--cases", required=True, help="NIGHT:EXPNUM:CCD,...")
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--old-ref", default="main", help="git ref of the old process_steps.py")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    old = _old_module(a.old_ref)
    run_cases("apcor_jackknife", a.cases,
              lambda n, e, c: measure(a.root, n, e, c, a.groups, old), a.out, old_ref=a.old_ref)


if __name__ == "__main__":
    main()
