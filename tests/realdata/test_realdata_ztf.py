"""Real ZTF alert stamps (four spectroscopically classified transients): a fixture for the
future real/bogus test. Format: 63x63 float32 (big-endian) FITS primary images, BUNIT = DN,
no WCS; the candidate is at pixel (31, 31). The difference stamps' pixel noise (MAD outside
10 px) underestimates the correlated noise of ZTF differences, so our aperture S/N (radius
0.7 FWHM: 13.5, 7.3, 10.8, 9.9) is 1.2-2x the alert's PSF S/N (1.0857/sigmapsf: 7.2, 6.1,
6.6, 8.0); both exceed 5."""

from __future__ import annotations

import numpy as np
import pytest
from realdata_cases import ztf_stamps

STAMPS = ztf_stamps()


def test_four_classified_transients():
    assert len(STAMPS) == 4
    assert {s.tns_class.split("-")[0] for s in STAMPS} == {"SN II", "SN IIP", "SN Ic", "TDE"}


@pytest.mark.parametrize("s", STAMPS, ids=[s.object_id for s in STAMPS])
def test_candidate_is_central_and_significant(s):
    for plane in (s.science, s.template, s.difference):
        assert plane.shape == (63, 63) and np.all(np.isfinite(plane))
    d = s.difference
    yy, xx = np.mgrid[0:63, 0:63]
    r = np.hypot(xx - 31, yy - 31)
    bg = float(np.median(d[r > 10]))
    sig = 1.4826 * float(np.median(np.abs(d[r > 10] - bg)))
    fwhm = float(s.candidate["fwhm"])
    ap = r <= 0.7 * fwhm
    snr = float(np.sum(d[ap] - bg) / (sig * np.sqrt(ap.sum())))
    assert s.candidate["isdiffpos"] == "t"  # positive difference: the stamp must show it
    assert snr > 5
    # the brightest pixel within 10 px and the flux-weighted centroid lie within 1.5 px of
    # the centre
    near = np.where(r < 10, d, -np.inf)
    py, px = np.unravel_index(np.argmax(near), d.shape)
    assert np.hypot(px - 31, py - 31) <= 1.5
    w = np.clip(d - bg, 0, None) * (r <= fwhm)
    cx, cy = float(np.sum(w * xx) / w.sum()), float(np.sum(w * yy) / w.sum())
    assert np.hypot(cx - 31, cy - 31) < 1.5
    # the aperture flux agrees with the alert's magap within 3x its quoted error
    big = r <= 4.0  # an 8-px-diameter aperture; measured |mag - magap| = 0.02-0.31 (<= 1.5 sigma)
    flux = float(np.sum(d[big] - bg))
    mag = float(s.candidate["magzpsci"]) - 2.5 * np.log10(flux)
    assert abs(mag - float(s.candidate["magap"])) < 3 * float(s.candidate["sigmagap"]) + 0.1
