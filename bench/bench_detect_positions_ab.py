"""Benchmark: the cost of :func:`desgw.diff.detect.detect_transients` on one 4096 x 2048 CCD,
this tree's code against another git revision's (default ``audit18``: positions at the
``S_corr`` peak, before the climb to the peak of the matched filter ``S``).

The subtraction is synthetic and the size of a crowded CCD's: 2,500 sources (the crowded
night's CCD gave 2,461 candidates), point-like peaks in ``S`` (Gaussian, sigma 2.4 px: a
difference PSF of FWHM ~4 px matched-filtered), half of them with a brighter neighbour 2-6 px
away whose variance bump divides ``S`` into ``S_corr``; unit white noise in ``S_corr``. CPU
seconds (``time.process_time``) on one core, best of ``--repeat``, before and after
interleaved in the same process; also the number of candidates (the same: detection is on
``S_corr`` in both) and how far the positions moved. Prints JSON.

Run: ``taskset -c 1 env OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 PYTHONPATH=src python
bench/bench_detect_positions_ab.py``.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchjson import emit, load_average

SHAPE = (4096, 2048)


def _module_at(rev: str, tmp: Path) -> ModuleType:
    """``src/desgw/diff/detect.py`` of git revision ``rev`` as a module of its own."""
    root = Path(__file__).resolve().parents[1]
    text = subprocess.run(["git", "show", f"{rev}:src/desgw/diff/detect.py"], cwd=root,
                          check=True, capture_output=True, text=True).stdout
    path = tmp / "detect_before.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("detect_before", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["detect_before"] = mod
    spec.loader.exec_module(mod)
    return mod


def _add(img: np.ndarray, x: np.ndarray, y: np.ndarray, amp: np.ndarray, sigma: float) -> None:
    """Add circular Gaussians of peak ``amp`` at (x, y), in place (cut at 5 sigma)."""
    h = int(np.ceil(5 * sigma))
    c = np.arange(-h, h + 1)
    for xk, yk, ak in zip(x, y, amp):
        ix, iy = int(round(xk)), int(round(yk))
        g = ak * np.exp(-0.5 * (((c[None, :] + ix - xk) ** 2)
                                + ((c[:, None] + iy - yk) ** 2)) / sigma ** 2)
        img[iy - h:iy + h + 1, ix - h:ix + h + 1] += g


def _synthetic(n: int, seed: int = 1):
    from desgw.diff.subtract import Subtraction
    from desgw.diff.zogy_psf import TiledPSF
    from desgw.diff.zogy_synth import MoffatPSFField

    rng = np.random.default_rng(seed)
    ny, nx = SHAPE
    x = rng.uniform(40, nx - 40, n)
    y = rng.uniform(40, ny - 40, n)
    s = np.zeros(SHAPE)
    _add(s, x, y, rng.uniform(6.0, 60.0, n), 2.4)  # S in units of its blank-sky noise
    v = np.ones(SHAPE)
    half = n // 2
    d, a = rng.uniform(2.0, 6.0, half), rng.uniform(0.0, 2 * np.pi, half)
    _add(v, x[:half] + d * np.cos(a), y[:half] + d * np.sin(a), rng.uniform(1.0, 6.0, half),
         2.4)
    s += rng.normal(0.0, 1.0, SHAPE) * np.sqrt(v)
    score = (s / np.sqrt(v)).astype(np.float32)
    st = MoffatPSFField(4.0, image_shape=SHAPE).render(0, 0)[None, None]
    z = np.zeros(SHAPE, np.float32)
    return Subtraction(diff=z, diff_var=z + 1, score=score, flux_image=s.astype(np.float32),
                       flux_err_image=z + 1, mask=np.zeros(SHAPE, np.int32),
                       psf_diff=TiledPSF(stamps=st, tile=4096, image_shape=SHAPE))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", default="audit18", help="git revision to compare with")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--sources", type=int, default=2500)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    from desgw.diff import detect as after

    load0 = load_average()
    sub = _synthetic(a.sources)
    with tempfile.TemporaryDirectory(prefix="bench_detect_ab_") as tmp:
        before = _module_at(a.against, Path(tmp))
        runs: dict[str, list[float]] = {"before": [], "after": []}
        tables = {}
        for _ in range(a.repeat + 1):  # the first round compiles / warms the caches
            for name, mod in (("before", before), ("after", after)):
                t0 = time.process_time()
                tables[name] = mod.detect_transients(sub, threshold_sigma=5.0)
                runs[name].append(time.process_time() - t0)
    tb, ta = tables["before"], tables["after"]
    same_peaks = bool(np.array_equal(np.asarray(tb["x_peak"]), np.asarray(ta["x_peak"]))
                      and np.array_equal(np.asarray(tb["y_peak"]), np.asarray(ta["y_peak"])))
    moved = np.hypot(np.asarray(ta["x"]) - np.asarray(tb["x"]),
                     np.asarray(ta["y"]) - np.asarray(tb["y"])) if same_peaks else np.zeros(0)
    result = {
        "benchmark": "bench_detect_positions_ab", "against": a.against,
        "sources": a.sources, "candidates": [len(tb), len(ta)],
        "same_peak_pixels": same_peaks,
        "moved_px_median_p95_max": [round(float(np.median(moved)), 3),
                                    round(float(np.percentile(moved, 95)), 3),
                                    round(float(moved.max()), 3)] if moved.size else None,
        "cpu_s_best": {k: round(min(v[1:]), 4) for k, v in runs.items()},
        "cpu_s_all": {k: [round(t, 4) for t in v[1:]] for k, v in runs.items()},
        "load_avg_start": load0, "load_avg_end": load_average()}
    result["extra_ms_per_ccd"] = round(1e3 * (result["cpu_s_best"]["after"]
                                              - result["cpu_s_best"]["before"]), 1)
    emit(result, a.out)
    return result


if __name__ == "__main__":
    main()
