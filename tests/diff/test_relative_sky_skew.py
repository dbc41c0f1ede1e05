"""The relative sky of the difference imaging is the mean of ``search - template``, not its
mode: the Poisson skies are skewed (the search's up, the subtracted template's down), so sep's
clipped mesh mode lies ~0.25-0.35 e- below the mean for templates 3-10x deeper than the
search (desgw.diff.pipeline_steps.relative_sky_skew_shift corrects it).

Truth: a search CCD and templates of pure Poisson sky plus read noise, each with its true sky
subtracted (zero mean), the templates resampled onto the search grid (rotated, sub-pixel
offsets) and coadded as the pipeline does. The relative sky removed from the search must then
leave the blank-sky mean of the plain difference within 0.05 e-/px of 0.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS

from desgw.diff.coadd import coadd_templates
from desgw.diff.pipeline_steps import relative_sky, relative_sky_skew_shift
from desgw.diff.pipeline_types import DiffConfig
from desgw.diff.resample import resample_to_grid, third_cumulant_factor
from desgw.se.background import SKEW_MODE_RESPONSE

SHAPE = (2048, 2048)
READ_NOISE = 6.0  # e-


def _wcs(dx: float = 0.0, dy: float = 0.0, rot_deg: float = 0.0) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [30.0, -30.0]
    w.wcs.crpix = [1024.5 + dx, 1024.5 + dy]
    s = 0.263 / 3600.0
    c, sn = np.cos(np.radians(rot_deg)), np.sin(np.radians(rot_deg))
    w.wcs.cd = [[-s * c, s * sn], [s * sn, s * c]]
    return w


def _scene(seed: int, sky_e: float, depth: float, n_templates: int):
    """Search (sky ``sky_e``) and the coadd of ``n_templates`` templates whose exposures are
    ``depth / n_templates`` times longer (the coadd is ``depth`` times deeper), all with their
    true sky removed."""
    rng = np.random.default_rng(seed)
    search = (rng.poisson(sky_e, SHAPE) - sky_e
              + rng.normal(0.0, READ_NOISE, SHAPE)).astype(np.float32)
    k = depth / n_templates
    sky_t = k * sky_e
    resampled, zps = [], []
    for i in range(n_templates):
        t = (rng.poisson(sky_t, SHAPE) - sky_t
             + rng.normal(0.0, READ_NOISE, SHAPE)).astype(np.float32)
        w = np.full(SHAPE, 1.0 / (sky_t + READ_NOISE ** 2), np.float32)
        resampled.append(resample_to_grid(t, np.zeros(SHAPE, np.int32), w,
                                          _wcs(0.37 + 0.29 * i, -0.61 + 0.4 * i, 0.05 + 0.03 * i),
                                          _wcs(), SHAPE))
        zps.append(30.0 + 2.5 * np.log10(k))  # k times the search's exposure
    coadd = coadd_templates(resampled, zps, 30.0)
    good = coadd.weight > 0
    good[:16] = good[-16:] = False
    good[:, :16] = good[:, -16:] = False
    s_var = np.full(SHAPE, sky_e + READ_NOISE ** 2, np.float32)
    t_var = np.where(good, 1.0 / np.where(good, coadd.weight, 1.0), np.inf).astype(np.float32)
    return search, coadd, good, s_var, t_var


@pytest.fixture(scope="module")
def runs():
    out = []
    cfg = DiffConfig()
    for seed, depth, n in ((1, 3.0, 2), (2, 3.0, 2), (3, 10.0, 1), (4, 10.0, 2)):
        sky = 300.0
        search, coadd, good, s_var, t_var = _scene(seed, sky, depth, n)
        rms = float(np.sqrt(sky + READ_NOISE ** 2))
        shift = relative_sky_skew_shift(sky, s_var, t_var, coadd.gain, good)
        mode = relative_sky(search, coadd.image, good, rms, cfg)
        mean = relative_sky(search, coadd.image, good, rms, cfg, skew_shift=shift)
        d = (search - coadd.image)[good].astype(np.float64)
        out.append({"depth": depth, "shift": shift, "d_mean": float(d.mean()),
                    "d_var": float(d.var()), "d_k3": float(((d - d.mean()) ** 3).mean()),
                    "mode": float(mode[good].mean()), "mean": float(mean[good].mean())})
    return out


def test_mode_lies_below_the_mean_and_the_shift_removes_it(runs):
    # blank-sky mean of the difference after the relative sky, against the truth (0)
    before = [r["d_mean"] - r["mode"] for r in runs]
    after = [r["d_mean"] - r["mean"] for r in runs]
    assert np.mean(before) > 0.2, before  # the mode's bias is there: 0.21-0.33 e-
    assert abs(np.mean(after)) < 0.05, after
    assert max(abs(a) for a in after) < 0.08, after  # each CCD (mesh-mode noise ~0.03 e-)


def test_shift_is_the_measured_third_cumulant(runs):
    """The shift's model of the difference's third cumulant (the search's sky minus the
    resampled coadd's Poisson skewness) against the sample's (~2 % noise)."""
    for r in runs:
        k3_model = r["shift"] * r["d_var"] / SKEW_MODE_RESPONSE
        assert k3_model == pytest.approx(r["d_k3"], rel=0.1), r
    # deeper templates subtract less skewness: the shift grows towards the search's own
    by_depth = {r["depth"]: r["shift"] for r in runs}
    assert by_depth[10.0] > by_depth[3.0] > 0.2


def test_third_cumulant_factor_of_a_whole_pixel_shift_is_one():
    """Lanczos-3 at uniform sub-pixel phases averages skewness away faster than variance
    (0.68); a kernel can only lower it."""
    f = third_cumulant_factor("lanczos3")
    assert 0.6 < f < 0.75
    for k in ("lanczos2", "lanczos4", "lanczos5"):
        assert 0.5 < third_cumulant_factor(k) < 1.0


def test_no_shift_without_a_sky():
    var = np.full((8, 8), 100.0, np.float32)
    good = np.ones((8, 8), bool)
    assert relative_sky_skew_shift(float("nan"), var, var, None, good) == 0.0
    assert relative_sky_skew_shift(0.0, var, var, None, good) == 0.0
    # search only: 0.39 kappa3 / var with kappa3 = the sky (e-)
    assert relative_sky_skew_shift(90.0, var, var, None, good) == pytest.approx(
        SKEW_MODE_RESPONSE * 90.0 / 200.0)
