"""Benchmark of ``desgw demo`` end to end: wall time, stage split, CPU use, memory per worker.

Runs :func:`desgw.workflow.demo.run_demo` (default: the 4 central search CCDs, 2 templates;
``--full``: every CCD) in a fresh temporary folder and prints one JSON document:

* ``wall_s``: the whole demo (simulation to report);
* ``stages_s``: wall time of each stage (simulation, refcat ingest, database ingest, template
  SE, search SE, expcalib, diff, the Dask run as a whole, report; the four processing stages
  overlap in time) and ``task_s``: the summed task time of the processing stages;
* ``cpu``: CPU seconds of this process and of all its descendants (``getrusage`` SELF +
  CHILDREN, taken after the Dask workers exited), utilisation = CPU / wall / cores;
* ``memory``: peak RSS of each Dask worker process (sampled every 0.25 s with psutil; the
  workers are the pids the engine's run summary names), the largest descendant's peak RSS
  from ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` and this process's own peak;
* ``load_average``: the machine's 1-minute load at the start and the end (other work on the
  machine makes the numbers pessimistic).

Usage::

    python bench/bench_demo.py [--full] [--ccds 28,29] [--workers 2] [--keep DIR]
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


class _Sampler(threading.Thread):
    """Peak RSS (bytes) of every descendant process, sampled."""

    def __init__(self, interval_s: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.peak: dict[int, int] = {}
        self.names: dict[int, str] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._halt.is_set():
            try:
                kids = me.children(recursive=True)
            except psutil.Error:
                kids = []
            for p in kids:
                try:
                    rss = p.memory_info().rss
                    if p.pid not in self.names:
                        self.names[p.pid] = " ".join(p.cmdline()[:3])[:120]
                except psutil.Error:
                    continue
                self.peak[p.pid] = max(self.peak.get(p.pid, 0), rss)
            self._halt.wait(self.interval_s)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="every CCD (long)")
    parser.add_argument("--ccds", default=None, help="search CCDs, e.g. 28,29")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", default=None, help="run in this folder and keep it")
    args = parser.parse_args(argv)

    from desgw.report.html import machine_info
    from desgw.workflow.demo import run_demo

    ccds = None if args.ccds is None else [int(c) for c in args.ccds.split(",")]
    tmp = None
    if args.keep:
        outdir = Path(args.keep)
    else:
        tmp = tempfile.mkdtemp(prefix="desgw-bench-demo-")
        outdir = Path(tmp) / "demo"
    machine = machine_info()
    load0 = os.getloadavg()[0]
    sampler = _Sampler()
    sampler.start()
    t0 = time.perf_counter()
    try:
        res = run_demo(outdir, full=args.full, ccds=ccds, seed=args.seed, workers=args.workers)
        wall = time.perf_counter() - t0
    finally:
        sampler.stop()
    self_ru = resource.getrusage(resource.RUSAGE_SELF)
    kids_ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    load1 = os.getloadavg()[0]

    summary = json.loads(Path(res.run_summary).read_text()) if res.run_summary else {}
    worker_pids: dict[int, str] = {}
    for t in summary.get("tasks", []):
        w = str(t.get("worker") or "")
        if ":" in w:
            worker_pids[int(w.rsplit(":", 1)[1])] = w
    per_worker = {f"pid {pid}": round(sampler.peak.get(pid, 0) / 1e9, 3)
                  for pid in sorted(worker_pids)}
    cpu_self = self_ru.ru_utime + self_ru.ru_stime
    cpu_kids = kids_ru.ru_utime + kids_ru.ru_stime
    cores = int(machine["cores"])
    doc = {
        "demo": {"ccds": list(res.ccds), "templates": list(res.template_expnums),
                 "search": res.search_expnum, "ok": res.ok, "counts": res.counts,
                 "scheduler": res.scheduler},
        "wall_s": round(wall, 1),
        "stages_s": {k: round(v, 1) for k, v in res.stage_seconds.items()},
        "task_s": {k: round(v, 1) for k, v in res.task_seconds.items()},
        "cpu": {"self_s": round(cpu_self, 1), "descendants_s": round(cpu_kids, 1),
                "total_s": round(cpu_self + cpu_kids, 1), "cores": cores,
                "utilisation": round((cpu_self + cpu_kids) / wall / cores, 3)},
        "memory": {"peak_rss_gb_per_worker": per_worker,
                   "max_descendant_peak_rss_gb": round(kids_ru.ru_maxrss * 1024 / 1e9, 3),
                   "self_peak_rss_gb": round(self_ru.ru_maxrss * 1024 / 1e9, 3),
                   "sampled_processes": len(sampler.peak)},
        "load_average": {"start": round(load0, 2), "end": round(load1, 2)},
        "machine": machine,
        "report": str(res.report_path) if args.keep else "(removed with the temp folder)",
    }
    print(json.dumps(doc, indent=1))
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
