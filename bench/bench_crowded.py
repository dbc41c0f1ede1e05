"""Crowded-field photometry: zeropoint error, bright-star FLUX_PSF / true and the photometry's
CPU cost per object, per object density and measurement variant.

On crowded galsim fields (tests/se/crowded_synth.py: a quarter CCD, 2048 x 1024 px, Poisson
positions, a rising stellar luminosity function, 15 % galaxies, Moffat or Kolmogorov PSF varying
across the field) it runs the single-epoch sequence of :func:`desgw.se.process.process_ccd`
(two-pass background, detection for the seeing, PSF fit, measurement, aperture correction,
calibration-star selection, weighted zeropoint vs the total fluxes of the stars brighter than
21 mag) for each variant:

- ``alone``: each PSF flux fitted alone (``neighbour_iter=0``), the sky of the clipped mode;
- ``neighbours``: neighbours' PSF models subtracted (``neighbour_iter=2``); the pipeline's
  default (the second background with each first-pass detection's wing masked,
  :class:`desgw.se.background.ObjectWings`);
- ``fixedgrow``: as ``neighbours`` with the second background's object masks the segments
  grown by 4 px only (the masks before the wing masks);
- ``nocompanions``: as ``neighbours`` without the search for point sources hidden in the PSF
  stars' stamps (``PSFConfig.companion_snr = 0``, the PSF fit before it);
- ``noforward``: as ``neighbours`` with the PSF model fitted to the resampled stamps instead of
  through the photometry's sub-pixel rendering (``PSFConfig.forward_model = False``, the fit
  before it);
- ``meansky``: and the background corrected to the mean of the image less the sources' models
  (:func:`desgw.se.process_steps.mean_sky_background`, as process_ccd);
- ``meansky+psf``: and the PSF refitted on the image less that background;
- ``truesky``: the true sky (no light of undetected sources in it);
- ``truesky+undetected``: the true sky plus the mean light of the undetected objects
  (``crowded_synth.undetected_light``; its value is ``undetected_light_e`` in every variant).

The per-field zeropoint noise is ~2 mmag, so several seeds are averaged; prints JSON with, per
density and variant, the mean zeropoint error and its standard error (mmag), the mean
bright-star ratio, the aperture correction over its exact value, the PSF model's peak over the
exact one, rendered at four sub-pixel offsets as the photometry renders it (< 1: too broad a
model, PSF fluxes too high) and the number of PSF stars, the sky bias (e-/px, level - true
sky) and the CPU ms per object of ``measure_sources`` (one core, numba threads 1), with
``os.getloadavg()``.

    PYTHONPATH=src python bench/bench_crowded.py --profile moffat --beta 2.5 --seeds 4
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "se"))

from crowded_synth import crowded_field, run_photometry

VARIANTS: dict[str, dict[str, Any]] = {"alone": dict(neighbour_iter=0), "neighbours": dict(neighbour_iter=2),
            "fixedgrow": dict(neighbour_iter=2, wings=False),
            "nocompanions": dict(neighbour_iter=2, psf_kw={"companion_snr": 0.0}),
            "noforward": dict(neighbour_iter=2, psf_kw={"forward_model": False}),
            "meansky": dict(neighbour_iter=2, refine=True),
            "meansky+psf": dict(neighbour_iter=2, refine=True, refit_psf=True),
            "truesky": dict(neighbour_iter=2, true_sky=True),
            "truesky+undetected": dict(neighbour_iter=2, true_sky=True, add_undetected=True)}

#: Field shape, stars and galaxies giving about 1k, 5k and 10k detections per CCD (Moffat
#: beta 2.5, FWHM 4 px, sky 1500 e-): a full CCD at 1k (enough PSF stars), half at 5k, a
#: quarter at 10k (about 2,000-2,500 detections each).
DENSITIES = {1000: ((4096, 2048), 3200, 560), 5000: ((2048, 2048), 8200, 1400),
             10000: ((2048, 1024), 8200, 1400)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="moffat")
    ap.add_argument("--beta", type=float, default=2.5)
    ap.add_argument("--fwhm", type=float, default=4.0)
    ap.add_argument("--densities", default="1000,5000,10000")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    a = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    out: dict = {"profile": a.profile, "beta": a.beta, "fwhm": a.fwhm, "seeds": a.seeds,
                 "loadavg_start": os.getloadavg(), "densities": {}}
    for dens in [int(d) for d in a.densities.split(",")]:
        shape, ns, ng = DENSITIES[dens]
        rows: dict[str, list[dict]] = {v: [] for v in a.variants.split(",")}
        for seed in range(1, a.seeds + 1):
            f = crowded_field(ns, ng, shape=shape, kind=a.profile, beta=a.beta, fwhm=a.fwhm,
                              seed=seed)
            for v in rows:
                r = run_photometry(f, **VARIANTS[v])
                for k in ("delta", "used", "mag", "star_index", "catalog"):
                    r.pop(k)
                rows[v].append(r)
                print(dens, seed, v, json.dumps({k: round(x, 4) for k, x in r.items()}),
                      file=sys.stderr)
            crowded_field.cache_clear()
        res = {}
        for v, rr in rows.items():
            dz = np.array([r["dzp_mmag"] for r in rr])
            res[v] = {"dzp_mmag_mean": float(dz.mean()),
                      "dzp_mmag_sem": float(dz.std(ddof=1) / np.sqrt(len(dz))) if len(dz) > 1 else None,
                      "dzp_mmag_each": [round(float(x), 2) for x in dz],
                      "bright_ratio_mean": float(np.mean([r["bright_ratio"] for r in rr])),
                      "apcor_over_exact_mean": float(np.mean([r["apcor"] / r["apcor_exact"]
                                                              for r in rr])),
                      "psf_peak_ratio_mean": float(np.mean([r["psf_peak_ratio"] for r in rr])),
                      "n_psf_stars_mean": float(np.mean([r["n_psf_stars"] for r in rr])),
                      "sky_bias_e": float(np.mean([r["sky_bias_e"] for r in rr])),
                      "undetected_light_e": float(np.mean([r["undetected_light_e"] for r in rr])),
                      "n_det_per_ccd": float(np.mean([r["n_det_per_ccd"] for r in rr])),
                      "n_zp_mean": float(np.mean([r["n_zp"] for r in rr])),
                      "measure_cpu_ms_per_object_best": float(min(r["measure_cpu_ms_per_object"]
                                                                  for r in rr))}
        out["densities"][dens] = res
    out["loadavg_end"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
