"""Real ZTF transients (public alert stamps) through desgw's subtraction and the real/bogus score.

The 63 x 63 ZTF science/template stamps (~1.01 arcsec/px, seeing 2.2-3.9 arcsec) are resampled
(cubic spline) so that the alert's FWHM becomes a typical DECam one (4.5 px = 1.2 arcsec at
0.263 arcsec/px), background-subtracted (median of the border), given a white-noise variance
from the robust sigma of their border pixels and a Moffat PSF of that FWHM, then subtracted with
desgw's ZOGY, detected, measured and scored. The resampling correlates the noise (S/N comes out
too high), which our simulations never had: this is a sanity check, not a tuned benchmark.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from desgw.diff.detect import detect_transients
from desgw.diff.measure import measure_candidates
from desgw.diff.realbogus import load_model, score
from desgw.diff.stamps import cutout_stamps
from desgw.diff.subtract import SubtractConfig, subtract
from desgw.diff.zogy_synth import MoffatPSFField

ZTF = Path("/work/shared/realdata/ztf_transients")
TARGET_FWHM = 4.5


def _robust_sigma(a: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(a - np.median(a))))


def _score_one(prefix: Path) -> tuple[float, float, float]:
    from scipy.ndimage import zoom

    sci = fits.getdata(f"{prefix}_science.fits").astype(np.float64)
    tmp = fits.getdata(f"{prefix}_template.fits").astype(np.float64)
    meta = json.loads(Path(f"{prefix}_meta.json").read_text())
    zoom_f = TARGET_FWHM / float(meta["candidate"]["fwhm"])
    fwhm = TARGET_FWHM
    out = []
    for img in (sci, tmp):
        edge = np.r_[img[:8].ravel(), img[-8:].ravel(), img[8:-8, :8].ravel(),
                     img[8:-8, -8:].ravel()]
        big = zoom(img - np.median(edge), zoom_f, order=3).astype(np.float32)
        out.append((big, _robust_sigma(edge) ** 2))
    (s, vs), (t, vt) = out
    shape = s.shape
    psf = MoffatPSFField(fwhm, beta=3.0, image_shape=shape, stamp=int(2 * np.ceil(4 * fwhm) + 1))
    m = np.zeros(shape, np.int32)
    sub = subtract(s, np.full(shape, vs, np.float32), m, psf, t, np.full(shape, vt, np.float32),
                   m, psf, zp_search=25.0, zp_template=25.0,
                   config=SubtractConfig(tile=128, border=48, add_source_noise=False))
    det = detect_transients(sub)
    meas = measure_candidates(sub, det, search_image=s, template_image=t)
    c = (shape[1] - 1) / 2, (shape[0] - 1) / 2
    d = np.hypot(np.asarray(meas["x"]) - c[0], np.asarray(meas["y"]) - c[1])
    if len(d) == 0 or d.min() > fwhm:
        return np.nan, np.nan, fwhm
    k = int(np.argmin(d))
    st = cutout_stamps({"search": s, "template": t, "diff": sub.diff}, meas["x"][k:k + 1],
                       meas["y"][k:k + 1])
    return float(score(meas[k:k + 1], st)[0]), float(meas["snr"][k]), fwhm


@pytest.mark.skipif(not ZTF.is_dir(), reason="no ZTF real-data stamps")
def test_ztf_transients_score_real():
    prefixes = sorted(p.with_name(p.name[:-len("_meta.json")]) for p in ZTF.glob("*_meta.json"))
    assert prefixes
    model = load_model()
    res = {}
    for p in prefixes:
        meta = json.loads(Path(f"{p}_meta.json").read_text())
        res[meta["objectId"]] = _score_one(p)
    scores = np.array([r[0] for r in res.values()])
    assert np.all(np.isfinite(scores)), res  # every transient is detected at the centre
    # Measured (model of feature version 2, threshold 0.64): ZTF25aaqqjud, ZTF25abuopnq,
    # ZTF25abxvhmk score > 0.999; ZTF25abitcpd (SN Ic, alert FWHM 3.9 px against 2.2-3.0 for
    # the others, S/N 8.9 here) scores ~0.17 (0.02 with version 1), below the threshold.
    # Reported, not tuned away: the bar is 3 of the 4. One candidate per call: the context
    # features take their no-context values.
    assert np.count_nonzero(scores > model.threshold) >= 3, res
    assert np.median(scores) > 0.9, res
