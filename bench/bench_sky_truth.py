"""The SE sky level against the simulator's true sky at bright isolated stars, and what the
photometry does with the true sky instead (issue 13, item 1: per-CCD FLUX_PSF and zeropoint).

Usage::

    nice -n 5 env PYTHONPATH=src python bench/bench_sky_truth.py --root /work/sci11f \\
        --cases kolmogorov_dense:642180:28,moffat2.5_crowded:768792:28 [--oracle] [--out F]

For each CCD (``NIGHT:EXPNUM:CCD`` under ``--root``: a night simulated by bench/bench_science.py
with raw/, calib/, refcat/ and truth/) the raw CCD is processed by
:func:`desgw.workflow.se_ccd.read_and_process` (the ``desgw se`` code path, nothing written)
and measured against the truth:

- ``flux_psf_ratio``: median FLUX_PSF / true flux of bright isolated stars as bench_science
  selects them (isolated within 3 FWHM at 1 %, unflagged, S/N > 100), ``zp_err_mmag`` and its
  ``photometry_mmag`` / ``reference_mmag`` split (bench_science's ``_zp_decomposition``);
  ``flux_psf_ratio_iso15``: the same with the isolation radius 1.5 FWHM (``n_bright_iso15``
  stars), whose surroundings beyond it hold the field's average light;
- ``level_minus_blank``: the sky level the photometry used less the simulator's noiseless
  blank sky (``desgw.sim.render._sky_image``, gradient included), e-/px: the mean over the
  CCD's unmasked pixels (``ccd_mean``) and the median over the bright stars of its mean within
  2 FWHM of each (``at_bright``);
- ``true_light``: the light of the other sources there, from the truth: every true object
  (galaxies as point sources) drawn with the fitted PSF model at its true position and flux
  (over PSFAPCOR: the model holds the light inside its stamp), the bright stars themselves
  left out; ``undetected``: the same for the true objects with no detection within
  max(1.5 px, FWHM / 2), whose light no neighbour subtraction removes. ``ccd_mean`` over the
  unmasked pixels, ``at_bright_median`` / ``at_bright_mean`` over the bright stars (mean
  within 2 FWHM of each). ``level_excess_at_bright``: median over the bright stars of
  level - blank - undetected light: how far the level lies above the sky a bright isolated
  star truly sits on (its detected neighbours' light is modelled and subtracted by the PSF
  fit); ``true_light_rings_fwhm`` / ``undetected_rings_fwhm``: the mean of those images
  around the bright stars in rings 0-1, 1-2, ... 5-6 FWHM (the PSF stamps reach ~3 FWHM
  along the axes, ~4.3 in the corners): how the field's light rises outside the isolation
  radius (3 FWHM) that selects the stars;
- with ``--oracle``, the CCD again with the second background (the one the PSF model and the
  photometry use) replaced by the blank sky (``oracle`` row: ``flux_psf_ratio``, zeropoint,
  ``psfped``, ``psfapcor``): the photometry on a sky that is exact where the bright stars sit
  (``undetected`` ~0 there) but not between them; ``--oracle-no-pedestal`` adds the same
  with ``SEConfig.psf_pedestal`` off (``oracle_no_psf_pedestal`` row): how much light above
  the blank sky the PSF stars' stamps hold that the model's pedestal takes out.

Prints one JSON object (``--out`` writes it) with a row per CCD, the commit and the load.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import contextlib
import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))


@contextlib.contextmanager
def _second_background(level: np.ndarray | None) -> Iterator[None]:
    """Replace the level of process_ccd's second background (the one with objects masked)."""
    import desgw.se.process as proc

    orig = proc.estimate_background
    if level is None:
        yield
        return

    def patched(image: np.ndarray, mask: np.ndarray | None = None, **kw: Any) -> Any:
        bkg = orig(image, mask, **kw)
        if kw.get("objects") is None:
            return bkg
        return dataclasses.replace(bkg, level=level.astype(np.float32),
                                   global_level=float(np.median(level)), skew_shift=0.0)

    proc.estimate_background = patched
    try:
        yield
    finally:
        proc.estimate_background = orig


def _process(d: Path, e: int, c: int, level: np.ndarray | None, psf_pedestal: bool = True
             ) -> tuple[Any, float]:
    from desgw.se.process import SEConfig
    from desgw.workflow.se_ccd import read_and_process
    from desgw.workflow.se_types import CCDTask

    config = SEConfig(psf_pedestal=psf_pedestal)
    lin = d / "calib" / "linearity.fits"
    task = CCDTask(expnum=e, ccdnum=c, band="r", rnum=1, pnum=1,
                   raw_path=str(d / "raw" / f"DECam_{e:08d}.fits.fz"),
                   bias_path=str(d / "calib" / "bias.fits.fz"),
                   flat_path=str(d / "calib" / "flat_r.fits.fz"),
                   bpm_path=str(d / "calib" / "bpm.fits.fz"), refcat_dir=str(d / "refcat"),
                   outdir=str(d / "unused"), config=config,
                   linearity_path=str(lin) if lin.is_file() else None)
    t0 = time.process_time()
    with _second_background(level):
        res, _hdr = read_and_process(task, config, {})
    return res, time.process_time() - t0


