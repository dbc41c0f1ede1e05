"""Diagnosis of bright-star FLUX_PSF / true flux on a simulated night's SE products: the ratio
split into its three factors, each measured against the simulator's truth (issue 13, item 1).

Usage::

    PYTHONPATH=src python bench/bench_psf_flux_terms.py NIGHT_DIR --profile kolmogorov \
        --expnums 642180 654704 [--ccds 28] [--out F]

``NIGHT_DIR`` holds a simulated night (``truth/``) and its processed products (``out/``), e.g.
``/work/sci11f/kolmogorov_dense``. ``--profile`` is the night's PSF profile (``moffat`` or
``kolmogorov``); without it the truth's ``psf_profile`` column is used (truth written before
that column existed reads back ``moffat``, so such a Kolmogorov night needs ``--profile``).
Nothing is written but ``--out``.

The bright stars are those of ``bench/bench_science.py``'s ``flux_psf_ratio`` (isolated within
3 FWHM at 1 %, unflagged, S/N > 100, matched within 1 px). For each, the true star is drawn as
the simulator renders it (galsim profile at the true position, pixel-integrated, on the
simulator's stamp normalised to the star's flux) and cut to the PSF model's stamp, and three
weighted linear flux fits are made over the pixels within 2 FWHM of the true position (the
weights of :mod:`desgw.se.measure`: background variance plus the star's photon noise):

- ``apcor_ratio``: the header's ``PSFAPCOR`` over the exact one (the true profile's total over
  its flux inside the model's stamp, median over the stars);
- ``model_term``: the PSF model (rendered at the true position) fitted to the noiseless true
  star, over the true flux inside the stamp: the model's own core/wing error;
- ``data_term``: the true profile fitted to the image less the background, over the true flux:
  what the data put under the star (sky error, neighbours' and unresolved light);

so that ``flux_psf_ratio ~ apcor_ratio * model_term * data_term`` (up to the centroid and the
neighbour subtraction of the measurement, which this fit does not use). Each term is also given
for the faintest, middle and brightest third of the stars (``*_thirds``), and the mean light
(e-/px) of undetected objects (no detection within 3 px, flux < 5,000 e-) within 15 px of the
bright stars against the CCD's mean (``undetected_light_*``): the isolation cut picks faint
stars where this unresolved light, which the background holds on average, is absent.
``ee_model_minus_true_pct`` locates the model's error: the median over the stars of the
model's encircled energy less the true profile's (both normalised over the model's stamp, %)
within ``ee_radii_fwhm`` FWHM of the star. It is 0 at the stamp's edge by construction; a
model too peaked (wings too faint) is positive inside, one too broad negative, and the light
it lacks or has in excess lies beyond the radius where the difference peaks.

Prints one JSON object with a row per CCD and the load average.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
from benchjson import emit, load_average

RNUM, PNUM = 1, 1
#: Radii (units of the FWHM) of the encircled-energy comparison of the model with the truth.
EE_RADII_FWHM = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)


def _thirds(values: np.ndarray, flux: np.ndarray) -> list[float]:
    order = np.argsort(flux)
    return [round(float(np.median(values[c])), 5) for c in np.array_split(order, 3) if len(c)]


def _true_stamp(m: np.ndarray, beta: float, profile: str, flux: float, dx: float, dy: float,
                n: int) -> np.ndarray:
    """The true star of unit flux (the simulator's rendering) on an (n, n) stamp centred on its
    pixel: its sum is the fraction of the star inside the stamp."""
    from desgw.sim.psf import moffat_radius, pixel_profile

    stamp_beta = 11.0 / 6.0 if profile == "kolmogorov" else beta
    r = int(moffat_radius(np.array([flux]), m[None, :], stamp_beta)[0])
    size = 2 * r + 1
    st = pixel_profile(m, beta, profile).drawImage(nx=size, ny=size, scale=1.0,
                                                   offset=(dx, dy)).array.astype(np.float64)
    st /= st.sum()
    h = n // 2
    if r >= h:
        return st[r - h:r + h + 1, r - h:r + h + 1]
    out = np.zeros((n, n))
    out[h - r:h + r + 1, h - r:h + r + 1] = st
    return out


def measure_ccd(night: Path, truth: Any, e: int, c: int, profile: str) -> dict[str, Any]:
    """The terms of one CCD (module docstring)."""
    from scipy.spatial import cKDTree

    from desgw.diff.pipeline_products import load_ccd_products
    from desgw.io.product_paths import ccd_product_paths, find_exposure_dir
    from desgw.sim.accuracy import isolated
    from desgw.sim.psf import local_psf

    d = find_exposure_dir(night / "out", e, RNUM, PNUM)
    p = ccd_product_paths(d, e, "r", c, RNUM, PNUM)
    prod = load_ccd_products(p.immask, psfmodel=p.psfmodel, fullcat=p.fullcat)
    cat, psf = prod.catalog, prod.psf
    assert cat is not None and psf is not None
    apcor = float(prod.psf_apcor)
    objs = truth.objects_on_ccd(e, c)
    kind = np.asarray(objs["kind"])
    tx, ty = np.asarray(objs["x"], float), np.asarray(objs["y"], float)
    tflux = np.asarray(objs["flux_e"], float)
    fwhm = float(psf.fwhm_at(1023.5, 2047.5))
    cx = np.asarray(cat["XWIN_IMAGE"], float) - 1.0
    cy = np.asarray(cat["YWIN_IMAGE"], float) - 1.0
    dist, idx = cKDTree(np.column_stack([cx, cy])).query(np.column_stack([tx, ty]))
    fpsf = np.asarray(cat["FLUX_PSF"], float)
    snr = fpsf / np.asarray(cat["FLUXERR_PSF"], float)
    flagged = (np.asarray(cat["FLAGS"]) != 0) | (np.asarray(cat["IMAFLAGS_ISO"]) != 0)
    bright = (kind == 0) & (dist < 1.0) & isolated(objs, 3.0 * fwhm, 0.01)
    bright &= ~flagged[idx] & (snr[idx] > 100)
    ib = np.flatnonzero(bright)

    spec = truth.exposure_spec(e)
    lp = local_psf(spec.psf, c, tx[ib], ty[ib], spec.distortion)
    n = psf.stamp_size
    h = n // 2
    ny, nx = prod.image.shape
    yy, xx = np.mgrid[-h:h + 1, -h:h + 1]
    radius = float(np.clip(2.0 * fwhm, 3.0, h))
    ee_radii = np.array(EE_RADII_FWHM) * fwhm
    ee = []
    bkg = np.asarray(cat["BACKGROUND"], float)
    rows = []
    for k, i in enumerate(ib):
        ix, iy = int(np.floor(tx[i] + 0.5)), int(np.floor(ty[i] + 0.5))
        if iy - h < 0 or ix - h < 0 or iy + h + 1 > ny or ix + h + 1 > nx:
            continue
        dx, dy = tx[i] - ix, ty[i] - iy
        flux = tflux[i]
        tp = _true_stamp(lp.m[k], lp.beta, profile, flux, dx, dy, n)
        mp = psf.render(tx[i], ty[i], dx=dx, dy=dy).astype(np.float64)
        data = prod.image[iy - h:iy + h + 1, ix - h:ix + h + 1].astype(np.float64) - bkg[idx[i]]
        w = prod.weight[iy - h:iy + h + 1, ix - h:ix + h + 1].astype(np.float64)
        use = ((xx - dx) ** 2 + (yy - dy) ** 2 <= radius ** 2) & (w > 0)
        wt = use / (1.0 / np.where(w > 0, w, 1.0) + flux * np.maximum(tp, 0.0))

        def fit(model: np.ndarray, target: np.ndarray, wt: np.ndarray = wt) -> float:
            return float(np.sum(wt * model * target) / np.sum(wt * model * model))

        frac = float(tp.sum())
        rr = np.hypot(xx - dx, yy - dy)
        diff = mp / mp.sum() - tp / frac
        ee.append([float(diff[rr <= r].sum()) for r in ee_radii])
        rows.append((flux, fpsf[idx[i]] / flux, frac, fit(mp, flux * tp) / (flux * frac),
                     fit(tp, data) / flux))
    res: dict[str, Any] = {"expnum": e, "ccdnum": c, "fwhm_px": round(fwhm, 3),
                           "stamp": n, "n_bright": len(rows), "psfapcor": round(apcor, 5)}
    if not rows:
        return res
    a = np.array(rows)
    apcor_exact = 1.0 / float(np.median(a[:, 2]))
    res["apcor_exact"] = round(apcor_exact, 5)
    res["flux_psf_ratio"] = round(float(np.median(a[:, 1])), 5)
    res["apcor_ratio"] = round(apcor / apcor_exact, 5)
    res["model_term"] = round(float(np.median(a[:, 3])), 5)
    res["data_term"] = round(float(np.median(a[:, 4])), 5)
    res["product_of_terms"] = round(res["apcor_ratio"] * res["model_term"] * res["data_term"], 5)
    res["flux_thirds_e"] = [round(float(np.median(a[cc, 0]))) for cc in
                            np.array_split(np.argsort(a[:, 0]), 3)]
    for j, name in ((1, "flux_psf_ratio"), (3, "model_term"), (4, "data_term")):
        res[f"{name}_thirds"] = _thirds(a[:, j], a[:, 0])
    res["ee_radii_fwhm"] = list(EE_RADII_FWHM)
    res["ee_model_minus_true_pct"] = [round(100.0 * float(np.median(v)), 3)
                                      for v in np.array(ee).T]

    # unresolved light: undetected faint objects, near the bright stars and on average
    det = np.zeros(len(tx), dtype=bool)
    for js in cKDTree(np.column_stack([tx, ty])).query_ball_point(np.column_stack([cx, cy]), 3.0):
        if js:
            det[js[int(np.argmax(tflux[js]))]] = True
    faint = ~det & (tflux < 5000.0)
    res["undetected_light_mean"] = round(float(tflux[faint].sum()) / float(nx * ny), 3)
    if faint.any():
        near = cKDTree(np.column_stack([tx[faint], ty[faint]])).query_ball_point(
            np.column_stack([tx[ib], ty[ib]]), 15.0)
        local = np.array([tflux[faint][j].sum() for j in near]) / (np.pi * 15.0 ** 2)
        res["undetected_light_bright_thirds"] = [round(float(np.mean(local[cc])), 3) for cc in
                                                 np.array_split(np.argsort(tflux[ib]), 3)]
    return res


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("night", type=Path)
    ap.add_argument("--profile", choices=("moffat", "kolmogorov"), default=None)
    ap.add_argument("--expnums", type=int, nargs="+", required=True)
    ap.add_argument("--ccds", type=int, nargs="+", default=[28])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    from desgw.sim.truth import load_truth

    truth = load_truth(args.night)
    t0 = time.process_time()
    profile = args.profile or truth.exposure_spec(args.expnums[0]).psf.profile
    ccds = [measure_ccd(args.night, truth, e, c, profile)
            for e in args.expnums for c in args.ccds]
    out = {"benchmark": "psf_flux_terms", "night": str(args.night), "profile": profile,
           "ccds": ccds, "cpu_s": round(time.process_time() - t0, 1),
           "load_avg": load_average()}
    emit(out, args.out)
    return out


if __name__ == "__main__":
    main()
