"""Benchmark: single-epoch processing of simulated raw DECam CCDs, raw file -> products.

Usage: ``python bench/bench_se.py [--ccds 28,29] [--seed 5] [--workers 2] [--repeat 2]
[--workdir DIR] [--dense | --star-density-scale X] [--no-exposure]``

1. Simulates a search exposure with the given CCDs (in a subprocess, so that its memory does not
   count) and ingests its Gaia catalogue.
2. One CCD on one core (CPU affinity pinned to one core, BLAS/numba threads 1): the per-CCD task
   of :mod:`desgw.workflow.se_exposure` run ``--repeat`` times in this process (the first run
   includes loading numba's compiled kernels; the best run is reported), seconds per step
   (``read_raw``, ``read_calib``, ``refcat``, the steps of ``process_ccd``, ``write``) and the
   peak RSS of the process; CPU seconds of each run and ``process_ccd`` milliseconds per
   catalog object. ``--dense`` simulates a crowded field (>= 4000 objects per CCD).
3. The whole exposure (all simulated CCDs, ``--workers`` processes, with the photometric
   calibration, the corners file and the exposure QC): wall time per stage and the workers'
   peak RSS.

Prints one JSON object.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


#: ``--dense``: a field at Galactic latitude -20 deg (l = 240) with 22x the simulator's star
#: counts: ~4300 catalog objects on CCD 28 (the kilonova of GW170817 lay at b ~ 20 deg).
DENSE_CENTER = (95.41, -32.45)
DENSE_STAR_SCALE = 22.0


def _simulate(root: Path, ccds: str, seed: int, center: tuple[float, float] | None = None,
              star_scale: float = 1.0) -> float:
    t0 = time.perf_counter()
    if center is None and star_scale == 1.0:
        subprocess.run([sys.executable, "-m", "desgw.cli", "sim", str(root), "--seed", str(seed),
                        "--ccds", ccds, "--n-templates", "0", "--n-search", "1"],
                       check=True, stdout=subprocess.DEVNULL)
    else:  # the CLI has no scene options: the simulator's API in a subprocess
        code = ("import sys; from desgw.sim.night import simulate_night; "
                "from desgw.sim.scene import SceneConfig; "
                f"simulate_night({str(root)!r}, seed={seed}, ccds={[int(c) for c in ccds.split(',')]}, "
                f"n_templates=0, n_search=1, "
                f"center={tuple(center) if center is not None else (30.0, -30.0)}, "
                f"scene_config=SceneConfig(star_density_scale={float(star_scale)}))")
        subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ccds", default="28,29", help="CCDNUMs to simulate (the first is timed alone)")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2, help="runs of the single-CCD measurement")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the files here")
    ap.add_argument("--dense", action="store_true",
                    help=f"dense star field: centre {DENSE_CENTER}, {DENSE_STAR_SCALE}x the "
                         "star counts (>= 4000 objects per CCD)")
    ap.add_argument("--star-density-scale", type=float, default=None,
                    help="multiplier of the simulator's star counts (overrides --dense's)")
    ap.add_argument("--no-exposure", action="store_true",
                    help="skip the whole-exposure run (step 3)")
    args = ap.parse_args(argv)

    from desgw.io.settings import load_settings
    from desgw.refcat import ingest_gaia
    from desgw.workflow.se_ccd import run_ccd_task
    from desgw.workflow.se_exposure import run_se_exposure
    from desgw.workflow.se_types import CCDTask

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_se_")
        root = Path(tmp.name)
    else:
        root = args.workdir
        root.mkdir(parents=True, exist_ok=True)
    ccds = [int(c) for c in args.ccds.split(",")]
    star_scale = (args.star_density_scale if args.star_density_scale is not None
                  else DENSE_STAR_SCALE if args.dense else 1.0)
    sim_s = _simulate(root, args.ccds, args.seed, DENSE_CENTER if args.dense else None,
                      star_scale)
    ingest_gaia(sorted((root / "gaia").glob("*.csv")), root / "refcat", overwrite=True)
    raw = next((root / "raw").glob("DECam_*.fits*"))
    expnum = int(raw.name.split("_")[1].split(".")[0])

    settings = load_settings(raw_dir=root / "raw", calib_dir=root / "calib",
                             refcat_dir=root / "refcat", out_root=root / "out", environ={},
                             cwd=root)
    calib = settings.calib_paths("r")
    outdir = root / "out" / "single"

    # --- one CCD on one core
    all_cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if all_cpus:
        os.sched_setaffinity(0, {min(all_cpus)})
    task = CCDTask(expnum=expnum, ccdnum=ccds[0], band="r", rnum=1, pnum=1, raw_path=str(raw),
                   bias_path=str(calib.bias), flat_path=str(calib.flat),
                   bpm_path=None if calib.bpm is None else str(calib.bpm),
                   refcat_dir=str(settings.refcat_dir), outdir=str(outdir), overwrite=True)
    runs = []
    cpu_runs = []
    for _ in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        c0 = time.process_time()
        summary = run_ccd_task(task)
        cpu_runs.append(time.process_time() - c0)
        wall = time.perf_counter() - t0
        if not summary.ok:
            raise SystemExit(f"CCD {task.ccdnum} failed: {summary.reason}")
        runs.append((wall, summary))
    if all_cpus:
        os.sched_setaffinity(0, all_cpus)
    best_wall, best = min(runs, key=lambda r: r[0])
    peak_self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    steps = {k: round(v, 3) for k, v in best.timings.items() if k not in ("total", "process")}
    io_steps = ("read_raw", "read_calib", "refcat", "write")
    dominant = sorted(steps.items(), key=lambda kv: -kv[1])[:3]

    result = {
        "benchmark": "se",
        "expnum": expnum,
        "ccds": ccds,
        "star_density_scale": star_scale,
        "center": list(DENSE_CENTER) if args.dense else None,
        "simulate_s": round(sim_s, 2),
        "single_ccd": {
            "ccdnum": task.ccdnum,
            "cores": 1,
            "wall_s_runs": [round(w, 3) for w, _ in runs],
            "wall_s_best": round(best_wall, 3),
            "cpu_s_runs": [round(c, 3) for c in cpu_runs],
            "process_ccd_s": round(best.timings.get("process", float("nan")), 3),
            "process_ccd_ms_per_object": round(1e3 * best.timings.get("process", float("nan"))
                                               / max(best.n_objects, 1), 3),
            "io_s": round(sum(best.timings.get(k, 0.0) for k in io_steps), 3),
            "steps_s": steps,
            "dominant_steps": [k for k, _ in dominant],
            "n_objects": best.n_objects,
            "peak_rss_mb": round(peak_self_mb, 1),
        },
    }
    if not args.no_exposure:
        # --- the whole exposure with worker processes
        t0 = time.perf_counter()
        report = run_se_exposure(expnum, settings=settings, rnum=1, pnum=2,
                                 run_calibration=True, workers=args.workers, overwrite=True)
        exposure_wall = time.perf_counter() - t0
        peak_children_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
        result["exposure"] = {
            "n_ccds": len(report.ccds),
            "workers": args.workers,
            "wall_s": round(exposure_wall, 3),
            "stages_s": {k: round(v, 3) for k, v in report.stage_seconds.items()},
            "ccd_total_s": {str(c): round(s.timings.get("total", float("nan")), 3)
                            for c, s in report.ccds.items()},
            "ccd_steps_s": {str(c): {k: round(v, 3) for k, v in s.timings.items()}
                            for c, s in report.ccds.items()},
            "worker_peak_rss_mb": round(peak_children_mb, 1),
            "zeropoint": None if report.expcalib is None else round(report.expcalib.zp, 4),
            "failed": {str(c): why for c, why in report.failed.items()},
        }
    result["cpu_count"] = os.cpu_count()
    result["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result, indent=1))
    if tmp is not None:
        tmp.cleanup()
    return result


if __name__ == "__main__":
    main()
