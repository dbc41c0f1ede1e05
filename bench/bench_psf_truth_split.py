"""Bright-star FLUX_PSF / true per CCD split against the simulator's exact PSF into an aperture
correction term, a PSF-model shape term and a data term (issue 13, item 1).

Usage::

    nice -n 5 env PYTHONPATH=src python bench/bench_psf_truth_split.py --root /work/sci11f \\
        --cases kolmogorov_dense:642180:28,moffat2.5_crowded:768792:28 [--out F]

Each CCD (``NIGHT:EXPNUM:CCD`` under ``--root``, a night of bench/bench_science.py with raw/,
calib/, refcat/ and truth/) is processed as ``desgw se`` does
(:func:`desgw.workflow.se_ccd.read_and_process`, nothing written), and the bright isolated stars
are selected as bench/bench_science.py selects them (isolated within 3 FWHM at 1 %, unflagged,
S/N > 100, matched within 1 px). At each such star the simulator's PSF is drawn exactly
(:func:`desgw.sim.psf.local_psf` and :func:`desgw.sim.psf.pixel_profile`, galsim with the pixel
response, at the star's true sub-pixel position, on the simulator's own stamp
(:func:`desgw.sim.psf.moffat_radius`), normalised as the simulator normalises a star), giving

- ``t``: the true PSF inside the model's stamp, normalised to sum 1 there, and ``fin`` the
  fraction of the star's light inside the stamp (the exact aperture correction is ``1 / fin``);
- ``apcor_term = PSFAPCOR x fin``: the aperture correction over its exact value;
- ``shape_term``: the flux the photometry's weighted fit would give the noiseless star with the
  pipeline's model ``m`` (rendered as the photometry renders it) over its light in the stamp,
  ``sum(w m t) / sum(w m m)`` within the fit radius (2 FWHM), ``w = 1 / (sky variance + F t)``:
  the PSF model's shape error alone;
- ``data_term = ratio / (apcor_term x shape_term)``: what the image adds (sky level and
  neighbours' light under the star, noise);

so that the per-star ratio FLUX_PSF x PSFAPCOR / true is exactly the product of the three.
``model_minus_true_rings_pct`` is the mean over the stars of ``m - t`` summed in rings 1 FWHM
wide (0-1, 1-2, ... FWHM, the last ring the stamp's corners), in % of the stamp's light: where
the model misplaces light (it sums to 0).

The PSF stars' own cut-outs are compared with the truth the same way (``psf_stars``): the
stamps the model's last fit reads (each star re-centred on its centroid, neighbours' and hidden
companions' light subtracted, the pedestal not) less the star's exact light at its true flux,
averaged in rings 1 FWHM wide (pixels next to companions left out): per star, the median over
the stars (``level_rings``), over the fainter and the brighter half of them
(``level_rings_faint``, ``level_rings_bright``) and the mean weighted as the model's wing
weighs them (flux**2, ``level_rings_f2``), e-/px; ``level_outer_f2`` is the last beyond 2 FWHM,
the pixels the pedestal (``psfped``) is fitted on, and ``level_outer_median`` the median over
the stars of that mean. Where these levels are not 0 and not equal to the pedestal, the model's
wing holds them (the model sums to 1 over its stamp). The rings within ~1-2 FWHM also hold the
stamps' resampling (a Lanczos shift smooths the re-centred stamp, not the exact star; tens of
e-/px at 2.7 px FWHM, and the simulator's own integration error, ~2e-4 of a star's peak): read
the outer rings.

With ``--levels L1,L2,...`` the CCD is processed again once per level with that constant
(e-/px) subtracted from the PSF stars' cut-outs and the pedestal fit off
(``SEConfig.psf_pedestal = False``; photometry unchanged), and ``forced_level`` gives the
ratio for each and, by linear interpolation, the level at which the ratio would be 1: the level
the PSF stars' stamps would need subtracted for an unbiased FLUX_PSF, to set against the
measured ``level_rings`` and the fitted ``psfped``.

Truth written before ``exposures.csv`` had its ``psf_profile`` column gets the profile from
``night.json``'s ``survey_config.psf_profile`` (:func:`desgw.sim.truth.load_truth`).

Prints one JSON object (``--out`` writes it) with a row per CCD, the commit and the load.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from bench_sky_truth import _process
from benchjson import run_cases


def _median(v: np.ndarray) -> float:
    return round(float(np.median(v)), 5)


def _psf_star_levels(call: tuple[Any, ...], objs: Any, spec: Any, c: int, profile: str,
                     fwhm: float, gsp: Any) -> dict[str, Any]:
    """The PSF stars' last-fit stamps less their exact light, in rings (module docstring)."""
    from scipy.spatial import cKDTree

    from desgw.sim.psf import local_psf, moffat_radius, pixel_profile

    _args, out, raw, comp_near = call
    use, star_x, star_y = out[3], out[4], out[5]
    if comp_near is None:
        comp, near = np.zeros_like(raw), np.zeros(raw.shape, dtype=bool)
    else:
        comp, near = comp_near
    tx, ty = np.asarray(objs["x"], float), np.asarray(objs["y"], float)
    tflux = np.asarray(objs["flux_e"], float)
    dist, j = cKDTree(np.column_stack([tx, ty])).query(np.column_stack([star_x, star_y]))
    sel = np.flatnonzero(use & (dist < 1.0) & (np.asarray(objs["kind"])[j] == 0))
    n = raw.shape[-1]
    h = n // 2
    yy, xx = np.mgrid[-h:h + 1, -h:h + 1]
    rr = np.hypot(xx, yy)
    n_rings = int(np.ceil(h * np.sqrt(2.0) / fwhm))
    ring = np.minimum((rr / fwhm).astype(int), n_rings - 1)
    outer = rr >= 2.0 * fwhm
    js = j[sel]
    lp = local_psf(spec.psf, c, tx[js], ty[js], spec.distortion, variation=True)
    rad = moffat_radius(tflux[js], lp.m, 11.0 / 6.0 if profile == "kolmogorov" else lp.beta)
    levels = np.zeros((sel.size, n_rings))
    lev_outer = np.zeros(sel.size)
    for k, s in enumerate(sel):
        r = max(int(rad[k]), h)
        st = pixel_profile(lp.m[k], lp.beta, profile).withGSParams(gsp).drawImage(
            nx=2 * r + 1, ny=2 * r + 1, scale=1.0).array.astype(np.float64)
        rs = int(rad[k])
        st /= float(st[r - rs:r + rs + 1, r - rs:r + rs + 1].sum())
        resid = raw[s] - comp[s] - tflux[js[k]] * st[r - h:r + h + 1, r - h:r + h + 1]
        good = ~near[s]
        cnt = np.bincount(ring[good], minlength=n_rings)
        levels[k] = np.bincount(ring[good], weights=resid[good], minlength=n_rings) / np.maximum(
            cnt, 1)
        lev_outer[k] = float(resid[good & outer].mean())
    f = tflux[js]
    faint = f < np.median(f)
    w = f ** 2 / float(np.sum(f ** 2))

    def rounded(v: np.ndarray) -> list[float]:
        return [round(float(x), 2) for x in v]

    return {"n": int(sel.size), "median_flux_e": round(float(np.median(f)), 0),
            "level_rings": rounded(np.median(levels, axis=0)),
            "level_rings_faint": rounded(np.median(levels[faint], axis=0)),
            "level_rings_bright": rounded(np.median(levels[~faint], axis=0)),
            "level_rings_f2": rounded(w @ levels),
            "level_outer_f2": round(float(w @ lev_outer), 2),
            "level_outer_median": round(float(np.median(lev_outer)), 2)}


