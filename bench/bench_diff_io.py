"""Benchmark: the file reads and writes of one search CCD's difference imaging, one core.

Usage: ``python bench/bench_diff_io.py --workdir DIR [--expnum E] [--ccd 28] [--repeat 3]
[--rewrite-immasks]``

``DIR`` is a prepared night (e.g. a copy of what ``bench/bench_exposure.py`` made: SE products
of a search exposure and its template exposures under ``DIR/out``); it is modified (prepared
template files are made and deleted; with ``--rewrite-immasks`` every immask is first
rewritten with the current :func:`desgw.io.products.write_immask`, as SE would write it).
Pinned to one core (BLAS/numba threads 1), CPU seconds (``time.process_time``, best of
``--repeat``) of:

* ``read_search``: the search CCD's products (:func:`load_ccd_products`);
* ``templates_immask_and_sky``: each overlapping template CCD as diffimg read it before
  prepared templates: the part of its immask that can land on the search CCD, then its sky
  (:func:`subtract_sky` on that part);
* ``templates_prepare_first_use``: the same CCDs through :func:`load_template_products` with
  no prepared file (whole immask, sky, file written) -- what the first search CCD to use a
  template CCD pays;
* ``templates_prepared``: the same with the prepared files present (every later search);
* ``write_immask``: the search CCD's SCI/MSK/WGT written as SE writes them;
* ``write_diff_products``: the products of one difference as the pipeline writes them
  without ``-F`` (stamp PNGs included);

and the sizes (MB per CCD) of the immask, the prepared file and the difference products.
With a desgw that has no prepared templates (an older tree on ``PYTHONPATH``) the two
``templates_prepare*`` entries are absent. Prints one JSON object.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _best(f: Callable[[], Any], n: int, before: Callable[[], None] | None = None
          ) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(max(1, n)):
        if before is not None:
            before()
        t = time.process_time()
        out = f()
        best = min(best, time.process_time() - t)
    return round(best, 3), out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--expnum", type=int, default=None, help="search exposure (default: the "
                    "exposure with the most recent night)")
    ap.add_argument("--ccd", type=int, default=28)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rewrite-immasks", action="store_true")
    args = ap.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    import desgw
    import numpy as np
    from desgw.diff import pipeline_products as pp
    from desgw.diff.pipeline import DiffConfig, difference_ccd
    from desgw.diff.pipeline_steps import subtract_sky
    from desgw.diff.template_crop import crop_box_wcs
    from desgw.io.product_paths import ccd_product_paths, diff_product_paths
    from desgw.io.products import read_immask, write_immask
    from desgw.workflow.diff_ccd import find_template_ccds
    from desgw.workflow.templates import ccd_corners_from_wcs

    out_root = args.workdir / "out"
    expdirs = sorted(out_root.glob("*/*/exp/*/*"), key=lambda d: (d.parent.name, d.name))
    sdir = next(d for d in expdirs if args.expnum is None or d.name == str(args.expnum))
    if args.expnum is None:
        sdir = expdirs[-1]
    s_exp = int(sdir.name)
    band = next(sdir.glob(f"D{s_exp:08d}_*_{args.ccd:02d}_r1p1_immask.fits.fz")).name.split("_")[1]
    if args.rewrite_immasks:
        for p in out_root.glob("*/*/exp/*/*/*_immask.fits.fz"):
            im = read_immask(p)
            write_immask(p, im.sci, im.msk, im.wgt, im.header)
    cfg = DiffConfig(require_template_qc=False)
    sp = ccd_product_paths(sdir, s_exp, band, args.ccd, 1, 1)

    def load_search() -> Any:
        return pp.load_ccd_products(sp.immask, psfmodel=sp.psfmodel, fullcat=sp.fullcat,
                                    qc=sp.qc)

    t_search, search = _best(load_search, args.repeat)
    found = find_template_ccds(ccd_corners_from_wcs(search.wcs), args.ccd, (),
                               out_root=out_root, band=band, rnum=1, pnum=1,
                               search_expnum=s_exp)
    tpaths = [ccd_product_paths(d, e, band, c, 1, 1) for e, (d, cs) in sorted(found.items())
              for c in cs]

    def crop(wcs: Any, shape: tuple[int, int]) -> Any:
        return crop_box_wcs(wcs, shape, search.wcs, search.shape)

    def old_templates() -> list[Any]:
        out = []
        for p in tpaths:
            t = pp.load_ccd_products(p.immask, psfmodel=p.psfmodel, fullcat=p.fullcat, qc=p.qc,
                                     crop=crop)
            subtract_sky(t.image, t.mask, cfg)
            out.append(t)
        return out

    res: dict[str, Any] = {"desgw": str(Path(desgw.__file__).parent), "search": [s_exp,
                           args.ccd], "n_template_ccds": len(tpaths),
                           "load_avg_start": os.getloadavg(), "cpu_s": {}, "mb_per_ccd": {}}
    cpu = res["cpu_s"]
    cpu["read_search"] = t_search
    cpu["templates_immask_and_sky"], templates = _best(old_templates, args.repeat)
    res["mb_per_ccd"]["immask"] = round(sp.immask.stat().st_size / 1e6, 2)
    if hasattr(pp, "load_template_products"):
        from desgw.io.prepared_template import prepared_path

        key = pp.template_settings_hash(cfg)

        def clear() -> None:
            for p in tpaths:
                prepared_path(p.immask, key).unlink(missing_ok=True)

        def new_templates() -> list[Any]:
            return [pp.load_template_products(p.immask, psfmodel=p.psfmodel,
                                              fullcat=p.fullcat, qc=p.qc, config=cfg,
                                              crop=crop) for p in tpaths]

        cpu["templates_prepare_first_use"], _ = _best(new_templates, args.repeat, clear)
        cpu["templates_prepared"], templates = _best(new_templates, args.repeat)
        res["mb_per_ccd"]["prepared_template"] = round(float(np.mean(
            [prepared_path(p.immask, key).stat().st_size for p in tpaths])) / 1e6, 2)
        clear()
    im = read_immask(sp.immask)
    tmp_immask = args.workdir / "bench_io_immask.fits.fz"
    cpu["write_immask"], _ = _best(lambda: write_immask(tmp_immask, im.sci, im.msk, im.wgt,
                                                        im.header), args.repeat)
    tmp_immask.unlink()
    result = difference_ccd(search, templates, config=cfg, rng=np.random.default_rng(0))
    dpaths = diff_product_paths(args.workdir / "bench_io_diff", s_exp, band, args.ccd, 1, 1, 99)
    cpu["write_diff_products"], written = _best(
        lambda: pp.write_diff_products(result, dpaths, wcs=search.wcs, png=True), args.repeat)
    res["mb_per_ccd"]["diff_products"] = round(sum(
        f.stat().st_size for v in written.values() for f in
        ([Path(v)] if Path(v).is_file() else Path(v).glob("*"))) / 1e6, 2)
    res["n_candidates"] = len(result.candidates)
    res["load_avg_end"] = os.getloadavg()
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
