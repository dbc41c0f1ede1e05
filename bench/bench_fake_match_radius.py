"""The fakes' match radius (issue 13): chance matches against the astrometric scatter, per night.

Usage::

    PYTHONPATH=src python bench/bench_fake_match_radius.py [--audit bench/bench_science.json]
        [--workdir W] [--radii 1.5,2.0,2.5] [--fwhm-factors 0.4,0.5]

The pipeline matches a fake to a candidate within ``DiffPipelineConfig.fake_match_radius_px``
(1.5 px whatever the seeing). A radius tied to the PSF (``c x FWHM``) would accept more of the
fakes whose candidate a neighbour's residual pulled away, and more chance coincidences. For
every search CCD of the audit's products (``W/<night>/out``, as ``bench_science.py --workdir W``
leaves them; the pipeline's own draw) this prints

- ``scatter_px``: the distance between matched S/N 10-20 fakes and their candidate (median,
  90th percentile, maximum): the astrometric scatter a radius must hold;
- ``chance_pct``: per radius, the probability that a fake lands within it of an unrelated
  positive candidate (their density on the usable area x pi r^2), for all positive
  candidates and for those kept by real/bogus (a chance match counts only if kept);
- from the audit JSON (every fake draw pooled): the fakes kept at 1.5 px and how many missed
  fakes would be kept at each radius (their nearest candidate is closer, positive and scored
  above the threshold).

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from astropy.io import fits


def _products(workdir: Path, night: str) -> list[str]:
    return sorted(glob.glob(str(workdir / night / "out" / "scratch" / "gw" / "exp" / "*" / "*"
                                / "dp1" / "r_*")))


def _ccd_figures(d: str, radii: list[float], factors: list[float], thr: float) -> dict[str, Any]:
    c = {k: np.asarray(v) for k, v in
         pq.read_table(glob.glob(d + "/*cands.parquet")[0]).to_pydict().items()}
    fakes = fits.open(glob.glob(d + "/*fakes.fits")[0])[1].data
    with fits.open(glob.glob(d + "/*diff.fits.fz")[0]) as h:
        usable = float(np.count_nonzero(h["MSK"].data == 0))
    real = ~c["is_fake"].astype(bool)
    pos = real & ~c["negative"].astype(bool)
    kept = pos & (c["real_bogus"] >= thr)
    fwhm = float(np.median(c["fwhm_psf"][~real])) if (~real).any() else float("nan")
    snr = fakes["flux_forced"] / fakes["flux_forced_err"]
    sel = fakes["recovered"].astype(bool) & (snr > 10) & (snr < 20)
    sep = np.asarray(fakes["separation_px"][sel], float)
    out: dict[str, Any] = {
        "fwhm_px": round(fwhm, 2), "usable_mpx": round(usable / 1e6, 3),
        "positive_candidates": int(pos.sum()), "kept_candidates": int(kept.sum()),
        "scatter_px": {"n": int(sel.sum()),
                       "median": round(float(np.median(sep)), 3) if sep.size else None,
                       "p90": round(float(np.percentile(sep, 90)), 3) if sep.size else None,
                       "max": round(float(sep.max()), 3) if sep.size else None}}
    rs = [*radii, *(f * fwhm for f in factors)]
    out["chance_pct"] = {f"{r:.2f}": {"any_positive": round(100 * pos.sum() / usable * np.pi * r * r, 4),
                                      "kept": round(100 * kept.sum() / usable * np.pi * r * r, 4)}
                         for r in rs}
    return out


def _kept_by_radius(df: dict[str, Any], radii: list[float]) -> dict[str, Any]:
    thr = float(df.get("rb_threshold") or 0.641)
    sets = [df["fakes"]] + [dr["fakes"] for dr in df.get("fake_draws", {}).get("draws", [])]
    kept = sum(f["n_kept_snr_gt_10"] for f in sets)
    tot = sum(f["n_snr_gt_10"] for f in sets)
    res: dict[str, Any] = {"1.50": [kept, tot, round(100 * kept / max(tot, 1), 2)]}
    for r in radii:
        extra = sum(1 for f in sets for m in f["missed"]
                    if m["class"] != "masked" and m.get("nearest_candidate_px") is not None
                    and m["nearest_candidate_px"] < r and not m.get("nearest_candidate_negative")
                    and (m.get("nearest_candidate_rb") or 0.0) >= thr)
        res[f"{r:.2f}"] = [kept + extra, tot, round(100 * (kept + extra) / max(tot, 1), 2)]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--audit", type=Path, default=Path("bench/bench_science.json"))
    ap.add_argument("--workdir", type=Path, default=None,
                    help="bench_science.py --workdir of the products (default: none read)")
    ap.add_argument("--radii", default="1.5,2.0,2.5")
    ap.add_argument("--fwhm-factors", default="0.4,0.5")
    args = ap.parse_args()
    radii = [float(r) for r in args.radii.split(",")]
    factors = [float(f) for f in args.fwhm_factors.split(",")]
    audit = json.loads(args.audit.read_text())
    out: dict[str, Any] = {"audit": str(args.audit), "load_avg": os.getloadavg(), "nights": {}}
    for night, nd in audit["nights"].items():
        rows = []
        for df in nd["diffs"]:
            row: dict[str, Any] = {"ccd": df["ccdnum"],
                                   "kept_by_radius_pooled": _kept_by_radius(df, radii)}
            fw = None
            if args.workdir is not None:
                for d in _products(args.workdir, night):
                    if d.endswith(f"r_{df['ccdnum']}"):
                        row["products"] = _ccd_figures(d, radii, factors,
                                                       float(df.get("rb_threshold") or 0.641))
                        fw = row["products"]["fwhm_px"]
            if fw is not None:
                row["kept_by_radius_pooled"].update(
                    {k: v for k, v in _kept_by_radius(df, [f * fw for f in factors]).items()
                     if k != "1.50"})
            rows.append(row)
        out["nights"][night] = rows
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
