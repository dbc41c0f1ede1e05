"""Benchmark: ZOGY on one full 4096 x 2048 CCD with the full filter grid and the chosen one.

Usage: ``python bench/bench_zogy_grid.py [--repeat 5] [--stamp 25] [--beta 3.5]``

A synthetic search/template pair (:func:`desgw.diff.zogy_synth.make_image_pair`, 300 stars,
50 transients) whose Moffat PSFs vary across the CCD (FWHM 4.0 and 4.6 px with gradients of
~6 % and ~4 % over the CCD, ellipticity gradients) is subtracted by
:func:`desgw.diff.zogy.zogy` with ``auto_kernel=False`` (the 128-px grid of ``border = 64``,
the code before the grid rule, bit-identical to it) and with the default (the grid of
:func:`desgw.diff.zogy.choose_kernel_size`), interleaved, pinned to one core with BLAS/numba
threads 1; PSF stamps are rendered once and cached so that only ZOGY is timed. Prints one
JSON object: the best CPU seconds of each over ``--repeat`` runs, the chosen grid and
overlap, the cost of the rule alone, and the load average.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import time

import numpy as np


class _Cached:
    """A PSF whose renders are remembered (the benchmark times ZOGY, not the renders)."""

    def __init__(self, psf) -> None:
        self.psf = psf
        self.cache: dict = {}

    def render(self, x: float, y: float, *, size: int | None = None, dx: float = 0.0,
               dy: float = 0.0) -> np.ndarray:
        key = (x, y, size, dx, dy)
        if key not in self.cache:
            self.cache[key] = self.psf.render(x, y, size=size, dx=dx, dy=dy)
        return self.cache[key]


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--stamp", type=int, default=25, help="PSF stamp side (odd, pixels)")
    ap.add_argument("--beta", type=float, default=3.5, help="Moffat beta")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    from desgw.diff.zogy import ZogyConfig, _kernel_size, zogy
    from desgw.diff.zogy_synth import MoffatPSFField, make_image_pair

    shape = (4096, 2048)
    ps = MoffatPSFField(4.0, beta=args.beta, dfwhm_dy=0.24 / 4096, dfwhm_dx=0.1 / 2048,
                        e1=0.02, de1_dx=0.03 / 2048, image_shape=shape, stamp=args.stamp)
    pt = MoffatPSFField(4.6, beta=args.beta, dfwhm_dy=-0.2 / 4096, e2=0.03,
                        de2_dy=-0.03 / 4096, image_shape=shape, stamp=args.stamp)
    pair = make_image_pair(shape, ps, pt, seed=1, n_stars=300, n_transients=50)
    cs, ct = _Cached(ps), _Cached(pt)
    configs = {"full_grid": ZogyConfig(auto_kernel=False), "chosen_grid": ZogyConfig()}
    inputs = (pair.search, pair.template, pair.search_var, pair.template_var, cs, ct)
    f_ref = 1.0 / pair.scale

    def run(cfg: ZogyConfig):
        return zogy(*inputs, f_new=1.0, f_ref=f_ref, gain_new=1.0, gain_ref=1.0, config=cfg)

    res = {name: run(cfg) for name, cfg in configs.items()}  # warm
    best = {name: np.inf for name in configs}
    for _ in range(max(1, args.repeat)):
        for name, cfg in configs.items():
            t0 = time.process_time()
            run(cfg)
            best[name] = min(best[name], time.process_time() - t0)
    rule = np.inf
    nv, rv = (np.ascontiguousarray(a, np.float32) for a in (pair.search_var, pair.template_var))
    for _ in range(3):
        t0 = time.process_time()
        _kernel_size(configs["chosen_grid"], ps, pt, nv, rv, 1.0, f_ref, (None, None))
        rule = min(rule, time.process_time() - t0)
    out = {
        "benchmark": "zogy, one 4096x2048 CCD, varying Moffat pair, one core",
        "psf_stamp": args.stamp, "beta": args.beta,
        "cpu_best_s": {k: round(v, 3) for k, v in best.items()},
        "kernel_size": {k: r.kernel_size for k, r in res.items()},
        "border": {k: r.border for k, r in res.items()},
        "rule_cpu_s": round(rule, 4),
        "repeat": args.repeat,
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
