"""``desgw demo``: a small simulated night processed end to end, with an HTML report.

:func:`run_demo` does, under one output folder ``OUTDIR``:

1. **simulation** (:func:`desgw.sim.night.simulate_night`) into ``OUTDIR/sim/`` (raw exposures,
   calibrations, the Gaia-format catalog, truth): a few central search CCDs by default
   (:data:`DEFAULT_DEMO_CCDS`), every CCD with ``full``; 2 templates and 1 search exposure;
2. **reference catalog**: the simulated Gaia catalog ingested into ``OUTDIR/refcat/``
   (:func:`desgw.refcat.ingest_gaia`);
3. **database**: the raw exposures registered in the SQLite database ``OUTDIR/desgw.sqlite``
   (:func:`desgw.db.ingest_raw`); the tasks record their results there;
4. **processing**: :func:`desgw.workflow.sediff.run_sediff` of the search exposure with
   calibration (the original ``SEdiff.sh -C``) on a local Dask cluster: templates chosen by the
   DAGMaker rules from the database, the SE of the template CCDs that overlap the search CCDs
   (when their products are missing) and of the search CCDs, the calibration of each exposure,
   and the difference imaging of each search CCD with fakes. Products go to ``OUTDIR/out/``,
   the engine's task logs and run summary to ``OUTDIR/out/logs/``;
5. **report**: :func:`desgw.report.html.write_report` writes ``OUTDIR/report/index.html``
   from the products on disk.

Resume: a second call with the same ``OUTDIR`` skips what is finished (the simulation when its
truth files describe the same night, the store when its index exists, every task whose products
exist: the engine's rule); the report is always rewritten. ``OUTDIR/demo.json`` records the
parameters and the timings of the last call.

A different night (another seed or CCD list) in an existing ``OUTDIR`` raises ``ValueError``
rather than mixing two nights.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from desgw.io.atomic import atomic_write_text
from desgw.io.demo_files import DemoLayout, demo_layout
from desgw.io.settings import Settings
from desgw.report.html import machine_info, write_report

from .sediff import run_sediff

__all__ = [
    "DEFAULT_DEMO_CCDS",
    "DEMO_PNUM",
    "DEMO_RNUM",
    "DEMO_SEASON",
    "STAGES",
    "DemoResult",
    "run_demo",
]

log = logging.getLogger(__name__)

#: Search CCDs of the default demo: a 2 x 2 block at the centre of the focal plane.
DEFAULT_DEMO_CCDS: tuple[int, ...] = (28, 29, 35, 36)
#: SE processing version (``r{R}p{P}``) and difference-imaging season of the demo.
DEMO_RNUM, DEMO_PNUM, DEMO_SEASON = 1, 1, 1

#: Demo stages, in order (keys of :attr:`DemoResult.stage_seconds`).
STAGES: tuple[str, ...] = ("simulation", "refcat_ingest", "db_ingest", "template_se",
                           "search_se", "expcalib", "diff", "processing", "report")



@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` did.

    Attributes
    ----------
    outdir : Path
    report_path : Path
        The HTML report.
    ok : bool
        Every processing task done or skipped.
    search_expnum : int
    template_expnums : tuple of int
        The templates the DAGMaker rules chose (all simulated ones when none was chosen).
    ccds : tuple of int
        Search CCDs processed.
    stage_seconds : dict of str to float
        Wall time of each stage (:data:`STAGES`; ``template_se``, ``search_se``, ``expcalib``
        and ``diff`` are first start to last end of their tasks and overlap in time;
        ``processing`` is the whole Dask run). Stages skipped on resume are 0.
    task_seconds : dict of str to float
        Summed run time of the tasks of ``template_se``, ``search_se``, ``expcalib``, ``diff``.
    wall_seconds : float
        The whole call.
    counts : dict of str to int
        Processing tasks by status (``done``, ``skipped``, ``failed``, ``blocked``).
    scheduler : str
        What ran the tasks.
    run_summary : Path or None
        The engine's run summary JSON.
    problems : tuple of str
        Failed and blocked tasks with their reasons.
    """

    outdir: Path
    report_path: Path
    ok: bool
    search_expnum: int
    template_expnums: tuple[int, ...]
    ccds: tuple[int, ...]
    stage_seconds: dict[str, float] = field(default_factory=dict)
    task_seconds: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    scheduler: str = ""
    run_summary: Path | None = None
    problems: tuple[str, ...] = ()