def _forced_levels(d: Path, e: int, c: int, levels: list[float], truth_ratio: Any
                   ) -> dict[str, Any]:
    """Ratios with a constant subtracted from the PSF stars' cut-outs (pedestal fit off)."""
    import desgw.se.psf as psfmod

    fit_cutouts = psfmod._fit_cutouts
    ratios = []
    for lev in levels:
        def shifted(big: np.ndarray, *args: Any, _lev: float = lev, **kw: Any) -> Any:
            return fit_cutouts(big - _lev, *args, **kw)

        psfmod._fit_cutouts = shifted
        try:
            res, _cpu = _process(d, e, c, None, psf_pedestal=False)
        finally:
            psfmod._fit_cutouts = fit_cutouts
        ratios.append(truth_ratio(res))
    order = np.argsort(ratios)
    r_sorted = np.asarray(ratios)[order]
    unit = (float(np.interp(1.0, r_sorted, np.asarray(levels)[order]))
            if r_sorted[0] <= 1.0 <= r_sorted[-1] else None)
    return {"levels": levels, "flux_psf_ratio": [round(r, 5) for r in ratios],
            "level_for_unit_ratio": None if unit is None else round(unit, 2)}


def measure(root: Path, night: str, e: int, c: int, levels: list[float] | None = None
            ) -> dict[str, Any]:
    """The three-term split of one CCD's bright-star FLUX_PSF / true."""
    import galsim
    from scipy.spatial import cKDTree

    from desgw.sim.accuracy import isolated
    from desgw.sim.psf import local_psf, moffat_radius, pixel_profile
    from desgw.sim.truth import load_truth

    d = root / night
    truth = load_truth(d)
    spec = truth.exposure_spec(e)
    import desgw.se.psf as psfmod

    fits: list[tuple[Any, ...]] = []
    stacks: list[np.ndarray] = []
    comps: list[tuple[np.ndarray, np.ndarray]] = []
    fit_cutouts, resample, companions = (psfmod._fit_cutouts, psfmod._resample,
                                         psfmod._hidden_companions)

    def rec_fit(*args: Any, **kw: Any) -> Any:
        n_comp = len(comps)
        out = fit_cutouts(*args, **kw)
        fits.append((args, out, stacks[-1], comps[-1] if len(comps) > n_comp else None))
        return out

    def rec_resample(*args: Any, **kw: Any) -> Any:
        stacks.append(resample(*args, **kw))
        return stacks[-1]

    def rec_companions(*args: Any, **kw: Any) -> Any:
        comps.append(companions(*args, **kw))
        return comps[-1]

    psfmod._fit_cutouts, psfmod._resample, psfmod._hidden_companions = (
        rec_fit, rec_resample, rec_companions)
    try:
        res, cpu = _process(d, e, c, None)
    finally:
        psfmod._fit_cutouts, psfmod._resample, psfmod._hidden_companions = (
            fit_cutouts, resample, companions)
    psf = res.psf
    n = psf.stamp_size
    h = n // 2
    cat = res.catalog
    objs = truth.objects_on_ccd(e, c)
    tx, ty = np.asarray(objs["x"], float), np.asarray(objs["y"], float)
    tflux = np.asarray(objs["flux_e"], float)
    fwhm = float(psf.fwhm_at(1023.5, 2047.5))
    dist, idx = cKDTree(np.column_stack([np.asarray(cat["XWIN_IMAGE"], float) - 1.0,
                                         np.asarray(cat["YWIN_IMAGE"], float) - 1.0])).query(
        np.column_stack([tx, ty]))
    fpsf = np.asarray(cat["FLUX_PSF"], float)
    snr = fpsf / np.asarray(cat["FLUXERR_PSF"], float)
    flags = (np.asarray(cat["FLAGS"]) != 0) | (np.asarray(cat["IMAFLAGS_ISO"]) != 0)
    bright = (np.asarray(objs["kind"]) == 0) & (dist < 1.0) & isolated(objs, 3.0 * fwhm, 0.01)
    bright &= ~flags[idx] & (snr[idx] > 100)
    bi = np.flatnonzero(bright)

    def truth_ratio(r: Any) -> float:
        """The median ratio of the same stars in another run's catalogue."""
        cc = r.catalog
        dd, ii = cKDTree(np.column_stack([np.asarray(cc["XWIN_IMAGE"], float) - 1.0,
                                          np.asarray(cc["YWIN_IMAGE"], float) - 1.0])).query(
            np.column_stack([tx[bi], ty[bi]]))
        rr = np.asarray(cc["FLUX_PSF"], float)[ii] / tflux[bi]
        return float(np.median(rr[dd < 1.0]))

    apcor = float(res.header["PSFAPCOR"])
    skyvar = float(res.header["SKYSIGMA"]) ** 2
    profile = spec.psf.profile
    lp = local_psf(spec.psf, c, tx[bi], ty[bi], spec.distortion, variation=True)
    # the simulator sizes a Kolmogorov star's stamp as a Moffat of the same wing slope
    stamp_beta = 11.0 / 6.0 if profile == "kolmogorov" else lp.beta
    rad = moffat_radius(tflux[bi], lp.m, stamp_beta)
    fit_r = float(np.clip(2.0 * fwhm, 3.0, h))
    yy, xx = np.mgrid[-h:h + 1, -h:h + 1]
    n_rings = int(np.ceil(h * np.sqrt(2.0) / fwhm))
    rings = np.minimum((np.hypot(xx, yy) / fwhm).astype(int), n_rings - 1).ravel()
    gsp = galsim.GSParams(maximum_fft_size=16384)
    fin = np.empty(bi.size)
    shape = np.empty(bi.size)
    ring_diff = np.zeros(n_rings)
    for k, i in enumerate(bi):
        ix, iy = int(np.floor(tx[i] + 0.5)), int(np.floor(ty[i] + 0.5))
        dx, dy = tx[i] - ix, ty[i] - iy
        r = int(rad[k])
        prof = pixel_profile(lp.m[k], lp.beta, profile).withGSParams(gsp)
        st = prof.drawImage(nx=2 * r + 1, ny=2 * r + 1, scale=1.0, offset=(dx, dy)).array
        st = st.astype(np.float64) / float(st.sum())
        cen = st[r - h:r + h + 1, r - h:r + h + 1] if r >= h else np.pad(st, h - r)
        fin[k] = float(cen.sum())
        t = cen / fin[k]
        m = psf.render(tx[i], ty[i], dx=dx, dy=dy).astype(np.float64)
        w = np.where(np.hypot(xx - dx, yy - dy) <= fit_r,
                     1.0 / (skyvar + tflux[i] * fin[k] * np.maximum(t, 0.0)), 0.0)
        shape[k] = float((w * m * t).sum() / (w * m * m).sum())
        ring_diff += np.bincount(rings, weights=(m - t).ravel(), minlength=n_rings)
    ratio = fpsf[idx[bi]] / tflux[bi]
    stars = _psf_star_levels(fits[-1], objs, spec, c, profile, fwhm, gsp)
    a_term = apcor * fin
    d_term = ratio / (a_term * shape)
    return {"night": night, "expnum": e, "ccdnum": c, "profile": profile,
            "fwhm_px": round(fwhm, 2), "stamp": n, "n_bright": int(bi.size),
            "flux_psf_ratio": _median(ratio),
            "flux_psf_ratio_err": round(1.2533 * 1.4826 * float(
                np.median(np.abs(ratio - np.median(ratio)))) / np.sqrt(max(bi.size, 1)), 5),
            "psfapcor": round(apcor, 5), "apcor_exact": _median(1.0 / fin),
            "apcor_term": _median(a_term), "shape_term": _median(shape),
            "data_term": _median(d_term),
            "model_minus_true_rings_pct": [round(100.0 * v / max(bi.size, 1), 3)
                                           for v in ring_diff],
            "psfped": round(float(psf.sky_pedestal), 3), "psf_n_stars": psf.n_stars,
            "psf_stars": stars,
            "forced_level": (_forced_levels(d, e, c, levels, truth_ratio) if levels else None),
            "cpu_s_process": round(cpu, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--cases", required=True, help="NIGHT:EXPNUM:CCD,...")
    ap.add_argument("--levels", default="",
                    help="e-/px, comma-separated: rerun with each subtracted from the PSF stamps")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    levels = [float(v) for v in a.levels.split(",") if v.strip()]
    run_cases("psf_truth_split", a.cases,
              lambda n, e, c: measure(a.root, n, e, c, levels or None), a.out)


if __name__ == "__main__":
    main()
