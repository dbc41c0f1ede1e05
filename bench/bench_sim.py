"""Benchmark: render (and write) one full 62-CCD simulated raw DECam exposure.

Usage: ``python bench/bench_sim.py [--workers N] [--ccds 62] [--write PATH] [--synthetic]``

Objects come from the scene generator (`desgw.sim.scene.make_scene` + `desgw.sim.survey.plan_night`)
unless ``--synthetic`` (or the scene side is missing): then ~1500 stars (r 16-24.5, steep counts)
and ~5000 galaxies (r 20-24.5) per CCD. Prints one JSON object: seconds per CCD (mean, max) for the
pixel rendering, total render seconds, crosstalk seconds, write seconds, object counts, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from desgw.instrument import SCIENCE_CCDNUMS, Pointing, pixel_to_sky
from desgw.sim.calib import make_detector_calib
from desgw.sim.model import ExposureSpec, ObjectTable, PSFField, SimSwitches
from desgw.sim.render import render_exposure


def _synthetic(spec: ExposureSpec, ccdnums, rng: np.random.Generator) -> ObjectTable:
    kinds: list[np.ndarray] = []
    ras: list[np.ndarray] = []
    decs: list[np.ndarray] = []
    mags: list[np.ndarray] = []
    hlrs: list[np.ndarray] = []
    ns: list[np.ndarray] = []
    qs: list[np.ndarray] = []
    pas: list[np.ndarray] = []
    for c in ccdnums:
        for kind, n, lo, hi in ((0, 1500, 16.0, 24.5), (1, 5000, 20.0, 24.5)):
            # counts rising as 10**(0.3 m) (stars) / 10**(0.35 m) (galaxies)
            slope = 0.3 if kind == 0 else 0.35
            u = rng.random(n)
            a, b = 10 ** (slope * lo), 10 ** (slope * hi)
            mag = np.log10(a + u * (b - a)) / slope
            x = rng.uniform(0, 2048, n)
            y = rng.uniform(0, 4096, n)
            ra, dec = pixel_to_sky(c, x, y, spec.pointing, spec.distortion)
            ras.append(ra)
            decs.append(dec)
            mags.append(mag)
            kinds.append(np.full(n, kind))
            hl = np.where(kind == 1, rng.lognormal(np.log(0.45), 0.4, n) * 10 ** (-0.1 * (mag - 22)), 0.0)
            hlrs.append(hl)
            ns.append(rng.choice([1.0, 4.0], n, p=[0.7, 0.3]))
            qs.append(rng.uniform(0.3, 1.0, n))
            pas.append(rng.uniform(0, 180, n))
    n = sum(len(m) for m in mags)
    return ObjectTable(id=np.arange(n), kind=np.concatenate(kinds).astype(np.int8),
                       ra=np.concatenate(ras), dec=np.concatenate(decs), mag=np.concatenate(mags),
                       hlr_arcsec=np.concatenate(hlrs), sersic_n=np.concatenate(ns),
                       q=np.concatenate(qs), pa_deg=np.concatenate(pas))


def _scene_objects(seed: int) -> tuple[ExposureSpec, ObjectTable]:
    from desgw.sim.scene import make_scene
    from desgw.sim.survey import plan_night

    specs = plan_night(seed=seed, band="r", n_templates=0, n_search=1)
    spec = specs[-1]
    scene = make_scene(spec.pointing.ra_deg, spec.pointing.dec_deg, 1.3, seed=seed)
    return spec, scene.objects_at(spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--ccds", type=int, default=62)
    ap.add_argument("--write", type=str, default=None, help="write the raw exposure here (.fits.fz)")
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    ccdnums = list(SCIENCE_CCDNUMS[:args.ccds])
    t0 = time.perf_counter()
    source = "synthetic"
    if not args.synthetic:
        try:
            spec, objects = _scene_objects(args.seed)
            source = "scene"
        except ImportError:
            args.synthetic = True
    if args.synthetic:
        p = Pointing(30.0, -30.0)
        spec = ExposureSpec(expnum=500000, band="r", mjd=58710.1, exptime=90.0, airmass=1.2,
                            pointing=p, header_pointing=p,
                            psf=PSFField(1.0, 3.0, 0.05, (0.02, -0.01), 0.02, -0.01, 0.03),
                            sky_mag_arcsec2=20.8, sky_gradient=(0.02, 0.0), zeropoint=26.6)
        objects = _synthetic(spec, ccdnums, np.random.default_rng(args.seed))
    t_scene = time.perf_counter() - t0
    calib = make_detector_calib(SCIENCE_CCDNUMS, seed=args.seed, band=spec.band)
    # warm the numba kernels (compiled and cached on first use)
    render_exposure(spec, objects, [35], switches=SimSwitches(), seed=0, calib=calib,
                    crosstalk_neighbours=False)
    t1 = time.perf_counter()
    out = render_exposure(spec, objects, ccdnums, switches=SimSwitches(), seed=args.seed,
                          calib=calib, workers=args.workers)
    t_render = time.perf_counter() - t1
    # pixel work per CCD (thread wall time; excludes crosstalk and writing)
    per_ccd = np.array([sum(v for k, v in r.timings.items() if k != "crosstalk") for r in out])
    xtalk = float(sum(r.timings["crosstalk"] for r in out))
    stages = {k: round(float(sum(r.timings.get(k, 0.0) for r in out)), 2)
              for k in ("sky", "objects", "detector", "crosstalk", "digitise")}
    from desgw.sim.raw_writer import write_rendered_exposure

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.write) if args.write else Path(tmp) / "DECam_bench.fits.fz"
        t2 = time.perf_counter()
        write_rendered_exposure(path, spec, out)
        t_write = time.perf_counter() - t2
        size_mb = path.stat().st_size / 1e6
    result = {
        "objects_source": source,
        "n_objects_in_field": int(len(objects)),
        "n_objects_on_ccds": int(sum(len(r.truth.objects) for r in out)),
        "n_ccds": len(out),
        "workers": args.workers,
        "scene_seconds": round(t_scene, 2),
        "seconds_per_ccd_mean": round(float(per_ccd.mean()), 3),
        "seconds_per_ccd_max": round(float(per_ccd.max()), 3),
        "stage_seconds_total": stages,
        "render_seconds_total": round(t_render, 2),
        "crosstalk_seconds": round(xtalk, 2),
        "write_seconds": round(t_write, 2),
        "written_mb": round(size_mb, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