# ----------------------------------------------------------------------------- stages
def _simulate(layout: DemoLayout, *, seed: int, ccds: Sequence[int] | str, band: str,
              n_templates: int, n_search: int) -> bool:
    """Simulate the night unless the same night is there; True when it simulated."""
    from desgw.sim.night import simulate_night

    night = layout.sim / "truth" / "night.json"
    want_ccds = None if ccds == "all" else sorted(int(c) for c in ccds)
    if night.is_file():
        meta = json.loads(night.read_text(encoding="utf-8"))
        from desgw.instrument import SCIENCE_CCDNUMS

        have = sorted(int(c) for c in meta.get("search_ccds", []))
        same = (int(meta.get("seed", -1)) == int(seed) and meta.get("band") == band
                and have == (sorted(SCIENCE_CCDNUMS) if want_ccds is None else want_ccds))
        if not same:
            raise ValueError(f"{layout.root} holds another simulated night (seed "
                             f"{meta.get('seed')}, band {meta.get('band')}, CCDs {have}); "
                             "use another output folder")
        from desgw.sim import load_truth

        truth = load_truth(layout.sim)
        if (len(truth.template_expnums) == n_templates and len(truth.search_expnums) == n_search
                and all(truth.raw_path(e).is_file() for e in truth.expnums)):
            return False
        raise ValueError(f"{layout.sim} holds an incomplete or different night "
                         f"({len(truth.template_expnums)} templates, "
                         f"{len(truth.search_expnums)} search exposures); use another folder")
    simulate_night(layout.sim, seed=seed, band=band, ccds=ccds, n_templates=n_templates,
                   n_search=n_search)
    return True


def _ingest_refcat(layout: DemoLayout) -> bool:
    from desgw.refcat import ingest_gaia

    if (layout.refcat / "index.json").is_file():
        return False
    ingest_gaia([layout.sim / "gaia" / "gaia_sim.csv"], layout.refcat, order=8)
    return True


def _ingest_db(layout: DemoLayout, raw_files: Sequence[Path]) -> int:
    from desgw.db import connect, ingest_raw

    with connect(layout.db_url) as db:
        rep = ingest_raw(db, raw_files)
    return len(rep.registered)


def _split_stages(results: Any, templates: Sequence[int]) -> tuple[dict[str, float],
                                                                   dict[str, float]]:
    """Wall span and summed task time of template SE, search SE, expcalib, diff. A fused
    search CCD (a diff task that ran SE first, ``se_timings`` in its detail) counts its SE
    seconds as search SE and the rest as diff."""
    # (started, finished, seconds) spans of each group
    groups: dict[str, list[tuple[float, float, float]]] = {
        "template_se": [], "search_se": [], "expcalib": [], "diff": []}
    tset = {int(t) for t in templates}
    for r in results.values():
        if r.started <= 0:
            continue
        se_s = float((r.detail.get("se_timings") or {}).get("total", 0.0)) \
            if r.kind == "diff" else 0.0
        if r.kind == "se":
            groups["template_se" if int(r.expnum) in tset else "search_se"].append(
                (r.started, r.finished, r.seconds))
        elif se_s > 0:
            split = min(r.started + se_s, r.finished)
            groups["search_se"].append((r.started, split, se_s))
            groups["diff"].append((split, r.finished, max(0.0, r.seconds - se_s)))
        elif r.kind in groups:
            groups[r.kind].append((r.started, r.finished, r.seconds))
    wall = {k: (max(f for _, f, _ in rs) - min(s for s, _, _ in rs)) if rs else 0.0
            for k, rs in groups.items()}
    busy = {k: float(sum(sec for _, _, sec in rs)) for k, rs in groups.items()}
    return wall, busy


