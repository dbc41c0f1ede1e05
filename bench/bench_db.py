"""Benchmark: the difference-imaging database write of one search CCD (SQLite file).

Usage: ``python bench/bench_db.py [--ccds 8] [--detections 150] [--fakes 200] [--workdir DIR]``

Registers a template and a search exposure, then for each of ``--ccds`` search CCDs (apart on
the sky) times, in CPU seconds on one core: :func:`desgw.db.connect`, the first
:func:`desgw.db.replace_ccd_results` of the CCD (``--detections`` detections, the first
``min(70, fakes)`` of them on fakes, and ``--fakes`` fakes) and a rerun of the same call (the
idempotent replace). The first CCD is left out of the statistics (imports, first
statements). Also counts the SQL statements of one first call by kind. Prints one JSON
object with the median and best of each, and the load average.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import collections
import json
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ccds", type=int, default=8)
    ap.add_argument("--detections", type=int, default=150)
    ap.add_argument("--fakes", type=int, default=200)
    ap.add_argument("--workdir", type=Path, default=None, help="keep the database here")
    args = ap.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    import sqlalchemy as sa

    from desgw.db import (NewDetection, NewFake, TemplateUse, connect, register_exposure,
                          replace_ccd_results)

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_db_")
        root = Path(tmp.name)
    else:
        root = args.workdir
        root.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{root / 'bench_db.sqlite'}"
    try:
        db = connect(url)
        for expnum, nite, mjd in ((1990, 20190301, 58543.1), (2000, 20190401, 58574.1)):
            register_exposure(db, SimpleNamespace(
                expnum=expnum, nite=nite, mjd_obs=mjd, band="r", exptime=90.0, ra_deg=30.5,
                dec_deg=-10.0, object="hex", propid="p", obstype="object", airmass=1.1), None)
        db.close()
        n_fake_det = min(70, args.fakes, args.detections)

        def payload(ccd: int) -> tuple[list, list, list]:
            ra0, dec0 = 30.0 + 0.3 * ccd, -10.0
            fakes = [NewFake(ra=ra0 + 0.001 * i, dec=dec0 + 0.0005 * i, mag=22.0, host=False)
                     for i in range(args.fakes)]
            dets = [NewDetection(fakes[i].ra, fakes[i].dec, flux=100.0, fluxerr=10.0, snr=10.0,
                                 real_bogus=0.9, is_fake=True, fake_id=i)
                    for i in range(n_fake_det)]
            dets += [NewDetection(ra0 + 0.0013 * i, dec0 - 0.1 + 0.0007 * i, flux=50.0,
                                  fluxerr=10.0, snr=5.0, real_bogus=0.3)
                     for i in range(args.detections - n_fake_det)]
            return [TemplateUse(2000, ccd, 1990, ccd)], fakes, dets

        times: dict[str, list[float]] = {"connect": [], "replace_first": [], "replace_rerun": []}
        statements: collections.Counter[str] = collections.Counter()
        for ccd in range(1, args.ccds + 1):
            uses, fakes, dets = payload(ccd)
            t0 = time.process_time()
            db = connect(url)
            times["connect"].append(time.process_time() - t0)

            def count(_conn, _cursor, statement, *_a) -> None:
                statements[statement.split(None, 1)[0].upper()] += 1

            if ccd == 2:
                sa.event.listen(db.engine, "before_cursor_execute", count)
            t0 = time.process_time()
            replace_ccd_results(db, 2000, ccd, templates_used=uses, fakes=fakes, detections=dets)
            times["replace_first"].append(time.process_time() - t0)
            if ccd == 2:
                sa.event.remove(db.engine, "before_cursor_execute", count)
            t0 = time.process_time()
            replace_ccd_results(db, 2000, ccd, templates_used=uses, fakes=fakes, detections=dets)
            times["replace_rerun"].append(time.process_time() - t0)
            db.close()
        keep = slice(1, None) if args.ccds > 1 else slice(None)
        out = {
            "benchmark": "replace_ccd_results of one search CCD, SQLite file, one core, CPU s",
            "detections": args.detections, "fakes": args.fakes, "ccds": args.ccds,
            "cpu_s": {k: {"median": round(statistics.median(v[keep]), 4),
                          "best": round(min(v[keep]), 4)} for k, v in times.items()},
            "statements_first_call": dict(statements),
            "load_avg_1min": round(os.getloadavg()[0], 2),
        }
        print(json.dumps(out, indent=1))
        return out
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
