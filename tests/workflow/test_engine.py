"""The engine: SE tasks for real on a LocalCluster, resume, failures, a worker that dies,
dependency failures, database errors, password hygiene and cluster plumbing."""

import hashlib
import logging
import os
import sqlite3
import sys
import threading

import numpy as np
import pytest
from astropy.io import fits
from click.testing import CliRunner

from desgw.cli import main
from desgw.db import DatabaseConnectionError
from desgw.engine import run as engine_mod
from desgw.engine.graph import Task, TaskGraph
from desgw.engine.progress import LogProgress, make_progress
from desgw.engine.run import cluster_options, make_cluster, run_graph
from desgw.engine.tasks import (
    Outcome,
    TaskPayload,
    TaskResult,
    execute_task,
    is_transient,
)
from desgw.errors import MissingFileError, TransientTaskError
from desgw.io.completion import (
    diff_complete,
    diff_done_path,
    exposure_outdir,
    se_paths,
)
from desgw.io.naming import allzp_csv_name, zero_csv_name
from desgw.io.settings import load_settings
from desgw.workflow.dagmaker import make_dag
from desgw.workflow.dagmaker_rc import DagmakerConfig
from desgw.workflow.tasks import run_pipeline, run_se_task

PASSWORD = "pW-7f3kq9"
BAD_URL = f"postgresql://gw:{PASSWORD}@127.0.0.1:1/desgw"


# ----------------------------------------------------------------------------- fixtures
def _settings(root, out, db_url=None):
    return load_settings(raw_dir=root / "raw", calib_dir=root / "calib",
                         refcat_dir=root / "refcat", out_root=out, db_url=db_url, environ={},
                         cwd=out.parent)


def _se_graph(root, out):
    """The DAG of the sim's search exposure without its difference-imaging task."""
    g = make_dag(880001, settings=_settings(root, out), config=DagmakerConfig(rnum=1, pnum=1))
    return TaskGraph(tuple(t for t in g.tasks if t.kind != "diff"), g.meta)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, workflow_sim):
    """The SE graph run once on a LocalCluster of 2 worker processes."""
    root, truth = workflow_sim
    out = tmp_path_factory.mktemp("engine_reference") / "out"
    graph = _se_graph(root, out)
    report = run_pipeline(graph, settings=_settings(root, out), workers=2, retries=1,
                          progress=False)
    return root, truth, out, graph, report


def _digest(path):
    """Content digest: decoded data and header cards of FITS files (the tile compression
    stamps gzip times into the bytes), the bytes of anything else."""
    h = hashlib.sha256()
    if path.name.endswith((".fits", ".fits.fz")):
        with fits.open(path) as hdul:
            for hdu in hdul:
                h.update(str([c for c in hdu.header.cards
                              if c.keyword not in ("CHECKSUM", "DATASUM")]).encode())
                if hdu.data is not None:
                    h.update(np.ascontiguousarray(hdu.data).tobytes() if not hasattr(
                        hdu.data, "columns") else hdu.data.tobytes())
    else:
        h.update(path.read_bytes())
    return h.hexdigest()


def _product_digests(out, graph, task_ids):
    res = {}
    for tid in task_ids:
        t = graph.task(tid)
        paths = se_paths(out, t.expnum, t.ccd, t.args)
        res[tid] = [_digest(p) for p in (paths.immask, paths.fullcat, paths.psfmodel)]
    return res


