"""One simulated CCD's single-epoch processing with settings varied one at a time: bright-star
FLUX_PSF / true flux, zeropoint error, aperture correction and PSF pedestal of each variant
(issue 13, item 1: tracing a CCD's PSF-flux bias to its cause).

Usage::

    PYTHONPATH=src python bench/bench_psf_ablation.py NIGHT_DIR EXPNUM [--ccd 28] \
        [--variant base] [--variant "psf.companion_snr=0"] [--variant "psf_stamp_fwhm=8"] ...

``NIGHT_DIR`` is a simulated night (``raw/``, ``calib/``, ``refcat/`` with the Gaia catalogue
ingested, ``truth/``), e.g. ``/work/sci11f/kolmogorov_dense``; it is only read. The CCD's
inputs are read once and :func:`desgw.se.process.process_ccd` runs once per variant, in this
process. A variant is ``base`` (the defaults) or comma-separated ``field=value`` settings:
``psf.FIELD`` of :class:`desgw.se.psf.PSFConfig`, ``measure.FIELD`` of
:class:`desgw.se.measure.MeasureConfig`, ``PEDESTAL_SIGMA`` (:data:`desgw.se.psf.PEDESTAL_SIGMA`)
or a field of :class:`desgw.se.process.SEConfig`.

The bright stars are ``bench/bench_science.py``'s (isolated within 3 FWHM at 1 %, unflagged,
S/N > 100, matched within 1 px); ``flux_psf_ratio_thirds`` are the medians of the faintest,
middle and brightest third of them. Prints one JSON object with a row per variant (and the CPU
seconds of each ``process_ccd``, under the load given).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import ast
import copy
import dataclasses
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from benchjson import emit, load_average


def _config(variant: str) -> tuple[Any, float]:
    """The SEConfig of a variant and its PEDESTAL_SIGMA."""
    import desgw.se.psf as psfmod
    from desgw.se.process import SEConfig

    cfg = SEConfig()
    ped_sigma = psfmod.PEDESTAL_SIGMA
    if variant == "base":
        return cfg, ped_sigma
    for item in variant.split(","):
        key, _, text = item.partition("=")
        key = key.strip()
        value = ast.literal_eval(text.strip())
        if key == "PEDESTAL_SIGMA":
            ped_sigma = float(value)
        elif key.startswith("psf."):
            cfg = dataclasses.replace(cfg, psf=dataclasses.replace(cfg.psf, **{key[4:]: value}))
        elif key.startswith("measure."):
            cfg = dataclasses.replace(cfg, measure=dataclasses.replace(cfg.measure,
                                                                       **{key[8:]: value}))
        else:
            cfg = dataclasses.replace(cfg, **{key: value})
    return cfg, ped_sigma


def _bright_ratio(cat: Any, objs: Any, fwhm: float) -> tuple[np.ndarray, np.ndarray]:
    from scipy.spatial import cKDTree

    from desgw.sim.accuracy import isolated

    tx, ty = np.asarray(objs["x"], float), np.asarray(objs["y"], float)
    tflux = np.asarray(objs["flux_e"], float)
    cx = np.asarray(cat["XWIN_IMAGE"], float) - 1.0
    cy = np.asarray(cat["YWIN_IMAGE"], float) - 1.0
    dist, idx = cKDTree(np.column_stack([cx, cy])).query(np.column_stack([tx, ty]))
    fpsf = np.asarray(cat["FLUX_PSF"], float)
    snr = fpsf / np.asarray(cat["FLUXERR_PSF"], float)
    flagged = (np.asarray(cat["FLAGS"]) != 0) | (np.asarray(cat["IMAFLAGS_ISO"]) != 0)
    b = (np.asarray(objs["kind"]) == 0) & (dist < 1.0) & isolated(objs, 3.0 * fwhm, 0.01)
    b &= ~flagged[idx] & (snr[idx] > 100)
    return fpsf[idx[b]] / tflux[b], tflux[b]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("night", type=Path)
    ap.add_argument("expnum", type=int)
    ap.add_argument("--ccd", type=int, default=28)
    ap.add_argument("--variant", action="append", default=None)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    variants = args.variant or ["base"]

    import desgw.se.psf as psfmod
    from desgw.io.settings import load_settings
    from desgw.se.process import process_ccd
    from desgw.sim.truth import load_truth
    from desgw.workflow.se_ccd import _read_inputs
    from desgw.workflow.se_types import CCDTask

    root = args.night
    raw = next((root / "raw").glob(f"DECam_*{args.expnum}.fits*"))
    scratch = Path(tempfile.mkdtemp(prefix="bench_psf_ablation_"))
    settings = load_settings(raw_dir=root / "raw", calib_dir=root / "calib",
                             refcat_dir=root / "refcat", out_root=scratch, environ={}, cwd=scratch)
    calib = settings.calib_paths("r")
    lin = getattr(calib, "linearity", None)
    task = CCDTask(expnum=args.expnum, ccdnum=args.ccd, band="r", rnum=1, pnum=1,
                   raw_path=str(raw), bias_path=str(calib.bias), flat_path=str(calib.flat),
                   bpm_path=None if calib.bpm is None else str(calib.bpm),
                   linearity_path=None if lin is None else str(lin),
                   refcat_dir=str(settings.refcat_dir), outdir=str(scratch), overwrite=True)
    inputs = _read_inputs(task, {}, 30.0)
    truth = load_truth(root)
    objs = truth.objects_on_ccd(args.expnum, args.ccd)
    exptime = float(truth.exposure_spec(args.expnum).exptime)
    zp_true = float(truth.ccd_row(args.expnum, args.ccd)["zeropoint"]) + 2.5 * np.log10(exptime)
    default_sigma = psfmod.PEDESTAL_SIGMA
    rows = []
    try:
        for variant in variants:
            cfg, ped_sigma = _config(variant)
            psfmod.PEDESTAL_SIGMA = ped_sigma
            t0 = time.process_time()
            res = process_ccd(copy.deepcopy(inputs), config=cfg)
            cpu = time.process_time() - t0
            fwhm = float(res.psf.fwhm_at(1023.5, 2047.5))
            ratio, flux = _bright_ratio(res.catalog, objs, fwhm)
            thirds = [round(float(np.median(ratio[c])), 5)
                      for c in np.array_split(np.argsort(flux), 3) if len(c)]
            mad = 1.4826 * float(np.median(np.abs(ratio - np.median(ratio))))
            zp = res.zeropoint.zp if res.zeropoint is not None else float("nan")
            rows.append({"variant": variant, "n_bright": int(len(ratio)),
                         "flux_psf_ratio": round(float(np.median(ratio)), 5),
                         "flux_psf_ratio_err": round(1.2533 * mad / np.sqrt(max(len(ratio), 1)), 5),
                         "flux_psf_ratio_thirds": thirds,
                         "zp_se_err_mmag": round(1000.0 * (zp - zp_true), 2),
                         "psfapcor": round(float(res.header["PSFAPCOR"]), 5),
                         "psfped": float(res.header["PSFPED"]),
                         "psfstamp": int(res.header["PSFSTAMP"]), "fwhm_px": round(fwhm, 3),
                         "cpu_s": round(cpu, 2)})
    finally:
        psfmod.PEDESTAL_SIGMA = default_sigma
        shutil.rmtree(scratch, ignore_errors=True)
    out = {"benchmark": "psf_ablation", "night": str(root), "expnum": args.expnum,
           "ccdnum": args.ccd, "rows": rows, "load_avg": load_average()}
    emit(out, args.out)
    return out


if __name__ == "__main__":
    main()
