"""The PSF aperture correction (PSFAPCOR) per CCD against the simulator's exact PSF, with and
without the simulator's stamp truncation (issue 13, items 1 and 8).

Usage::

    nice -n 5 env PYTHONPATH=src python bench/bench_apcor_truth.py --root /work/sci11f \\
        --cases moffat3.5_dense:880001:28,kolmogorov_sparse_bad_seeing:649674:29 [--out F]

Each CCD (``NIGHT:EXPNUM:CCD`` under ``--root``, a night of bench/bench_science.py with raw/,
calib/, refcat/ and truth/) is processed as ``desgw se`` does
(:func:`desgw.workflow.se_ccd.read_and_process`, nothing written). For the bright isolated stars
(as bench/bench_science.py selects them: isolated within 3 FWHM at 1 %, unflagged, S/N > 100,
matched within 1 px) the simulator's PSF (:func:`desgw.sim.psf.local_psf`,
:func:`desgw.sim.psf.pixel_profile`, pixel response included, at the star's true sub-pixel
position) is drawn twice:

- as the simulator draws a star (:func:`desgw.sim.psf.add_profile_stars`): on its stamp of
  half-size :func:`desgw.sim.psf.moffat_radius` and normalised to the star's flux *there*, so
  that the light beyond that stamp (``f_trunc``, a fraction of the untruncated profile) is put
  back inside it. ``apcor_exact_sim`` is the star's flux over its light in the PSF model's
  stamp; ``apcor_term_sim = PSFAPCOR / apcor_exact_sim``;
- untruncated (drawn 60 px beyond the simulator's stamp, galsim folding threshold 1e-4):
  ``apcor_exact`` is the total over the light in the PSF model's stamp, the physical aperture
  correction; ``apcor_term = PSFAPCOR / apcor_exact``.

So ``apcor_term_sim = apcor_term / (1 - f_trunc)``: what bench/bench_psf_truth_split.py's
apcor term (the simulator's normalisation) holds beyond the aperture correction's own error.
``method_term`` is :func:`desgw.se.process_steps.psf_aperture_correction`'s estimator on the
noiseless exact PSF (the mean over the same 4 x 7 grid of CCD positions, the model's stamp size)
over its exact value: the wing extrapolation's error without the PSF model's noise. Medians over
the stars; ``f_trunc_snr20`` (median) and ``f_trunc_snr20_mean`` are ``f_trunc`` over up to 150
unflagged matched point sources of S/N > 20 (the range a zeropoint reads).

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

#: Pixels drawn beyond the simulator's stamp for the untruncated profile.
PAD = 60


def _median(v: np.ndarray) -> float:
    return round(float(np.median(v)), 5)


def _star_terms(prof: Any, r: int, h: int, dx: float, dy: float) -> tuple[float, float]:
    """(light inside the model's stamp over the untruncated total, light beyond the
    simulator's stamp of half-size ``r`` over that total) of one unit-flux star."""
    n = 2 * (r + PAD) + 1
    big = prof.drawImage(nx=n, ny=n, scale=1.0, offset=(dx, dy)).array.astype(np.float64)
    c = r + PAD
    f_trunc = 1.0 - float(big[c - r:c + r + 1, c - r:c + r + 1].sum())
    inside = float(big[c - h:c + h + 1, c - h:c + h + 1].sum())
    return inside, f_trunc


def measure(root: Path, night: str, e: int, c: int) -> dict[str, Any]:
    """The aperture correction of one CCD against the exact one (module docstring)."""
    import galsim
    from scipy.spatial import cKDTree

    from desgw.se.process_steps import wing_outside_flux
    from desgw.sim.accuracy import isolated
    from desgw.sim.psf import local_psf, moffat_radius, pixel_profile
    from desgw.sim.truth import load_truth

    d = root / night
    truth = load_truth(d)
    spec = truth.exposure_spec(e)
    res, cpu = _process(d, e, c, None)
    psf = res.psf
    h = psf.stamp_size // 2
    cat = res.catalog
    objs = truth.objects_on_ccd(e, c)
    tx, ty = np.asarray(objs["x"], float), np.asarray(objs["y"], float)
    tflux = np.asarray(objs["flux_e"], float)
    fwhm = float(psf.fwhm_at(1023.5, 2047.5))
    xw = np.asarray(cat["XWIN_IMAGE"], float) - 1.0
    yw = np.asarray(cat["YWIN_IMAGE"], float) - 1.0
    dist, idx = cKDTree(np.column_stack([xw, yw])).query(np.column_stack([tx, ty]))
    snr = np.asarray(cat["FLUX_PSF"], float) / np.asarray(cat["FLUXERR_PSF"], float)
    flags = (np.asarray(cat["FLAGS"]) != 0) | (np.asarray(cat["IMAFLAGS_ISO"]) != 0)
    bright = (np.asarray(objs["kind"]) == 0) & (dist < 1.0) & isolated(objs, 3.0 * fwhm, 0.01)
    bright &= ~flags[idx] & (snr[idx] > 100)
    bi = np.flatnonzero(bright)
    apcor = float(res.header["PSFAPCOR"])
    profile = spec.psf.profile
    stamp_beta = 11.0 / 6.0 if profile == "kolmogorov" else spec.psf.beta
    gsp = galsim.GSParams(maximum_fft_size=32768, folding_threshold=1e-4)

    def terms(sel: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lp = local_psf(spec.psf, c, tx[sel], ty[sel], spec.distortion, variation=True)
        rad = moffat_radius(tflux[sel], lp.m, stamp_beta)
        inside, ftr = np.empty(sel.size), np.empty(sel.size)
        for k, i in enumerate(sel):
            ix, iy = int(np.floor(tx[i] + 0.5)), int(np.floor(ty[i] + 0.5))
            prof = pixel_profile(lp.m[k], lp.beta, profile).withGSParams(gsp)
            inside[k], ftr[k] = _star_terms(prof, max(int(rad[k]), h), h, tx[i] - ix,
                                            ty[i] - iy)
        return inside, ftr, rad

    inside, ftr, rad = terms(bi)
    # the fainter stars too (a zeropoint's stars reach S/N 20): up to 150 of those with S/N > 20
    pts = np.flatnonzero((np.asarray(objs["kind"]) == 0) & (dist < 1.0) & ~flags[idx]
                         & (snr[idx] > 20))
    pts = np.random.default_rng(0).permutation(pts)[:150]
    _, ftr_all, _ = terms(pts)
    # the estimator on the noiseless exact PSF, averaged over the model's grid of positions
    ny, nx = psf.image_shape
    gx, gy = np.meshgrid(np.linspace(100.0, nx - 101.0, 4), np.linspace(100.0, ny - 101.0, 7))
    lpg = local_psf(spec.psf, c, gx.ravel(), gy.ravel(), spec.distortion, variation=True)
    n = psf.stamp_size
    stamps = []
    for k in range(gx.size):
        prof = pixel_profile(lpg.m[k], lpg.beta, profile).withGSParams(gsp)
        big = prof.drawImage(nx=n + 2 * 400, ny=n + 2 * 400, scale=1.0).array.astype(np.float64)
        stamps.append(big[400:400 + n, 400:400 + n])
    mean = np.mean(stamps, axis=0)
    method = (1.0 + wing_outside_flux(mean)) * float(mean.sum())
    exact = 1.0 / inside
    exact_sim = (1.0 - ftr) / inside
    return {"night": night, "expnum": e, "ccdnum": c, "profile": profile,
            "fwhm_px": round(fwhm, 2), "stamp": n, "n_bright": int(bi.size),
            "bright_flux_e_median": round(float(np.median(tflux[bi])), 0),
            "sim_radius_median": float(np.median(rad)),
            "psfapcor": round(apcor, 5), "apcor_exact": _median(exact),
            "apcor_exact_sim": _median(exact_sim),
            "apcor_term": _median(apcor / exact), "apcor_term_sim": _median(apcor / exact_sim),
            "f_trunc": _median(ftr), "f_trunc_snr20": _median(ftr_all),
            "f_trunc_snr20_mean": round(float(np.mean(ftr_all)), 5),
            "flux_e_snr20_median": round(float(np.median(tflux[pts])), 0),
            "method_term": round(method, 5),
            "cpu_s_process": round(cpu, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--cases", required=True, help="NIGHT:EXPNUM:CCD,...")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    run_cases("apcor_truth", a.cases, lambda n, e, c: measure(a.root, n, e, c), a.out)


if __name__ == "__main__":
    main()
