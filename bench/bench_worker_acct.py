"""Benchmark: where the CPU seconds of a search exposure on the local Dask cluster go, by
process and per task, with the engine's worker set-up as it is and without it.

Usage: ``python bench/bench_worker_acct.py --workdir DIR [--ccds 27,28,29,30,31,32]
[--workers 2] [--rounds 2] [--out FILE]``

Runs ``bench/bench_exposure.py`` on the (prepared, see there) work folder ``--rounds`` times
for each variant, interleaved: ``new`` (:data:`desgw.engine.run.WORKER_DASK_CONFIG` as
committed) and ``old`` (that configuration emptied: Dask's defaults). Each run is a fresh
process; this file is also the Dask worker preload of that run (``dask_setup``): in the worker
it wraps :func:`desgw.engine.tasks.execute_task` and writes one JSON line per task: process
and task-thread CPU (``getrusage``), minor page faults, the CPU of the worker's other threads
(event loop) and of gc. Prints one JSON object: per variant and run, the CPU seconds of every
process of the tree (parent = client + scheduler + nannies, workers), and the per-task means
for a worker's first task and for the later ones.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from benchjson import emit

_OUT_ENV = "DESGW_BENCH_ACCT_OUT"
_gc_seconds = [0.0, 0.0]  # total, start of the current collection


def _gc_callback(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _gc_seconds[1] = time.process_time()
    else:
        _gc_seconds[0] += time.process_time() - _gc_seconds[1]


def _rusage(who: int) -> tuple[float, int]:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime, r.ru_minflt


def dask_setup(server: Any) -> None:
    """Dask preload hook: wrap ``execute_task`` in a worker process (not in a nanny)."""
    from distributed import Worker

    import desgw.engine.tasks as tasks

    if not isinstance(server, Worker) or not os.environ.get(_OUT_ENV):
        return
    gc.callbacks.append(_gc_callback)
    original = tasks.execute_task

    def execute_task(payload: Any, *deps: Any) -> Any:
        p0, f0 = _rusage(resource.RUSAGE_SELF)
        t0, _ = _rusage(resource.RUSAGE_THREAD)
        g0 = _gc_seconds[0]
        result = original(payload, *deps)
        t1, _ = _rusage(resource.RUSAGE_THREAD)
        p1, f1 = _rusage(resource.RUSAGE_SELF)
        rec = {"pid": os.getpid(), "task": payload.task.id, "kind": payload.task.kind,
               "cpu": p1 - p0, "task_thread_cpu": t1 - t0, "other_threads_cpu": p1 - p0 - t1 + t0,
               "minflt": f1 - f0, "gc_cpu": _gc_seconds[0] - g0}
        with open(os.environ[_OUT_ENV], "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
        return result

    tasks.execute_task = execute_task  # what the unpickled task function resolves to


def _run_variant(variant: str, argv: list[str], acct: Path, summary: Path) -> None:
    """In this (a fresh) process: bench_exposure with the variant's worker configuration."""
    import psutil

    sys.path.insert(0, str(Path(__file__).parent))
    import bench_exposure as be

    import desgw.engine.run as er

    if variant == "old":
        er.WORKER_DASK_CONFIG.clear()
    sampler_cls = be.TreeSampler
    cpu: dict[int, float] = {}
    roles: dict[int, str] = {}

    class Sampler(sampler_cls):  # type: ignore[misc, valid-type]
        def __exit__(self, *exc: object) -> None:
            super().__exit__(*exc)
            for pid, c in self.cpu.items():
                cmd = self.cmd.get(pid, "")
                cpu[pid] = c - self.cpu0.get(pid, 0.0)
                roles[pid] = ("parent" if pid == self.me.pid else "resource_tracker"
                              if "resource_tracker" in cmd else "worker"
                              if "spawn_main" in cmd else "other")

    be.TreeSampler = Sampler
    out = be.main(argv)
    by_role: dict[str, float] = {}
    for pid, c in cpu.items():
        by_role[roles[pid]] = by_role.get(roles[pid], 0.0) + c
    tasks = [json.loads(line) for line in acct.read_text().splitlines()]
    first: dict[int, str] = {}
    for t in tasks:
        first.setdefault(t["pid"], t["task"])
    diff = [t for t in tasks if t["kind"] == "diff"]

    def mean(rows: list[dict[str, Any]], key: str) -> float:
        return round(sum(r[key] for r in rows) / max(1, len(rows)), 3)

    split = {}
    for name, rows in (("first", [t for t in diff if first[t["pid"]] == t["task"]]),
                       ("later", [t for t in diff if first[t["pid"]] != t["task"]])):
        split[name] = {"n": len(rows), **{k: mean(rows, k) for k in (
            "cpu", "task_thread_cpu", "other_threads_cpu", "minflt", "gc_cpu")}}
    summary.write_text(json.dumps({
        "variant": variant, "wall_s": out["wall_s"], "tree_cpu_s": out["cpu_seconds"],
        "cpu_by_process_s": {k: round(v, 2) for k, v in by_role.items()},
        "diff_tasks": split, "load_avg_before": out["load_avg_before"],
        "peak_rss_per_worker_gb": out["peak_rss_per_worker_gb"],
        "cores": len(psutil.Process().cpu_affinity() or [])}))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, required=True, help="bench_exposure's work folder")
    ap.add_argument("--ccds", default="27,28,29,30,31,32")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--variant", choices=("old", "new"), default=None, help=argparse.SUPPRESS)
    ap.add_argument("--acct", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--summary", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    bench_argv = ["--ccds", args.ccds, "--workers", str(args.workers),
                  "--workdir", str(args.workdir)]
    if args.variant is not None:  # one run, in a child process
        _run_variant(args.variant, bench_argv, args.acct, args.summary)
        return {}
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_worker_acct_") as tmp:
        for i in range(args.rounds):
            for variant in ("old", "new"):
                acct = Path(tmp) / f"{variant}{i}.jsonl"
                summary = Path(tmp) / f"{variant}{i}.json"
                env = {**os.environ, _OUT_ENV: str(acct),
                       "DASK_DISTRIBUTED__WORKER__PRELOAD": json.dumps([str(Path(__file__))])}
                subprocess.run([sys.executable, __file__, "--variant", variant, "--acct",
                                str(acct), "--summary", str(summary), *bench_argv],
                               check=True, env=env, stdout=subprocess.DEVNULL)
                runs.append(json.loads(summary.read_text()))
    out = {"benchmark": "CPU seconds by process and per fused task, engine worker set-up "
                        "old (Dask defaults) vs new (WORKER_DASK_CONFIG)",
           "ccds": args.ccds, "workers": args.workers, "runs": runs}
    emit(out, args.out)
    return out


if __name__ == "__main__":
    main()