def _photometry(res: Any, truth: Any, d: Path, e: int, c: int, zp_true: float
                ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    from scipy.spatial import cKDTree

    from bench_science import _zp_decomposition
    from desgw.sim.accuracy import isolated

    cat = res.catalog
    objs = truth.objects_on_ccd(e, c)
    tx, ty = np.asarray(objs["x"], float), np.asarray(objs["y"], float)
    tflux = np.asarray(objs["flux_e"], float)
    fwhm = float(res.psf.fwhm_at(1023.5, 2047.5))
    dist, idx = cKDTree(np.column_stack([np.asarray(cat["XWIN_IMAGE"], float) - 1.0,
                                         np.asarray(cat["YWIN_IMAGE"], float) - 1.0])).query(
        np.column_stack([tx, ty]))
    fpsf = np.asarray(cat["FLUX_PSF"], float)
    snr = fpsf / np.asarray(cat["FLUXERR_PSF"], float)
    flags = (np.asarray(cat["FLAGS"]) != 0) | (np.asarray(cat["IMAFLAGS_ISO"]) != 0)
    bright = (np.asarray(objs["kind"]) == 0) & (dist < 1.0) & isolated(objs, 3.0 * fwhm, 0.01)
    bright &= ~flags[idx] & (snr[idx] > 100)
    ratio = fpsf[idx[bright]] / tflux[bright]
    # the same stars isolated only within 1.5 FWHM: their surroundings hold the field's light
    near = (np.asarray(objs["kind"]) == 0) & (dist < 1.0) & isolated(objs, 1.5 * fwhm, 0.01)
    near &= ~flags[idx] & (snr[idx] > 100)
    ratio15 = fpsf[idx[near]] / tflux[near]
    dec = _zp_decomposition(truth, d, e, c, SimpleNamespace(image=res.image, wcs=res.wcs,
                                                            catalog=cat), zp_true)
    med = float(np.median(ratio)) if ratio.size else float("nan")
    err = (1.2533 * 1.4826 * float(np.median(np.abs(ratio - med))) / np.sqrt(ratio.size)
           if ratio.size else float("nan"))
    row = {"fwhm_px": round(fwhm, 2), "n_bright": int(bright.sum()),
           "flux_psf_ratio": round(med, 5), "flux_psf_ratio_err": round(err, 5),
           "n_bright_iso15": int(near.sum()),
           "flux_psf_ratio_iso15": (round(float(np.median(ratio15)), 5) if ratio15.size
                                    else None),
           "zp_err_mmag": (round(1e3 * (res.zeropoint.zp - zp_true), 2)
                           if res.zeropoint is not None else None),
           "photometry_mmag": dec["photometry_mmag"], "reference_mmag": dec["reference_mmag"],
           "psfped": round(float(res.psf.sky_pedestal), 3),
           "psfapcor": round(float(res.header["PSFAPCOR"]), 5)}
    arrays = {"x": tx, "y": ty, "flux": tflux, "bright": bright,
              "undetected": dist > max(1.5, 0.5 * fwhm)}
    return row, arrays


def _at_stars(img: np.ndarray, x: np.ndarray, y: np.ndarray, radius: float) -> np.ndarray:
    """Mean of ``img`` within ``radius`` of each (x, y) (stars too close to an edge left out)."""
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    disk = np.hypot(xx, yy) <= radius
    ny, nx = img.shape
    out = []
    for xi, yi in zip(np.round(x).astype(int), np.round(y).astype(int)):
        if r <= xi < nx - r and r <= yi < ny - r:
            out.append(float(np.mean(img[yi - r:yi + r + 1, xi - r:xi + r + 1][disk])))
    return np.asarray(out)


def _radial(img: np.ndarray, x: np.ndarray, y: np.ndarray, fwhm: float, n_rings: int = 6
            ) -> list[float]:
    """Mean of ``img`` around the (x, y) in rings 1 FWHM wide (0-1, 1-2, ... FWHM)."""
    r = int(np.ceil(n_rings * fwhm))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    ring = np.floor(np.hypot(xx, yy) / fwhm).astype(int).ravel()
    ny, nx = img.shape
    sums, cnt = np.zeros(n_rings), np.zeros(n_rings)
    for xi, yi in zip(np.round(x).astype(int), np.round(y).astype(int)):
        if r <= xi < nx - r and r <= yi < ny - r:
            v = img[yi - r:yi + r + 1, xi - r:xi + r + 1].ravel()
            k = ring < n_rings
            sums += np.bincount(ring[k], weights=v[k], minlength=n_rings)
            cnt += np.bincount(ring[k], minlength=n_rings)
    return [round(float(v), 3) for v in sums / np.maximum(cnt, 1)]


def measure(root: Path, night: str, e: int, c: int, oracle: bool,
            oracle_no_pedestal: bool = False) -> dict[str, Any]:
    """Sky level vs truth at the bright stars of one CCD (and the photometry on the true sky)."""
    from desgw.se.measure import psf_model_image
    from desgw.sim.render import _sky_image, ccd_zeropoint
    from desgw.sim.truth import load_truth

    d = root / night
    truth = load_truth(d)
    spec = truth.exposure_spec(e)
    trow = truth.ccd_row(e, c)
    zp_true = float(trow["zeropoint"]) + 2.5 * np.log10(float(spec.exptime))
    blank, _centre = _sky_image(spec, c, ccd_zeropoint(spec, float(trow["qe"])), True)
    res, cpu = _process(d, e, c, None)
    row, a = _photometry(res, truth, d, e, c, zp_true)
    apcor = float(res.header["PSFAPCOR"])
    shape = res.image.shape
    good = res.mask == 0
    b, u = a["bright"], a["undetected"]
    light = (psf_model_image(shape, a["x"][~b], a["y"][~b], a["flux"][~b] / apcor, res.psf))
    und = psf_model_image(shape, a["x"][u & ~b], a["y"][u & ~b], a["flux"][u & ~b] / apcor,
                          res.psf)
    excess = res.background.level - blank
    rad = 2.0 * row["fwhm_px"]
    ex_b = _at_stars(excess, a["x"][b], a["y"][b], rad)
    li_b = _at_stars(light, a["x"][b], a["y"][b], rad)
    un_b = _at_stars(und, a["x"][b], a["y"][b], rad)
    out: dict[str, Any] = {
        "night": night, "expnum": e, "ccdnum": c, "n_objects_true": int(a["x"].size),
        "n_undetected_true": int(u.sum()), **row, "cpu_s": round(cpu, 2),
        "level_minus_blank": {"ccd_mean": round(float(np.mean(excess[good])), 3),
                              "at_bright": round(float(np.median(ex_b)), 3)},
        "true_light": {"ccd_mean": round(float(np.mean(light[good])), 3),
                       "at_bright_median": round(float(np.median(li_b)), 3),
                       "at_bright_mean": round(float(np.mean(li_b)), 3)},
        "undetected": {"ccd_mean": round(float(np.mean(und[good])), 3),
                       "at_bright_median": round(float(np.median(un_b)), 3),
                       "at_bright_mean": round(float(np.mean(un_b)), 3)},
        "level_excess_at_bright": round(float(np.median(ex_b - un_b)), 3),
        "true_light_rings_fwhm": _radial(light, a["x"][b], a["y"][b], row["fwhm_px"]),
        "undetected_rings_fwhm": _radial(und, a["x"][b], a["y"][b], row["fwhm_px"])}
    if oracle:
        res_o, cpu_o = _process(d, e, c, blank)
        row_o, _ = _photometry(res_o, truth, d, e, c, zp_true)
        out["oracle"] = {**row_o, "cpu_s": round(cpu_o, 2)}
    if oracle_no_pedestal:
        res_p, cpu_p = _process(d, e, c, blank, psf_pedestal=False)
        row_p, _ = _photometry(res_p, truth, d, e, c, zp_true)
        out["oracle_no_psf_pedestal"] = {**row_p, "cpu_s": round(cpu_p, 2)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--cases", required=True, help="NIGHT:EXPNUM:CCD,...")
    ap.add_argument("--oracle", action="store_true",
                    help="also process each CCD with the blank sky as the second background")
    ap.add_argument("--oracle-no-pedestal", action="store_true",
                    help="also with the blank sky and SEConfig.psf_pedestal off")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    commit = subprocess.run(["git", "-C", str(BENCH.parent), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    out: dict[str, Any] = {"benchmark": "sky_truth", "commit": commit,
                           "loadavg_start": os.getloadavg(), "rows": []}
    for case in a.cases.split(","):
        night, e, c = case.split(":")
        r = measure(a.root, night, int(e), int(c), a.oracle, a.oracle_no_pedestal)
        print(json.dumps(r), file=sys.stderr, flush=True)
        out["rows"].append(r)
    out["loadavg_end"] = os.getloadavg()
    text = json.dumps(out, indent=1)
    if a.out is not None:
        a.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