# ----------------------------------------------------------------------------- real SE
@pytest.mark.slow
def test_local_cluster_runs_se_tasks_and_a_rerun_skips_them(reference):
    root, truth, out, graph, report = reference
    assert report.ok, report.lines()
    assert set(report.done) == {t.id for t in graph.tasks} and len(report.done) == 7
    assert "LocalCluster (2 worker processes)" in report.scheduler
    assert report.stage_seconds["se"] > 0 and report.task_seconds["se"] > \
        report.stage_seconds["se"]  # two processes worked in parallel
    for t in graph.of_kind("se"):
        assert se_paths(out, t.expnum, t.ccd, t.args).complete()
        r = report.results[t.id]
        assert r.attempt == 1 and r.detail["n_objects"] > 100
        log_text = (out / "logs" / f"{t.id}.log").read_text()
        assert f"attempt of run {report.run_id}" in log_text and "done" in log_text
    for t in graph.of_kind("expcalib"):
        d = exposure_outdir(out, t.expnum, t.args)
        assert (d / allzp_csv_name(t.expnum, 1, 1)).is_file()
        assert all((d / zero_csv_name(t.expnum, c, 1, 1)).is_file() for c in t.args["ccds"])
        # the calibrated zeropoint (e- over the exposure) agrees with the simulator's truth
        spec = truth.exposure_spec(t.expnum)
        true_zp = np.mean([float(truth.ccd_row(t.expnum, c)["zeropoint"])
                           for c in t.args["ccds"]]) + 2.5 * np.log10(spec.exptime)
        assert report.results[t.id].detail["zp"] == pytest.approx(true_zp, abs=0.05)
    assert report.summary_path is not None and report.summary_path.is_file()

    before = {p: p.stat().st_mtime_ns for p in out.rglob("D*") if p.is_file()}
    again = run_pipeline(graph, settings=_settings(root, out), workers=2, progress=False)
    assert again.ok and set(again.skipped) == set(report.results)
    assert again.scheduler == "nothing to run" and again.wall_seconds < 5
    assert {p: p.stat().st_mtime_ns for p in out.rglob("D*") if p.is_file()} == before


def _killer_se(task, settings, overwrite, deps):
    """SE runner whose worker dies: CCD 22 once (first attempt), CCD 23 every time."""
    marker = settings.out_root / f"killed-{task.id}"
    if task.ccd == 22 and not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("killed once\n")
        os._exit(3)
    if task.ccd == 23:
        os._exit(3)
    return run_se_task(task, settings, overwrite, deps)


@pytest.mark.slow
def test_a_worker_that_dies_is_retried_or_reported_and_a_rerun_completes(reference,
                                                                          tmp_path):
    import cloudpickle

    root, truth, ref_out, ref_graph, _ = reference
    (template,) = truth.template_expnums
    out = tmp_path / "out"
    by_id = {t.id: t for t in ref_graph.tasks}
    s28 = by_id["se-880001-28"]
    cal = by_id[f"expcalib-{template}"]
    tasks = (by_id[f"se-{template}-22"], by_id[f"se-{template}-23"],
             Task("se-880001-40", "se", 880001, 40, (), s28.args),  # not in the raw file
             Task(cal.id, "expcalib", template, None,
                  (f"se-{template}-22", f"se-{template}-23"), {**cal.args, "ccds": [22, 23]}))
    graph = TaskGraph(tasks, ref_graph.meta)
    settings = _settings(root, out)

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        first = run_pipeline(graph, settings=settings, workers=2, retries=1, progress=False,
                             runners={"se": _killer_se})
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    r = first.results
    assert r[f"se-{template}-22"].status == "done", first.lines()
    assert r[f"se-{template}-22"].attempt == 2
    assert r[f"se-{template}-23"].status == "failed"
    assert "worker process died" in r[f"se-{template}-23"].reason
    assert r[f"se-{template}-23"].attempt == 2  # started twice, died twice (retries=1)
    assert r["se-880001-40"].status == "failed" and "MissingCCDError" in r["se-880001-40"].reason
    # the calibration ran without the dead CCD instead of dying with it
    assert r[cal.id].status == "done" and r[cal.id].detail["left_out"] == [23]
    assert not first.ok and set(first.failed) == {f"se-{template}-23", "se-880001-40"}
    assert any("done at attempt 2" in line for line in first.lines())
    kept = {tid: se_paths(out, by_id[tid].expnum, by_id[tid].ccd, by_id[tid].args).qc
            .stat().st_mtime_ns for tid in (f"se-{template}-22",)}

    second = run_pipeline(graph, settings=settings, workers=2, retries=1, progress=False)
    r = second.results
    assert second.skipped == (f"se-{template}-22",)
    assert r[f"se-{template}-23"].status == "done" and r[cal.id].status == "done"
    assert r[cal.id].detail["ccds"] == [22, 23]
    assert second.failed == ("se-880001-40",)  # still not in the raw file
    for tid, mtime in kept.items():
        t = by_id[tid]
        assert se_paths(out, t.expnum, t.ccd, t.args).qc.stat().st_mtime_ns == mtime
    # the products are those of an uninterrupted run
    ids = [f"se-{template}-22", f"se-{template}-23"]
    assert _product_digests(out, graph, ids) == _product_digests(ref_out, ref_graph, ids)


