"""Benchmark: candidate positions and kept fakes / transients on the audit's nights, this tree's
detection and measurement against another git revision's (default ``audit18``), paired.

For each night's search CCDs the difference stage runs from the products on disk
(:func:`desgw.workflow.diff_ccd.gather_diff_inputs`, nothing written) for the fake draws
``0 .. K-1`` (:func:`desgw.workflow.diff_ccd.fake_rng`), once with ``--against``'s
``desgw/diff/detect.py`` and ``measure.py`` (loaded as modules of their own and put in
:mod:`desgw.diff.pipeline`'s namespace) and once with this tree's: the same inputs, the same
fakes. Per version: S/N > 10 fakes kept and their miss classes
(``bench_science._measure_fakes``), S/N > 10 transients kept per draw
(``bench_science._measure_transients``), the mean real/bogus score of the matched S/N > 10
fakes, and the position error of the S/N > 10 fakes matched within 4 px (median, count beyond
1.5 px: the match radius) split by the distance to the nearest brighter true source (<= 6 px,
> 15 px). Prints JSON.

Run: ``OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 PYTHONPATH=src python
bench/bench_positions_nights_ab.py --nights moffat3.5_dense --draws 4 --products /work/sci13
--inputs /work/sci11f``.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_science as bs
from benchjson import emit, load_average


def _module_at(rev: str, name: str, tmp: Path) -> ModuleType:
    """``src/desgw/diff/NAME.py`` of git revision ``rev`` as a module of its own."""
    root = Path(__file__).resolve().parents[1]
    text = subprocess.run(["git", "show", f"{rev}:src/desgw/diff/{name}.py"], cwd=root,
                          check=True, capture_output=True, text=True).stdout
    path = tmp / f"{name}_before.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(f"{name}_before", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[f"{name}_before"] = mod
    spec.loader.exec_module(mod)
    return mod


def _position_errors(r: Any, src: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """Position errors (px) of the S/N > 10 fakes of result ``r`` matched to a positive
    candidate within 4 px, by the distance to the nearest brighter true source."""
    from scipy.spatial import cKDTree

    cand, fk = r.candidates, r.fakes
    pos = ~np.asarray(cand["negative"], bool)
    out: dict[str, list[float]] = {"brighter_le_6px": [], "isolated_gt_15px": [], "all": []}
    if not pos.any() or len(fk) == 0:
        return out
    tree = cKDTree(np.column_stack([np.asarray(cand["x"], float)[pos],
                                    np.asarray(cand["y"], float)[pos]]))
    snr = np.asarray(fk["flux_e"], float) / np.asarray(fk["flux_forced_err"], float)
    for k in np.flatnonzero(snr > 10):
        x, y, f = float(fk["x"][k]), float(fk["y"][k]), float(fk["flux_e"][k])
        d, _ = tree.query([x, y])
        if d >= 4.0:
            continue
        sel = src["flux_e"] > f
        near = float(np.hypot(src["x"][sel] - x, src["y"][sel] - y).min(initial=np.inf))
        out["all"].append(float(d))
        if near <= 6.0:
            out["brighter_le_6px"].append(float(d))
        elif near > 15.0:
            out["isolated_gt_15px"].append(float(d))
    return out


def night_ab(night: str, draws: int, products: Path, inputs_root: Path,
             versions: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    """The paired figures of one night (module docstring)."""
    from scipy import ndimage

    import desgw.diff.pipeline as pl
    from desgw.diff.pipeline import DiffConfig, difference_ccd
    from desgw.io.product_paths import find_exposure_dir
    from desgw.io.settings import load_settings
    from desgw.se import maskbits
    from desgw.sim.truth import load_truth
    from desgw.workflow.diff_ccd import (
        DiffTask,
        fake_rng,
        gather_diff_inputs,
        real_bogus_threshold,
    )

    truth = load_truth(inputs_root / night)
    out = products / night / "out"
    (e,) = truth.search_expnums
    thr = real_bogus_threshold()
    assert thr is not None
    acc: dict[str, dict[str, Any]] = {
        v: {"fakes_kept": 0, "fakes_snr_gt_10": 0, "miss_classes": Counter(),
            "transients_kept_draws": 0, "transients_snr_gt_10_draws": 0, "rb": [],
            "err": {"brighter_le_6px": [], "isolated_gt_15px": [], "all": []}}
        for v in versions}
    saved = (pl.detect_transients, pl.measure_candidates)
    try:
        for c in truth.ccdnums(e):
            cfg = DiffConfig()
            settings = load_settings(out_root=out, environ={}, cwd=out)
            task = DiffTask(search_expnum=e, ccdnum=c,
                            template_expnums=tuple(truth.template_expnums), settings=settings,
                            rnum=bs.RNUM, pnum=bs.PNUM, season=bs.SEASON, cache="scratch",
                            schema="gw", version="audit", band="r", nite=0)
            inputs = gather_diff_inputs(task, find_exposure_dir(out, e, bs.RNUM, bs.PNUM),
                                        config=cfg)
            src = bs._changed_sources(truth, e, c)
            dt = None
            for k in range(draws):
                for v, (det, meas) in versions.items():
                    pl.detect_transients, pl.measure_candidates = det, meas
                    r = difference_ccd(inputs.search, inputs.templates, star_veto=inputs.veto,
                                       config=cfg, rng=fake_rng(task, k))
                    assert r.mask is not None and r.ideal_limit is not None
                    if dt is None:
                        dt, _, _ = bs._diff_truth(truth, e, c, [(int(a), int(b)) for a, b
                                                                in r.templates_used],
                                                  r.mask.shape)
                    fwhm = float(r.ideal_limit.difference_fwhm_px)
                    masked = (r.mask & (maskbits.UNUSABLE | maskbits.EDGE)) != 0
                    dm = ndimage.distance_transform_edt(~masked)
                    tr = bs._measure_transients(dt.objs, r.candidates, r.mask, thr,
                                                float(r.ideal_limit.mag), dm,
                                                dt.dist_truly_bad, dt.covered, dt.s_art, fwhm)
                    f = bs._measure_fakes(r.fakes, r.candidates, r.mask, thr, dm,
                                          dt.dist_truly_bad, dt.sources, fwhm)
                    a = acc[v]
                    a["fakes_kept"] += f["n_kept_snr_gt_10"]
                    a["fakes_snr_gt_10"] += f["n_snr_gt_10"]
                    a["miss_classes"].update(f["miss_classes"])
                    a["transients_kept_draws"] += tr["n_kept"]
                    a["transients_snr_gt_10_draws"] += tr["n_snr_gt_10"]
                    ids = {int(i): n for n, i in enumerate(np.asarray(r.candidates["id"]))}
                    fsnr = (np.asarray(r.fakes["flux_e"], float)
                            / np.asarray(r.fakes["flux_forced_err"], float))
                    a["rb"] += [float(r.candidates["real_bogus"][ids[int(ci)]])
                                for ci, s in zip(r.fakes["cand_id"], fsnr)
                                if s > 10 and int(ci) in ids]
                    for key, vals in _position_errors(r, src).items():
                        a["err"][key] += vals
    finally:
        pl.detect_transients, pl.measure_candidates = saved
    res: dict[str, Any] = {}
    for v, a in acc.items():
        errs = {key: {"n": len(vals),
                      "median_px": round(float(np.median(vals)), 3) if vals else None,
                      "beyond_1p5px": int(np.sum(np.asarray(vals) > 1.5))}
                for key, vals in a["err"].items()}
        res[v] = {"fakes_kept": [a["fakes_kept"], a["fakes_snr_gt_10"]],
                  "miss_classes": dict(a["miss_classes"]),
                  "transients_kept_draws": [a["transients_kept_draws"],
                                            a["transients_snr_gt_10_draws"]],
                  "rb_matched_fakes_mean": round(float(np.mean(a["rb"])), 4)
                  if a["rb"] else None,
                  "position_error_fakes": errs}
    return res


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", default="audit18", help="git revision to compare with")
    ap.add_argument("--nights", required=True, help="comma-separated night names")
    ap.add_argument("--draws", type=int, default=4, help="fake draws 0 .. K-1 per CCD")
    ap.add_argument("--products", type=Path, default=Path("/work/sci13"),
                    help="folder of <night>/out (the pipeline's products)")
    ap.add_argument("--inputs", type=Path, default=Path("/work/sci11f"),
                    help="folder of <night>/truth")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    from desgw.diff import detect, measure

    load0 = load_average()
    t0 = time.process_time()
    with tempfile.TemporaryDirectory(prefix="bench_positions_ab_") as tmp:
        versions = {
            "before": (_module_at(a.against, "detect", Path(tmp)).detect_transients,
                       _module_at(a.against, "measure", Path(tmp)).measure_candidates),
            "after": (detect.detect_transients, measure.measure_candidates)}
        nights = {n: night_ab(n, a.draws, a.products, a.inputs, versions)
                  for n in a.nights.split(",")}
    result = {"benchmark": "bench_positions_nights_ab", "against": a.against,
              "draws": a.draws, "products": str(a.products), "nights": nights,
              "cpu_s": round(time.process_time() - t0, 1), "load_avg_start": load0,
              "load_avg_end": load_average()}
    emit(result, a.out)
    return result


if __name__ == "__main__":
    main()
