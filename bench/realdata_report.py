"""Real-data report: desgw measurements on the real DECam CP cutouts of shared/realdata against
the official Legacy Surveys CCD-table values, plus the testcase6 two-epoch numbers.

Prints one JSON object to stdout: per case the number of Gaia rows inside the cutout and of
stars used, our astrometric offsets (Gaia - ours, arcsec, RA * cos(dec)) vs ccdraoff /
ccddecoff, our weighted zeropoint (AB mag for 1 ADU/s) vs ccdzpt, our star FWHM vs the CP FWHM,
the PSFEx model FWHM (half maximum) and the blank-sky noise / weight-noise ratio.

Usage: python bench/realdata_report.py   (DESGW_SHARED may point at shared/ or shared/realdata)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "realdata"))

from realdata_cases import (
    half_max_fwhm,
    instcal_cases,
    load_case,
    measure_gaia_stars,
    noise_ratio,
    psfex_for,
    realdata_root,
    two_epoch_difference,
)


def _r(x: float, n: int = 4) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), n)


def main() -> int:
    root = realdata_root()
    if root is None:
        print(json.dumps({"error": "shared/realdata not found (set DESGW_SHARED)"}))
        return 1
    cases = []
    for c in instcal_cases():
        m = measure_gaia_stars(c)
        ccd = load_case(c.image_path)
        psf = psfex_for(c)
        ratio, n_blank = noise_ratio(c)
        entry = {
            "case": c.label, "band": c.band, "shape": list(ccd.shape),
            "n_gaia_inside": m.n_gaia_inside, "n_stars_used": m.n,
            "official": {"ccdraoff": _r(c.ccdraoff), "ccddecoff": _r(c.ccddecoff),
                         "ccdrarms": _r(c.ccdrarms), "ccddecrms": _r(c.ccddecrms),
                         "ccdzpt": _r(c.ccdzpt), "fwhm_pix": _r(c.fwhm, 3)},
            "psfex_fwhm_halfmax_pix": _r(half_max_fwhm(psf.image_at(ccd.shape[1] / 2,
                                                                   ccd.shape[0] / 2)), 3)
            if psf is not None else None,
            "noise_over_weight_noise": _r(ratio, 3), "n_blank_pixels": n_blank,
        }
        if m.n:
            w = 1 / m.zp_err ** 2
            zp = float(np.sum(w * m.zp_star) / np.sum(w))
            entry["ours"] = {
                "raoff": _r(np.mean(m.dra_arcsec)), "decoff": _r(np.mean(m.ddec_arcsec)),
                "raoff_per_star": [_r(v) for v in m.dra_arcsec],
                "decoff_per_star": [_r(v) for v in m.ddec_arcsec],
                "zp_weighted": _r(zp), "zp_err": _r(1 / np.sqrt(np.sum(w))),
                "zp_mean": _r(np.mean(m.zp_star)),
                "zp_per_star": [_r(v) for v in m.zp_star],
                "zp_err_per_star": [_r(v) for v in m.zp_err],
                "aperture_fraction": [_r(v) for v in m.ap_fraction],
                "fwhm_pix_median": _r(np.median(m.fwhm_pix), 3),
            }
            entry["ours_minus_official"] = {
                "raoff": _r(np.mean(m.dra_arcsec) - c.ccdraoff),
                "decoff": _r(np.mean(m.ddec_arcsec) - c.ccddecoff),
                "zp": _r(zp - c.ccdzpt),
                "fwhm_ratio": _r(np.median(m.fwhm_pix) / c.fwhm, 3)}
        cases.append(entry)
    pairs: dict[str, dict[str, object]] = {}
    for c in instcal_cases():
        if c.testcase == "testcase6":
            pairs.setdefault(c.band, {})[c.ccdname] = c
    two_epoch = []
    for band in sorted(pairs):
        r = two_epoch_difference(pairs[band]["S4"], pairs[band]["S9"])
        two_epoch.append({k: (_r(v, 4) if isinstance(v, float) else v)
                          for k, v in r.__dict__.items()})
    print(json.dumps({"realdata": str(root), "cases": cases, "two_epoch_testcase6": two_epoch},
                     indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