# ----------------------------------------------------------------------------- dependencies
_ARGS = {"band": "r", "nite": 20190814, "rnum": 1, "pnum": 1, "cache": "scratch",
         "schema": "gw"}


def _fake_se(task, settings, overwrite, deps):
    marker = settings.out_root / f"transient-{task.id}"
    if task.id == "se-100-1":
        return Outcome("failed", "ValueError: no stars", error=ValueError("no stars"))
    if task.id == "se-300-2":
        return Outcome("failed", "DetrendError: all pixels saturated")
    if task.id == "se-200-1" and not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("once\n")
        return Outcome("failed", "OSError: [Errno 5] Input/output error",
                       error=OSError(5, "Input/output error"))
    return Outcome("done")


def _fake_expcalib(task, settings, overwrite, deps):
    if all(not r.ok for r in deps.values()):
        return Outcome("blocked", "no CCD")
    return Outcome("done")


def test_failed_dependencies_block_or_drop_templates(tmp_path, fake_diff):
    seen = fake_diff

    def diff(ccd, templates):
        deps = [f"se-300-{ccd}", "expcalib-300"]
        for e in templates:
            deps += [f"se-{e}-1", f"expcalib-{e}"]
        return Task(f"diff-300-{ccd}", "diff", 300, ccd, tuple(deps),
                    {**_ARGS, "season": 67, "version": "v1", "fakes": False,
                     "templates": list(templates),
                     "template_ccds": {str(e): [1] for e in templates}})

    tasks = [Task(f"se-{e}-1", "se", e, 1, (), _ARGS) for e in (100, 200)]
    tasks += [Task(f"expcalib-{e}", "expcalib", e, None, (f"se-{e}-1",),
                   {**_ARGS, "ccds": [1]}) for e in (100, 200)]
    tasks += [Task(f"se-300-{c}", "se", 300, c, (), _ARGS) for c in (1, 2)]
    tasks += [Task("expcalib-300", "expcalib", 300, None, ("se-300-1", "se-300-2"),
                   {**_ARGS, "ccds": [1, 2]}), diff(1, (100, 200)), diff(2, (200,))]
    graph = TaskGraph(tuple(tasks))
    settings = _settings(tmp_path, tmp_path / "out")
    report = run_pipeline(graph, settings=settings, scheduler="single", retries=1,
                          progress=False, runners={"se": _fake_se, "expcalib": _fake_expcalib})
    r = report.results
    assert r["se-100-1"].status == "failed" and r["se-300-2"].status == "failed"
    assert r["se-200-1"].status == "done" and r["se-200-1"].attempt == 2  # OSError retried
    assert r["expcalib-100"].status == "blocked"
    # the search CCD whose SE failed: blocked, with the reason
    assert r["diff-300-2"].status == "blocked"
    assert "search SE failed" in r["diff-300-2"].reason and "saturated" in r["diff-300-2"].reason
    # a failed template is left out; the others are used
    assert r["diff-300-1"].status == "done"
    assert r["diff-300-1"].detail["templates"] == [200]
    assert "100" in r["diff-300-1"].detail["left_out"]
    (task,) = seen
    assert task.template_expnums == (200,) and task.season == 67 and task.fakes is False
    assert task.search_expnum == 300 and task.ccdnum == 1 and task.settings == settings
    # a diff made without one of its templates is not complete: a re-run redoes it
    d1 = graph.task("diff-300-1").args
    assert diff_done_path(settings.out_root, 300, 1, d1).is_file()
    assert not diff_complete(settings.out_root, 300, 1, d1)
    assert diff_complete(settings.out_root, 300, 1, {**d1, "templates": [200]})
    assert set(report.blocked) == {"expcalib-100", "diff-300-2"} and not report.ok
    assert any(line.startswith("  BLOCKED diff-300-2: search SE failed") for line in
               report.lines())


