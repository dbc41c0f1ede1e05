"""Timing of background + detection + PSF fit + measurement on a full 4096 x 2048 CCD with
~2000 sources (slow: the synthetic CCD takes ~10 s to draw)."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from desgw.se.background import estimate_background
from desgw.se.detect import DetectConfig, detect_sources
from desgw.se.measure import measure_sources
from desgw.se.psf import fit_psf, select_psf_candidates
from test_psf_synth import make_field

log = logging.getLogger(__name__)


def _run(f):
    t = [time.perf_counter()]
    bkg = estimate_background(f.image, f.mask)
    t.append(time.perf_counter())
    det = detect_sources(f.image - bkg.level, bkg.rms, f.mask, config=DetectConfig(filter_fwhm=4.0))
    t.append(time.perf_counter())
    c = det.catalog
    cand = select_psf_candidates(det)
    psf = fit_psf(f.image - bkg.level, f.weight, f.mask, c["xwin"][cand], c["ywin"][cand])
    t.append(time.perf_counter())
    cat = measure_sources(f.image, f.weight, f.mask, bkg, det, psf)
    t.append(time.perf_counter())
    return np.diff(t), cat, psf


@pytest.mark.slow
def test_full_ccd_timing():
    f = make_field(shape=(4096, 2048), n_stars=1800, n_gal=500, fwhm0=4.0, mag_range=(16.0, 22.5),
                   min_sep=20.0, seed=21)
    _run(f)  # compile / warm caches
    best = None
    for _ in range(3):
        dt, cat, psf = _run(f)
        best = dt if best is None or dt.sum() < best.sum() else best
    log.info("full CCD, %d sources, %d PSF stars: background %.3f s, detection %.3f s, PSF %.3f s, "
             "measurement %.3f s, total %.3f s", len(cat), psf.n_stars, *best, best.sum())
    assert len(cat) > 1500 and psf.n_stars > 200
    # Typically ~1 s on one core of the development machine; generous bound for loaded CI.
    assert best.sum() < 4.0, best