# ----------------------------------------------------------------------------- the demo
def run_demo(outdir: str | os.PathLike[str] = "desgw-demo", *, full: bool = False,
             ccds: Sequence[int] | None = None, seed: int = 1, band: str = "r",
             n_templates: int = 2, workers: int | None = None, scheduler: str | None = None,
             fakes: bool = True, progress: bool = False, top_n: int = 12,
             echo: Callable[[str], None] | None = None) -> DemoResult:
    """Simulate a small night, process it on a local Dask cluster and write the HTML report.

    Parameters
    ----------
    outdir : path
        Output folder (created; reused on a second call, see the module docstring).
    full : bool
        Every working CCD (60) instead of :data:`DEFAULT_DEMO_CCDS`.
    ccds : sequence of int, optional
        Search CCDs to simulate and process (overrides ``full``).
    seed : int
        Simulation seed.
    band : str
        Filter band of the night.
    n_templates : int
        Template exposures (>= 1); one search exposure.
    workers : int, optional
        Dask worker processes (default: one per core, capped by memory).
    scheduler : str, optional
        As :func:`desgw.engine.run.run_graph` (``"single"``: no Dask).
    fakes : bool
        Inject fakes in the difference imaging (the efficiency curve needs them).
    progress : bool
        Progress bars of the engine (a terminal).
    top_n : int
        Candidates shown in the report.
    echo : callable, optional
        Called with one line per finished stage (the CLI prints them).

    Returns
    -------
    DemoResult

    Raises
    ------
    ValueError
        ``outdir`` holds another simulated night; ``n_templates`` < 1.
    """
    from desgw.sim import load_truth


    if n_templates < 1:
        raise ValueError(f"the demo needs at least one template, got n_templates={n_templates}")
    say = echo if echo is not None else (lambda line: log.info("%s", line))
    t_start = time.perf_counter()
    layout = demo_layout(outdir)
    layout.root.mkdir(parents=True, exist_ok=True)
    sim_ccds: Sequence[int] | str = (sorted({int(c) for c in ccds}) if ccds is not None
                                     else "all" if full else list(DEFAULT_DEMO_CCDS))
    stage: dict[str, float] = dict.fromkeys(STAGES, 0.0)

    t0 = time.perf_counter()
    made = _simulate(layout, seed=seed, ccds=sim_ccds, band=band, n_templates=n_templates,
                     n_search=1)
    stage["simulation"] = time.perf_counter() - t0
    truth = load_truth(layout.sim)
    (search,) = truth.search_expnums
    templates = tuple(truth.template_expnums)
    say(f"simulation: {len(templates)} templates + search exposure {search} "
        f"({'made' if made else 'found'} in {layout.sim}, {stage['simulation']:.1f} s)")

    t0 = time.perf_counter()
    made = _ingest_refcat(layout)
    stage["refcat_ingest"] = time.perf_counter() - t0
    say(f"reference catalog: {'ingested' if made else 'found'} in {layout.refcat} "
        f"({stage['refcat_ingest']:.1f} s)")

    t0 = time.perf_counter()
    n_reg = _ingest_db(layout, [truth.raw_path(e) for e in truth.expnums])
    stage["db_ingest"] = time.perf_counter() - t0
    say(f"database: {n_reg} exposures registered in {layout.db} ({stage['db_ingest']:.1f} s)")

    settings = Settings(raw_dir=layout.sim / "raw", calib_dir=layout.sim / "calib",
                        refcat_dir=layout.refcat, out_root=layout.out, db_url=layout.db_url)
    search_ccds = None if ccds is None and full else \
        sorted(int(c) for c in (ccds if ccds is not None else DEFAULT_DEMO_CCDS))
    t0 = time.perf_counter()
    rep = run_sediff(search, settings=settings, rnum=DEMO_RNUM, pnum=DEMO_PNUM,
                     season=DEMO_SEASON, ccds=search_ccds, run_calibration=True, fakes=fakes,
                     workers=workers, scheduler=scheduler, progress=progress, version="demo")
    stage["processing"] = time.perf_counter() - t0
    chosen = rep.graph.meta.get("templates") or []
    if chosen:
        templates = tuple(sorted(int(t["expnum"]) for t in chosen))
    for r in rep.graph.meta.get("rejected") or []:
        say(f"  template {r['expnum']} rejected: {'; '.join(r['reasons'])}")
    say(f"templates chosen by the DAGMaker rules: {', '.join(map(str, templates)) or 'none'}")
    wall, busy = _split_stages(rep.run.results, templates)
    stage.update(wall)
    run = rep.run
    counts = {s: len(run.with_status(s)) for s in ("done", "skipped", "failed", "blocked")}
    say(f"processing: {len(run.results)} tasks: {counts['done']} done, {counts['skipped']} "
        f"skipped, {counts['failed']} failed, {counts['blocked']} blocked; {run.scheduler}; "
        f"{stage['processing']:.1f} s")
    problems = tuple(f"{r.status} {r.task_id}: {r.reason}" for r in run.results.values()
                     if r.status in ("failed", "blocked"))
    for p in problems:
        say(f"  {p}")
    processed = tuple(sorted(int(t.ccd) for t in rep.graph.of_kind("diff") if t.ccd is not None))

    stage_partial = dict(stage)
    t0 = time.perf_counter()
    record = {"seed": seed, "band": band, "full": bool(full), "ccds": list(processed),
              "search_expnum": int(search), "template_expnums": list(templates),
              "rnum": DEMO_RNUM, "pnum": DEMO_PNUM, "season": DEMO_SEASON,
              "workers": workers, "scheduler": run.scheduler, "machine": machine_info(),
              "run_summary": None if run.summary_path is None else str(run.summary_path),
              "stage_seconds": stage_partial, "task_seconds": busy,
              "wall_seconds": time.perf_counter() - t_start, "counts": counts,
              "problems": list(problems)}
    atomic_write_text(layout.record, json.dumps(record, indent=1) + "\n")
    report_path = write_report(layout.root, top_n=top_n)
    stage["report"] = time.perf_counter() - t0
    wall_total = time.perf_counter() - t_start
    record.update(stage_seconds=stage, wall_seconds=wall_total)
    atomic_write_text(layout.record, json.dumps(record, indent=1) + "\n")
    say(f"report: {report_path} ({stage['report']:.1f} s)")
    return DemoResult(outdir=layout.root, report_path=report_path, ok=run.ok,
                      search_expnum=int(search), template_expnums=templates, ccds=processed,
                      stage_seconds=stage, task_seconds=busy, wall_seconds=wall_total,
                      counts=counts, scheduler=run.scheduler, run_summary=run.summary_path,
                      problems=problems)