def test_transient_errors_are_recognised():
    assert is_transient(OSError("disk")) and is_transient(TimeoutError("slow"))
    assert is_transient(DatabaseConnectionError("db down"))
    assert is_transient(TransientTaskError("se-1-1", "OSError: disk"))
    assert not is_transient(FileNotFoundError("x"))
    assert not is_transient(MissingFileError("x.fits", None, "not found"))
    assert not is_transient(ValueError("bad")) and not is_transient(None)


def test_the_engine_retries_by_exception_type_not_by_message(tmp_path):
    """A failure whose text looks like an OSError is not retried; a TransientError is, and the
    failed result carries the exception object (it survives pickling)."""
    import pickle

    def payload(task_id, runner):
        return TaskPayload(task=Task(task_id, "se", 1, 1, (), _ARGS),
                           settings=_settings(tmp_path, tmp_path / "out"), overwrite=False,
                           log_dir=str(tmp_path / "logs"), run_id="r1", runner=runner)

    looks = execute_task(payload("se-1-1", _looks_transient))
    assert looks.status == "failed" and isinstance(looks.error, ValueError)
    assert looks.reason == "ValueError: OSError: [Errno 5] in the text only"
    back = pickle.loads(pickle.dumps(looks))
    assert isinstance(back, TaskResult) and isinstance(back.error, ValueError)
    assert back.to_dict()["error"] == "ValueError"
    with pytest.raises(TransientTaskError) as err:
        execute_task(payload("se-1-2", _db_down))
    assert err.value.task_id == "se-1-2" and "DatabaseConnectionError" in err.value.reason
    again = pickle.loads(pickle.dumps(err.value))
    assert (again.task_id, again.reason) == (err.value.task_id, err.value.reason)
    # an exception that does not survive pickling stays behind; its text does not
    lost = execute_task(payload("se-1-4", _unpicklable))
    assert lost.status == "failed" and lost.error is None and lost.reason == "_NoRoundTrip: 1/2"
    pickle.loads(pickle.dumps(lost))
    # the engine itself knows no runner: every kind of the graph needs one
    with pytest.raises(ValueError, match="no runner"):
        run_graph(TaskGraph((Task("se-1-3", "se", 1, 1, (), _ARGS),)),
                  settings=_settings(tmp_path, tmp_path / "out"), runners={},
                  scheduler="single", progress=False)


class _NoRoundTrip(Exception):
    """An exception that cannot be pickled (it holds a lock)."""

    def __init__(self, a, b):
        super().__init__(f"{a}/{b}")
        self.lock = threading.Lock()


def _unpicklable(task, settings, overwrite, deps):
    raise _NoRoundTrip(1, 2)


def _looks_transient(task, settings, overwrite, deps):
    raise ValueError("OSError: [Errno 5] in the text only")


def _db_down(task, settings, overwrite, deps):
    return Outcome("failed", "DatabaseConnectionError: down",
                   error=DatabaseConnectionError("sqlite:///x: down"))


# ----------------------------------------------------------------------------- databases
def _leaky_runner(task, settings, overwrite, deps):
    logging.getLogger("desgw.workflow.test").warning("connecting to %s", settings.db_url)
    raise RuntimeError(f"could not reach {settings.db_url}")


