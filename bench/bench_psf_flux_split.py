"""Bright-star FLUX_PSF / true flux per CCD split by where the sky enters, and the noise the
PSF model itself adds to the per-CCD figure (issue 13, item 1).

Usage::

    nice -n 5 env PYTHONPATH=src python bench/bench_psf_flux_split.py --root /work/sci11f \\
        --cases kolmogorov_dense:642180:28,moffat2.5_crowded:768792:28 [--groups 8] [--out F]

For each CCD (``NIGHT:EXPNUM:CCD`` under ``--root``, a night of bench/bench_science.py with
raw/, calib/, refcat/ and truth/) the raw CCD is processed twice by
:func:`desgw.workflow.se_ccd.read_and_process` (nothing written): as ``desgw se`` does, and
with process_ccd's second background replaced by the simulator's noiseless blank sky (the
``--oracle`` run of bench/bench_sky_truth.py). The bright isolated stars are selected once,
from the first run, as bench/bench_science.py selects them (isolated within 3 FWHM at 1 %,
unflagged, S/N > 100, matched within 1 px), and every figure below is the median of
FLUX_PSF x PSFAPCOR / true over that same set of stars (paired comparisons):

- ``split``: :func:`desgw.se.measure.measure_sources` rerun with the PSF model (and its
  aperture correction, :func:`desgw.se.process_steps.psf_aperture_correction`) of either run
  and the sky of either run: ``psfSE_photSE`` (the pipeline), ``psfSE_photBlank`` (only the
  photometry's sky exact), ``psfOR_photSE`` (only the PSF model built on the exact sky),
  ``psfOR_photBlank`` (both; bench_sky_truth's ``oracle`` row, up to the star set);
  ``sky_in_photometry`` and ``sky_in_psf_model`` are the two single-factor shifts from the
  pipeline's figure, and ``interaction`` what the sum of the two misses of the ``both`` shift;
- ``psf_noise``: the scatter the PSF model's own noise puts on the per-CCD figure, which
  ``flux_psf_ratio_err`` (the scatter of the stars about their median, over sqrt(n)) does not
  hold because one model serves every star of the CCD: the PSF candidates are dealt into
  ``--groups`` groups at random, the model and its aperture correction refitted without each
  group in turn (:func:`desgw.se.process.fit_ccd_psf`, the pipeline's settings and sky), the
  bright stars re-measured with each model, and the grouped-jackknife standard error
  ``sqrt((G - 1) / G * sum (r_g - mean r)**2)`` reported (``psf_noise_sigma``), with the
  per-group figures, the models' star counts and any degraded-fit flags;
  ``psf_noise_sigma_robust`` the same with the groups' spread as 1.4826 MAD (a group whose
  removal flips a discrete choice of the fit, e.g. the aperture correction's Kolmogorov or
  Moffat wing, sets the plain one), ``apcor_range`` the groups' aperture corrections;
  ``total_err = sqrt(flux_psf_ratio_err**2 + psf_noise_sigma_robust**2)`` and
  ``pull = (ratio - 1) / total_err``;
- ``cross_validation``: the bright stars that are PSF candidates themselves measured with the
  model fitted without their group (``ratio_candidates_without_them``) against with the full
  model (``ratio_candidates_own_model``), the others (``ratio_non_candidates``, full model),
  and the median over all bright stars each measured by a model it did not enter
  (``ratio_cross_validated``): whether a model fitted to few stars flatters the stars it was
  fitted to.

Prints one JSON object (``--out`` writes it) with a row per CCD, the commit and the load.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from bench_sky_truth import _process
from benchjson import run_cases


@contextlib.contextmanager
def _recording(module: Any, name: str, calls: list[tuple[tuple[Any, ...], dict[str, Any]]]
               ) -> Iterator[Callable[..., Any]]:
    """Record the arguments of every call of ``module.name`` (yields the original)."""
    orig = getattr(module, name)

    def rec(*args: Any, **kw: Any) -> Any:
        calls.append((args, kw))
        return orig(*args, **kw)

    setattr(module, name, rec)
    try:
        yield orig
    finally:
        setattr(module, name, orig)


def _ratios(cat: Any, apcor: float, xy: np.ndarray, flux: np.ndarray) -> np.ndarray:
    """FLUX_PSF x apcor / true of the catalog rows nearest ``xy`` (NaN beyond 1 px)."""
    from scipy.spatial import cKDTree

    cxy = np.column_stack([np.asarray(cat["XWIN_IMAGE"], float) - 1.0,
                           np.asarray(cat["YWIN_IMAGE"], float) - 1.0])
    dist, idx = cKDTree(cxy).query(xy)
    r = np.asarray(cat["FLUX_PSF"], float)[idx] * apcor / flux
    return np.where(dist < 1.0, r, np.nan)


def _median(r: np.ndarray) -> tuple[float, float, int]:
    r = r[np.isfinite(r)]
    m = float(np.median(r))
    err = 1.2533 * 1.4826 * float(np.median(np.abs(r - m))) / np.sqrt(r.size)
    return m, err, int(r.size)


def jackknife_noise(ratios: list[float], apcors: list[float]) -> dict[str, float]:
    """Grouped-jackknife standard error of the per-CCD figure from its leave-one-group-out
    values: ``sqrt((G - 1) / G * sum (r_g - mean)**2)`` (``psf_noise_sigma``) and the same
    with the groups' spread taken as 1.4826 MAD (``psf_noise_sigma_robust``: one group whose
    removal flips a discrete choice of the fit, such as the aperture correction's wing form,
    does not set it); ``apcor_range``: the smallest and largest aperture correction."""
    rg = np.asarray(ratios, dtype=float)
    g = rg.size
    sigma = float(np.sqrt((g - 1) / g * np.sum((rg - rg.mean()) ** 2)))
    mad = 1.4826 * float(np.median(np.abs(rg - np.median(rg))))
    robust = (g - 1) / np.sqrt(g) * mad
    return {"psf_noise_sigma": round(sigma, 5), "psf_noise_sigma_robust": round(robust, 5),
            "apcor_range": [round(min(apcors), 5), round(max(apcors), 5)]}


def measure(root: Path, night: str, e: int, c: int, groups: int) -> dict[str, Any]:
    """The split and the PSF-model noise of one CCD."""
    from scipy.spatial import cKDTree

    import desgw.se.process as proc
    from desgw.se.process_steps import psf_aperture_correction
    from desgw.sim.accuracy import isolated
    from desgw.sim.render import _sky_image, ccd_zeropoint
    from desgw.sim.truth import load_truth

    d = root / night
    truth = load_truth(d)
    spec = truth.exposure_spec(e)
    trow = truth.ccd_row(e, c)
    blank, _centre = _sky_image(spec, c, ccd_zeropoint(spec, float(trow["qe"])), True)
    runs: dict[str, tuple[Any, ...]] = {}
    psf_call: tuple[tuple[Any, ...], dict[str, Any]] = ((), {})
    cpu: dict[str, float] = {}
    for name, level in (("se", None), ("oracle", blank)):
        m_calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        p_calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        with _recording(proc, "measure_sources", m_calls) as measure_sources, \
                _recording(proc, "fit_ccd_psf", p_calls) as fit_ccd_psf:
            res, cpu[name] = _process(d, e, c, level)
        args, kw = m_calls[-1]
        runs[name] = (res, *args[:6], kw["config"])
        if name == "se":
            psf_call = p_calls[-1]
    res, image, weight, mask, bkg_se, det_se, psf_se, mcfg = runs["se"]
    _res_o, _i, _w, _m, _bkg_or, det_or, psf_or, _c = runs["oracle"]
    ny, nx = image.shape
    margin = min(100.0, 0.25 * min(ny, nx))
    ap_se = psf_aperture_correction(psf_se, margin=margin)
    ap_or = psf_aperture_correction(psf_or, margin=margin)

    objs = truth.objects_on_ccd(e, c)
    tx, ty = np.asarray(objs["x"], float), np.asarray(objs["y"], float)
    tflux = np.asarray(objs["flux_e"], float)
    fwhm = float(psf_se.fwhm_at(1023.5, 2047.5))
    cat = res.catalog
    dist, idx = cKDTree(np.column_stack([np.asarray(cat["XWIN_IMAGE"], float) - 1.0,
                                         np.asarray(cat["YWIN_IMAGE"], float) - 1.0])).query(
        np.column_stack([tx, ty]))
    fpsf = np.asarray(cat["FLUX_PSF"], float)
    snr = fpsf / np.asarray(cat["FLUXERR_PSF"], float)
    flags = (np.asarray(cat["FLAGS"]) != 0) | (np.asarray(cat["IMAFLAGS_ISO"]) != 0)
    bright = (np.asarray(objs["kind"]) == 0) & (dist < 1.0) & isolated(objs, 3.0 * fwhm, 0.01)
    bright &= ~flags[idx] & (snr[idx] > 100)
    xy = np.column_stack([tx[bright], ty[bright]])
    fb = tflux[bright]

    def ratio_with(level: Any, det: Any, psf: Any, apcor: float) -> np.ndarray:
        cc = measure_sources(image, weight, mask, level, det, psf, None, exptime=None,
                             config=mcfg)
        return _ratios(cc, apcor, xy, fb)

    split: dict[str, Any] = {}
    for name, level, det, psf, apcor in (("psfSE_photSE", bkg_se, det_se, psf_se, ap_se),
                                         ("psfSE_photBlank", blank, det_se, psf_se, ap_se),
                                         ("psfOR_photSE", bkg_se, det_or, psf_or, ap_or),
                                         ("psfOR_photBlank", blank, det_or, psf_or, ap_or)):
        m, err, n = _median(ratio_with(level, det, psf, apcor))
        split[name] = [round(m, 5), round(err, 5), n]
    base = split["psfSE_photSE"][0]
    d_phot = split["psfSE_photBlank"][0] - base
    d_psf = split["psfOR_photSE"][0] - base
    d_both = split["psfOR_photBlank"][0] - base
    split["sky_in_photometry"] = round(d_phot, 5)
    split["sky_in_psf_model"] = round(d_psf, 5)
    split["interaction"] = round(d_both - d_phot - d_psf, 5)

    # PSF-model noise: grouped jackknife over the PSF candidates
    pargs, pkw = psf_call
    sub, pw, pm, px, py, psf_cfg, config, seeing = pargs[:8]
    rng = np.random.default_rng(1000 * e + c)
    label = rng.permutation(len(px)) % groups
    # the group of each bright star that is a PSF candidate (-1: not a candidate)
    cd, ci = cKDTree(np.column_stack([px, py])).query(xy)
    star_group = np.where(cd < 1.0, label[ci], -1)
    r_full = ratio_with(bkg_se, det_se, psf_se, ap_se)
    r_cv = np.where(star_group < 0, r_full, np.nan)
    per_group = []
    for g in range(groups):
        keep = label != g
        gflags: dict[str, str] = {}
        psf_g = fit_ccd_psf(sub, pw, pm, px[keep], py[keep], psf_cfg, config, seeing, gflags,
                            **pkw)
        ap_g = psf_aperture_correction(psf_g, margin=margin)
        r_g = ratio_with(bkg_se, det_se, psf_g, ap_g)
        r_cv[star_group == g] = r_g[star_group == g]
        m, _err, _n = _median(r_g)
        per_group.append({"ratio": round(m, 5), "apcor": round(ap_g, 5),
                          "n_stars": psf_g.n_stars, "flags": sorted(gflags)})
    noise = jackknife_noise([p["ratio"] for p in per_group],
                            [p["apcor"] for p in per_group])
    err0 = split["psfSE_photSE"][1]
    in_model = star_group >= 0
    m_cv, e_cv, _n = _median(r_cv)
    cross = {"n_bright_psf_candidates": int(in_model.sum()),
             "ratio_cross_validated": [round(m_cv, 5), round(e_cv, 5)],
             "ratio_candidates_own_model": (round(float(np.nanmedian(r_full[in_model])), 5)
                                            if in_model.any() else None),
             "ratio_candidates_without_them": (round(float(np.nanmedian(r_cv[in_model])), 5)
                                               if in_model.any() else None),
             "ratio_non_candidates": (round(float(np.nanmedian(r_full[~in_model])), 5)
                                      if (~in_model).any() else None)}
    total = float(np.hypot(err0, noise["psf_noise_sigma_robust"]))
    return {"night": night, "expnum": e, "ccdnum": c, "fwhm_px": round(fwhm, 2),
            "n_bright": int(bright.sum()), "psf_n_stars": psf_se.n_stars,
            "psf_n_candidates": int(len(px)), "psfapcor": {"se": round(ap_se, 5),
                                                          "oracle": round(ap_or, 5)},
            "psfped": {"se": round(float(psf_se.sky_pedestal), 3),
                       "oracle": round(float(psf_or.sky_pedestal), 3)},
            "flux_psf_ratio": base, "flux_psf_ratio_err": err0, "split": split,
            "psf_noise": {"groups": groups, **noise, "per_group": per_group}, "cross_validation": cross,
            "total_err": round(total, 5), "pull": round((base - 1.0) / total, 2),
            "cpu_s_process": {k: round(v, 2) for k, v in cpu.items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--cases", required=True, help="NIGHT:EXPNUM:CCD,...")
    ap.add_argument("--groups", type=int, default=8,
                    help="jackknife groups of PSF candidates for the PSF-model noise")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    run_cases("psf_flux_split", a.cases, lambda n, e, c: measure(a.root, n, e, c, a.groups),
              a.out)


if __name__ == "__main__":
    main()
