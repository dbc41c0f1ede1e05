"""Benchmark of ``desgw watch`` on a replayed night: latency per exposure, keeping up, CPU use.

Simulates a small night (default: CCD 28, 2 templates, 3 search exposures; not timed), ingests
its Gaia catalog, then runs :func:`desgw.workflow.watch.run_watch` on a fresh local Dask
cluster while a thread replays the raw exposures into the watched folder in time order, the
templates first, one every ``--cadence`` s of simulated time (DECam: ~120 s) divided by
``--speedup``. Each file is copied under a temporary name and renamed into place, except one
search exposure (``--slow-write``, default the second) that is written under its final name in
chunks over ``--slow-seconds`` s, to exercise the incomplete-file rule. The service stops when
every exposure is processed (or after ``--idle`` s of nothing). Prints one JSON document:

* ``latency_s``: per exposure, landed -> ingested, -> SE done, -> candidates in the database
  (search) and -> finished; ``search_latency_s``: p50, p95, max of landed -> candidates;
* ``keeps_up``: every search exposure had its candidates in the database before the next
  exposure landed (``interval_s`` apart), i.e. no backlog builds at this cadence;
  ``backlog_slope``: least-squares slope of the search latency against the landing order (s
  per exposure; > 0: falling behind);
* ``slow_write``: the slowly written file, when its writing ended and when it was ingested
  (must be after);
* ``cpu``: CPU seconds of this process and its descendants (``getrusage``) over the watch
  run, utilisation = CPU / wall / cores; ``load_average`` at the start and the end (the
  machine may be shared: other work makes the latencies pessimistic).

Usage::

    python bench/bench_watch.py [--ccds 28] [--n-templates 2] [--n-search 3] [--speedup 4]
                                [--workers 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path


def _replay(truth, raw_dir: Path, stage: Path, interval_s: float, slow: int | None,
            slow_seconds: float, marks: dict) -> None:
    """Land the exposures in time order (see the module docstring)."""
    order = sorted(truth.expnums, key=lambda e: float(truth.exposure_spec(e).mjd))
    t0 = time.time()
    for i, e in enumerate(order):
        time.sleep(max(0.0, t0 + i * interval_s - time.time()))
        src = truth.raw_path(e)
        final = raw_dir / src.name
        if e == slow:
            data = src.read_bytes()
            n = 8
            with open(final, "wb") as f:
                for k in range(n):
                    f.write(data[k * len(data) // n:(k + 1) * len(data) // n])
                    f.flush()
                    time.sleep(slow_seconds / n)
            marks["slow_write_done"] = time.time()
        else:
            tmp = stage / f".{src.name}.part"
            shutil.copyfile(src, tmp)
            tmp.rename(final)
        marks.setdefault("landed", {})[e] = time.time()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ccds", default="28", help="search CCDs, e.g. 28 or 28,29")
    parser.add_argument("--n-templates", type=int, default=2)
    parser.add_argument("--n-search", type=int, default=3)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--cadence", type=float, default=120.0,
                        help="simulated seconds between exposures (DECam ~120)")
    parser.add_argument("--speedup", type=float, default=4.0,
                        help="divide the cadence by this factor")
    parser.add_argument("--slow-write", type=int, default=2,
                        help="which search exposure (1-based) is written slowly; 0: none")
    parser.add_argument("--slow-seconds", type=float, default=6.0)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--idle", type=float, default=300.0)
    parser.add_argument("--keep", default=None, help="work in this folder and keep it")
    args = parser.parse_args(argv)

    from desgw.io.raw import read_exposure_header
    from desgw.io.settings import Settings
    from desgw.refcat import ingest_gaia
    from desgw.report.html import machine_info
    from desgw.report.latency import latency_percentiles
    from desgw.sim import load_truth
    from desgw.sim.night import simulate_night
    from desgw.workflow.watch import run_watch

    tmp = None
    if args.keep:
        work = Path(args.keep)
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.mkdtemp(prefix="desgw-bench-watch-")
        work = Path(tmp)
    ccds = [int(c) for c in args.ccds.split(",")]
    t_sim = time.perf_counter()
    simulate_night(work / "sim", seed=args.seed, band="r", ccds=ccds,
                   n_templates=args.n_templates, n_search=args.n_search)
    ingest_gaia([work / "sim" / "gaia" / "gaia_sim.csv"], work / "refcat", order=8)
    sim_s = time.perf_counter() - t_sim
    truth = load_truth(work / "sim")
    searches = sorted(truth.search_expnums)
    slow = searches[args.slow_write - 1] if 0 < args.slow_write <= len(searches) else None
    search_nite = read_exposure_header(truth.raw_path(searches[0])).nite
    raw_dir, stage, out = work / "raw", work / "stage", work / "out"
    for d in (raw_dir, stage, out):
        d.mkdir(parents=True, exist_ok=True)
    settings = Settings(raw_dir=raw_dir, calib_dir=work / "sim" / "calib",
                        refcat_dir=work / "refcat", out_root=out, db_url=None)
    interval = args.cadence / args.speedup
    marks: dict = {}
    machine = machine_info()
    load0 = os.getloadavg()[0]
    ru0s = resource.getrusage(resource.RUSAGE_SELF)
    replay = threading.Thread(target=_replay, args=(truth, raw_dir, stage, interval, slow,
                                                    args.slow_seconds, marks), daemon=True)
    t0 = time.perf_counter()
    replay.start()
    summary = run_watch(raw_dir, settings=settings, search_nite=search_nite,
                        workers=args.workers, poll_s=0.5, settle_s=1.0,
                        max_exposures=len(truth.expnums), idle_s=args.idle,
                        echo=lambda line: print(line, file=sys.stderr, flush=True))
    wall = time.perf_counter() - t0
    replay.join()
    ru1s = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    load1 = os.getloadavg()[0]

    rows = {r.expnum: r for r in summary.latencies}

    def since(r, what):
        v = r.since_landed(what)
        return None if v is None else round(v, 1)

    per_exp = []
    for e in sorted(rows, key=lambda x: (rows[x].landed_at or 0.0)):
        r = rows[e]
        per_exp.append({"expnum": e, "role": r.role, "status": r.status,
                        "ingested": since(r, "ingested"), "se_done": since(r, "se_done"),
                        "candidates": since(r, "candidates"), "finished": since(r, "finished"),
                        "n_candidates": r.n_candidates, "reason": r.reason})
    search_rows = [rows[e] for e in searches if e in rows]
    lat = [r.since_landed("candidates") for r in search_rows]
    known = [v for v in lat if v is not None]
    keeps_up = len(known) == len(searches) and all(v < interval for v in known)
    slope = None
    if len(known) >= 2:
        import numpy as np

        slope = round(float(np.polyfit(np.arange(len(known)), np.array(known), 1)[0]), 2)
    cpu_self = (ru1s.ru_utime - ru0s.ru_utime) + (ru1s.ru_stime - ru0s.ru_stime)
    cpu_kids = kids.ru_utime + kids.ru_stime  # the simulation runs in this process
    cores = int(machine["cores"])
    pct = latency_percentiles(summary.latencies)
    slow_doc = None
    if slow is not None and slow in rows:
        slow_doc = {"expnum": slow, "write_seconds": args.slow_seconds,
                    "write_ended_unix": round(marks.get("slow_write_done", 0.0), 2),
                    "ingested_unix": round(rows[slow].ingested_at or 0.0, 2),
                    "ingested_after_write": (rows[slow].ingested_at or 0.0)
                    >= marks.get("slow_write_done", float("inf"))}
    doc = {
        "night": {"ccds": ccds, "templates": sorted(truth.template_expnums),
                  "search": searches, "seed": args.seed,
                  "ccds_per_exposure": {str(e): len(truth.ccdnums(e)) for e in truth.expnums}},
        "cadence_s": args.cadence, "speedup": args.speedup, "interval_s": interval,
        "latency_s": per_exp,
        "search_latency_s": {k: (round(v, 1) if isinstance(v, float) else v)
                             for k, v in pct.items()},
        "keeps_up": keeps_up, "backlog_slope_s_per_exposure": slope,
        "slow_write": slow_doc,
        "processed": len(summary.processed), "stop_reason": summary.stop_reason,
        "task_status": {s: sum(1 for v in summary.task_status.values() if v == s)
                        for s in ("done", "skipped", "failed", "blocked")},
        "wall_s": round(wall, 1), "simulation_s": round(sim_s, 1),
        "cpu": {"self_s": round(cpu_self, 1), "workers_s": round(cpu_kids, 1),
                "cores": cores,
                "utilisation": round((cpu_self + cpu_kids) / wall / cores, 3)},
        "load_average": {"start": round(load0, 2), "end": round(load1, 2)},
        "machine": machine,
        "report": str(summary.report_path) if args.keep else "(removed with the temp folder)",
    }
    print(json.dumps(doc, indent=1))
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    ok = all(r.status == "done" for r in rows.values() if r.role != "rejected")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
