"""The sky under crowded fields on the science audit's simulated nights: FLUX_PSF / true and the
zeropoint's photometry term per CCD, for variants of the second background's object masks.

For each CCD (``--cases NIGHT:EXPNUM:CCD,...`` under ``--root``, the nights that
bench/bench_science.py simulated, with their raw/, calib/, refcat/ and truth/), the raw CCD is
read and processed by :func:`desgw.workflow.se_ccd.read_and_process` (the ``desgw se`` code
path, nothing written) once per ``--wing-fractions`` value
(:attr:`desgw.se.background.BackgroundConfig.wing_fraction`; 0: the segments grown by 4 px
only, the masks before the wing masks), and measured against the truth as bench_science does:

- ``flux_psf_ratio``: median FLUX_PSF / true flux of isolated (3 FWHM, 1 %), unflagged stars
  with S/N > 100 (``n_bright`` of them);
- ``zp_err_mmag``, ``photometry_mmag``, ``reference_mmag``: the SE zeropoint's error and its
  split (bench_science's ``_zp_decomposition``);
- ``avsky`` (AVSKY, e-/px) against the blank-sky truth ``blank_sky``;
- ``blank_box_pedestal``: the mean (e-/px, with its error) of image less background over
  unmasked 25 x 25 px boxes at random positions farther than 30 px from every detection: the
  additive level a PSF fit sees that the background left (the light of undetected sources plus
  the estimator's bias: a mesh mode sits ~0.39 e-/px below the mean of Poisson sky, which
  :attr:`desgw.se.background.BackgroundConfig.skew_correction` adds back);
  ``pedestal_over_flux`` is that level times the PSF stamp area over the true flux, median
  over the bright stars: the FLUX_PSF excess it predicts;
- ``cpu_s``: CPU seconds of the CCD (loaded machine: compare within one run only).

Prints JSON (with ``os.getloadavg()`` and the commit)::

    nice -n 5 env PYTHONPATH=src python bench/bench_se_sky.py --root /work/sci7 \\
        --cases kolmogorov_dense:642180:28,moffat2.5_crowded:768792:28 --wing-fractions 0,0.1

``--mean-sky 0,1`` repeats each case with ``SEConfig.mean_sky`` off and on; ``--skew 0,1`` with
``BackgroundConfig.skew_correction`` off and on (the level as sep's mode, or raised to the mean
of the Poisson sky; default 1, the pipeline's setting); ``--psf-pedestal 0,1`` with
``SEConfig.psf_pedestal`` off and on (``psfped``: the level under the PSF stars the PSF fit
took out of its model, e-/px).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))


def measure(root: Path, night: str, e: int, c: int, wing_fraction: float,
            mean_sky: bool = False, skew: bool = True, psf_pedestal: bool = True
            ) -> dict[str, Any]:
    """Process one CCD with the given wing fraction and sky estimator; measure it against the truth."""
    from scipy.spatial import cKDTree

    from bench_science import _zp_decomposition
    from desgw.se.background import BackgroundConfig
    from desgw.se.process import SEConfig
    from desgw.sim.accuracy import isolated
    from desgw.sim.truth import load_truth
    from desgw.workflow.se_ccd import read_and_process
    from desgw.workflow.se_types import CCDTask

    d = root / night
    config = SEConfig(background=BackgroundConfig(wing_fraction=wing_fraction,
                                                  skew_correction=skew), mean_sky=mean_sky,
                      psf_pedestal=psf_pedestal)
    lin = d / "calib" / "linearity.fits"
    task = CCDTask(expnum=e, ccdnum=c, band="r", rnum=1, pnum=1,
                   raw_path=str(d / "raw" / f"DECam_{e:08d}.fits.fz"),
                   bias_path=str(d / "calib" / "bias.fits.fz"),
                   flat_path=str(d / "calib" / "flat_r.fits.fz"),
                   bpm_path=str(d / "calib" / "bpm.fits.fz"), refcat_dir=str(d / "refcat"),
                   outdir=str(d / "unused"), config=config,
                   linearity_path=str(lin) if lin.is_file() else None)
    t0 = time.process_time()
    res, _hdr = read_and_process(task, config, {})
    cpu = time.process_time() - t0
    truth = load_truth(d)
    row = truth.ccd_row(e, c)
    zp_true = float(row["zeropoint"]) + 2.5 * np.log10(float(truth.exposure_spec(e).exptime))
    objs = truth.objects_on_ccd(e, c)
    tx, ty = np.asarray(objs["x"], float), np.asarray(objs["y"], float)
    tflux = np.asarray(objs["flux_e"], float)
    cat = res.catalog
    dec = _zp_decomposition(truth, d, e, c, SimpleNamespace(image=res.image, wcs=res.wcs,
                                                            catalog=cat), zp_true)
    fwhm_px = float(res.psf.fwhm_at(1023.5, 2047.5))
    dist, idx = cKDTree(np.column_stack([np.asarray(cat["XWIN_IMAGE"], float) - 1.0,
                                         np.asarray(cat["YWIN_IMAGE"], float) - 1.0])).query(
        np.column_stack([tx, ty]))
    fpsf = np.asarray(cat["FLUX_PSF"], float)
    snr = fpsf / np.asarray(cat["FLUXERR_PSF"], float)
    flags = (np.asarray(cat["FLAGS"]) != 0) | (np.asarray(cat["IMAFLAGS_ISO"]) != 0)
    bright = (np.asarray(objs["kind"]) == 0) & (dist < 1.0) & isolated(objs, 3.0 * fwhm_px, 0.01)
    bright &= ~flags[idx] & (snr[idx] > 100)
    ratio = fpsf[idx[bright]] / tflux[bright]
    ped, ped_err = _blank_box_pedestal(res, np.column_stack([np.asarray(cat["XWIN_IMAGE"], float),
                                                            np.asarray(cat["YWIN_IMAGE"], float)]) - 1.0)
    area = float(res.psf.coeffs.shape[1] * res.psf.coeffs.shape[2])
    return {"night": night, "expnum": e, "ccdnum": c, "wing_fraction": wing_fraction,
            "mean_sky": mean_sky, "skew_correction": skew, "psf_pedestal": psf_pedestal,
            "psfped": round(float(res.psf.sky_pedestal), 3),
            "skew_shift": round(float(res.background.skew_shift), 3),
            "fwhm_arcsec_true": round(float(row["fwhm_arcsec"]), 3),
            "n_objects_true": int(row["n_objects"]), "fwhm_px": round(fwhm_px, 2),
            "flux_psf_ratio": round(float(np.median(ratio)), 5) if bright.any() else None,
            "n_bright": int(bright.sum()),
            "zp_err_mmag": (round(1e3 * (res.zeropoint.zp - zp_true), 2)
                            if res.zeropoint is not None else None),
            "photometry_mmag": dec["photometry_mmag"], "reference_mmag": dec["reference_mmag"],
            "avsky": round(float(res.background.global_level), 2),
            "blank_sky": round(float(row["sky_e_per_pix"]), 2),
            "blank_box_pedestal": [round(ped, 3), round(ped_err, 3)],
            "pedestal_over_flux": (round(float(np.median(area * ped / tflux[bright])), 5)
                                   if bright.any() else None),
            "psfapcor": round(float(res.header["PSFAPCOR"]), 5), "n_catalog": len(cat),
            "cpu_s": round(cpu, 2)}


def _blank_box_pedestal(res: Any, xy: np.ndarray, *, n: int = 3000, half: int = 12,
                        clearance: float = 30.0, seed: int = 1) -> tuple[float, float]:
    """Mean of image less background (e-/px) and its error over blank, unmasked boxes."""
    from scipy.spatial import cKDTree

    ny, nx = res.image.shape
    rng = np.random.default_rng(seed)
    px = rng.integers(2 * half, nx - 2 * half, n)
    py = rng.integers(2 * half, ny - 2 * half, n)
    dist, _ = cKDTree(xy).query(np.column_stack([px, py]))
    vals = []
    for ix, iy in zip(px[dist > clearance], py[dist > clearance]):
        sl = (slice(iy - half, iy + half + 1), slice(ix - half, ix + half + 1))
        if not res.mask[sl].any():
            vals.append(float(np.mean(res.image[sl] - res.background.level[sl])))
    v = np.asarray(vals)
    v = v[np.abs(v - np.median(v)) < 5.0 * np.std(v)]
    return float(np.mean(v)), float(np.std(v) / np.sqrt(len(v)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--cases", required=True, help="NIGHT:EXPNUM:CCD,...")
    ap.add_argument("--wing-fractions", default="0,0.1")
    ap.add_argument("--mean-sky", default="0", help="0, 1 or 0,1 (SEConfig.mean_sky)")
    ap.add_argument("--skew", default="1", help="0, 1 or 0,1 (BackgroundConfig.skew_correction)")
    ap.add_argument("--psf-pedestal", default="1", help="0, 1 or 0,1 (SEConfig.psf_pedestal)")
    a = ap.parse_args()
    commit = subprocess.run(["git", "-C", str(BENCH.parent), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    out: dict[str, Any] = {"commit": commit, "loadavg_start": os.getloadavg(), "rows": []}
    for case in a.cases.split(","):
        night, e, c = case.split(":")
        for wf in (float(v) for v in a.wing_fractions.split(",")):
            for ms in (bool(int(v)) for v in a.mean_sky.split(",")):
                for sk in (bool(int(v)) for v in a.skew.split(",")):
                    for pp in (bool(int(v)) for v in a.psf_pedestal.split(",")):
                        r = measure(a.root, night, int(e), int(c), wf, ms, sk, pp)
                        print(json.dumps(r), file=sys.stderr, flush=True)
                        out["rows"].append(r)
    out["loadavg_end"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