def test_database_password_never_in_logs_or_errors(tmp_path, caplog):
    settings = _settings(tmp_path, tmp_path / "out", db_url=BAD_URL)
    task = Task("se-1-1", "se", 1, 1, (), _ARGS)
    payload = TaskPayload(task=task, settings=settings, overwrite=False,
                          log_dir=str(tmp_path / "logs"), run_id="r1", runner=_leaky_runner)
    assert PASSWORD not in repr(payload)
    result = execute_task(payload)
    assert result.status == "failed" and "RuntimeError" in result.reason
    assert PASSWORD not in result.reason and "***" in result.reason
    assert result.error is None  # an exception whose text holds the password is not kept
    text = (tmp_path / "logs" / "se-1-1.log").read_text()
    assert "connecting to" in text and PASSWORD not in text

    from desgw.db import DatabaseError

    with caplog.at_level(logging.DEBUG), pytest.raises(DatabaseError) as err:
        run_pipeline(TaskGraph((task,)), settings=settings, scheduler="single",
                     progress=False)
    assert PASSWORD not in str(err.value) and PASSWORD not in caplog.text


def test_locked_or_unreachable_database_exit_codes(tmp_path, monkeypatch):
    for name in ("DESGW_DB_URL", "DESGW_CONFIG", "DESGW_OUT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    TaskGraph((Task("se-1-1", "se", 1, 1, (), _ARGS),)).write(tmp_path / "g.json")
    raw = tmp_path / "raw"
    raw.mkdir()
    fits.PrimaryHDU(header=fits.Header({"EXPNUM": 7, "OBSTYPE": "object", "BAND": "r",
                                        "EXPTIME": 30.0, "MJD-OBS": 58700.0,
                                        "TELRA": 30.0, "TELDEC": -30.0})
                    ).writeto(raw / "DECam_00000007.fits")
    runner = CliRunner()

    res = runner.invoke(main, ["run", "g.json", "--db-url", BAD_URL, "--out", "out"])
    assert res.exit_code == 4, res.output
    assert "database error" in res.output and PASSWORD not in res.output

    from desgw.db import connect

    path = tmp_path / "locked.sqlite"
    connect(f"sqlite:///{path}").close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        for args in (["run", "g.json", "--out", "out"], ["ingest", str(raw)]):
            res = runner.invoke(main, [*args, "--db-url", f"sqlite:///{path}",
                                       "--db-timeout", "0.3"])
            assert res.exit_code == 4, res.output
            assert "locked" in res.output
    finally:
        holder.execute("ROLLBACK")
        holder.close()


# ----------------------------------------------------------------------------- plumbing
class _FakeJobqueueCluster:
    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.scaled = None

    def scale(self, **kwargs):
        self.scaled = kwargs


def test_batch_cluster_arguments(monkeypatch):
    import dask_jobqueue

    monkeypatch.setattr(dask_jobqueue, "HTCondorCluster", _FakeJobqueueCluster)
    monkeypatch.setattr(dask_jobqueue, "SLURMCluster", _FakeJobqueueCluster)
    c = make_cluster("htcondor", workers=7)
    prologue = c.kwargs.pop("job_script_prologue")
    assert c.kwargs == {"cores": 1, "processes": 1, "memory": "3.5GB", "disk": "8GB"}
    assert "export MALLOC_ARENA_MAX=1" in prologue
    assert c.scaled == {"jobs": 7}
    c = make_cluster("slurm", options={"queue": "gw", "memory": "4GB"})
    assert c.kwargs["walltime"] == "05:00:00" and c.kwargs["queue"] == "gw"
    assert c.kwargs["memory"] == "4GB" and c.scaled == {"jobs": 10}
    with pytest.raises(ValueError, match="cluster"):
        cluster_options("pbs")
    with pytest.raises(ValueError, match="not both"):
        engine_mod._connect("tcp://127.0.0.1:1", "slurm", None, 1, 1, None)
    assert 1 <= engine_mod.default_workers(3) <= 3


def _job_script_exports(kind, script):
    """NAME -> value of the ``export NAME=value`` commands a job script runs before the
    worker (Slurm: lines of the script; HTCondor: the ``Arguments`` of ``/bin/sh -c``)."""
    import shlex

    if kind == "slurm":
        commands = script.splitlines()
    else:
        (args,) = [ln for ln in script.splitlines() if ln.startswith("Arguments = ")]
        commands = args.split("-c '", 1)[1].rsplit("'", 1)[0].split("; ")
    env = {}
    for command in commands:
        words = shlex.split(command)
        if words and words[0] == "export":
            name, _, value = words[1].partition("=")
            env[name] = value
    return env


@pytest.mark.parametrize("kind", ["slurm", "htcondor"])
def test_batch_workers_get_the_worker_dask_config(kind, monkeypatch):
    """The job script dask-jobqueue writes for a batch worker (``--cluster``) sets what the
    engine's LocalCluster workers get (WORKER_DASK_CONFIG): MALLOC_ARENA_MAX=1 in the
    environment the worker process inherits, and, read back by dask's own parser of ``DASK_``
    variables, the profiler off, 1 s ticks and 2 s system-monitor samples. A prologue of the
    caller comes after; the scheduler of make_cluster is made with the settings."""
    import dask
    import dask_jobqueue

    cls = dask_jobqueue.SLURMCluster if kind == "slurm" else dask_jobqueue.HTCondorCluster
    job_cls = cls.job_cls
    opts = cluster_options(kind, job_script_prologue=["module load desgw"])
    script = job_cls(scheduler="tcp://127.0.0.1:8786", name="w", **opts).job_script()
    env = _job_script_exports(kind, script)
    assert env.get("MALLOC_ARENA_MAX") == "1", script
    worker_config = dask.config.collect_env({k: v for k, v in env.items()
                                             if k.startswith("DASK_")})
    for key, value in engine_mod.WORKER_DASK_CONFIG.items():
        if key.startswith("distributed.nanny.pre-spawn-environ."):
            continue
        got = dask.config.get(key, config=worker_config, default="<unset>")
        assert got == value and type(got) is type(value), (key, got, script)
    assert script.index("MALLOC_ARENA_MAX") < script.index("module load desgw") \
        < script.index("dask_worker")

    # make_cluster: the scheduler it starts here sees the settings
    seen = {}

    class Recording(_FakeJobqueueCluster):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            seen.update({k: dask.config.get(k) for k in engine_mod.WORKER_DASK_CONFIG})

    monkeypatch.setattr(dask_jobqueue, cls.__name__, Recording)
    c = make_cluster(kind, workers=2)
    assert seen == engine_mod.WORKER_DASK_CONFIG
    assert c.kwargs["job_script_prologue"] == opts["job_script_prologue"][:-1]


def test_progress_lines(caplog):
    with caplog.at_level(logging.INFO, logger="desgw.engine.progress"):
        p = make_progress({"se": 2, "expcalib": 1, "diff": 0}, interval_s=1e9)
        assert isinstance(p, LogProgress)  # not a terminal
        with p:
            p.update("se", "done")
            p.update("se", "failed")
    assert "progress: se 0/2 | expcalib 0/1" in caplog.text
    assert "se 2/2 (1 done, 1 failed)" in caplog.text


# ----------------------------------------------------------------------------- threads
_BLAS_THREADS: list[int] = []


def _record_blas_threads(task, settings, overwrite, deps):
    from threadpoolctl import threadpool_info

    _BLAS_THREADS.extend(int(i["num_threads"]) for i in threadpool_info()
                         if i.get("user_api") == "blas")
    return Outcome("done")


def test_single_process_runs_blas_on_one_thread_as_a_dask_worker(tmp_path):
    """A task run in this process sees one BLAS thread, as in a Dask worker (whose nanny sets
    OPENBLAS_NUM_THREADS=1): a multithreaded BLAS sums in another order and an SE product then
    differed from the local cluster's in the last bits. The limit is lifted afterwards."""
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas() -> list[int]:
        return [int(i["num_threads"]) for i in threadpool_info() if i.get("user_api") == "blas"]

    if not blas():
        pytest.skip("numpy has no BLAS that threadpoolctl can see")
    _BLAS_THREADS.clear()
    with threadpool_limits(limits=2, user_api="blas"):  # as on a 2-core machine
        before = blas()
        report = run_graph(TaskGraph((Task("se-1-1", "se", 1, 1, (), _ARGS),)),
                           settings=_settings(tmp_path, tmp_path / "out"),
                           runners={"se": _record_blas_threads}, scheduler="single",
                           progress=False)
        assert report.ok
        assert blas() == before
    assert _BLAS_THREADS and set(_BLAS_THREADS) == {1}


# ----------------------------------------------------------------------------- gc.freeze
def _report_freeze(task, settings, overwrite, deps):
    import gc

    return Outcome("done", detail={"frozen": gc.get_freeze_count()})


def test_dask_workers_freeze_after_their_first_task_and_this_process_does_not(tmp_path):
    """desgw.util.gcfreeze: a worker's modules leave the full collections after its first task
    of a kind (the second task sees them frozen); a single-process run leaves gc alone."""
    import gc

    from dask.distributed import LocalCluster

    tasks = tuple(Task(f"se-{e}-1", "se", e, 1, (), _ARGS) for e in (100, 200))
    graph = TaskGraph(tasks)
    settings = _settings(tmp_path, tmp_path / "out")
    frozen_here = gc.get_freeze_count()
    report = run_graph(graph, settings=settings, runners={"se": _report_freeze},
                       scheduler="single", progress=False)
    assert report.ok and gc.get_freeze_count() == frozen_here
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        report = run_graph(graph, settings=settings, runners={"se": _report_freeze},
                           scheduler=cluster.scheduler_address, progress=False, overwrite=True)
        assert report.ok, report.lines()
        seen = sorted(report.results[t.id].detail["frozen"] for t in tasks)
        assert seen[0] == 0 < seen[1]  # the first task ran unfrozen, the second frozen
        from dask.distributed import Client

        with Client(cluster) as client:
            (frozen,) = client.run(gc.get_freeze_count).values()
        assert frozen > 1000


# ----------------------------------------------------------------------------- worker set-up
def _report_worker_setup(task, settings, overwrite, deps):
    """How much of a freed 32 MiB plane goes back to the system, in this (the task's) thread
    (bytes, per try)."""
    import dask

    from desgw.util.malloc import keep_freed_memory

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    keep_freed_memory()
    returned = []
    for _ in range(3):
        plane = np.full(8 << 20, 1.0, dtype=np.float32)  # a float32 CCD plane, 32 MiB
        held = rss()
        del plane
        returned.append(held - rss())
    return Outcome("done", detail={
        "returned": returned, "arena_max": os.environ.get("MALLOC_ARENA_MAX"),
        "profile": bool(dask.config.get("distributed.worker.profile.enabled")),
        "tick": str(dask.config.get("distributed.admin.tick.interval"))})


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc, /proc")
def test_local_cluster_workers_reuse_freed_planes_and_do_not_profile(tmp_path):
    """engine.run.WORKER_DASK_CONFIG: a task of the engine's LocalCluster runs in a worker
    thread; with one malloc arena a freed plane stays with the process for the next one (a
    thread arena unmaps the heap of a freed 32 MiB plane, and the next plane page-faults
    every page again), Dask's statistical profiler is off and its event loop ticks each 1 s."""
    report = run_graph(TaskGraph((Task("se-1-1", "se", 1, 1, (), _ARGS),)),
                       settings=_settings(tmp_path, tmp_path / "out"),
                       runners={"se": _report_worker_setup}, workers=1, progress=False)
    assert report.ok, report.lines()
    d = report.results["se-1-1"].detail
    assert d["arena_max"] == "1" and d["profile"] is False and d["tick"] == "1s"
    assert max(d["returned"]) < 4 << 20, d["returned"]  # a thread arena returns 32 MiB
