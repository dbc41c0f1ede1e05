"""``desgw watch``: a small night replayed into a folder while the service runs.

The raw files are those of the session's simulated night (one template, one search exposure
of CCD 28) plus copies with other exposure numbers: a second search exposure, two templates
pointed far away (nobody needs them), a bias and a file that is not a raw exposure. The task
runners are stand-ins that write the products the resume rule looks for and log each start, so
the test is about the service (landing, classification, order, latency, resume), not about SE.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from desgw.engine.tasks import Outcome
from desgw.io.completion import diff_done_path, exposure_outdir, se_paths
from desgw.io.landing import LandingWatch, fits_structure_complete
from desgw.io.naming import allzp_csv_name, qc_exposure_name, zero_csv_name
from desgw.io.settings import Settings

TASK_SECONDS = 0.15


def _log_start(task, settings):
    with open(settings.out_root / "ran.txt", "a", encoding="utf-8") as f:
        f.write(f"{task.id} {time.time():.4f}\n")
    time.sleep(TASK_SECONDS)


def _fake_se(task, settings, overwrite, deps):
    _log_start(task, settings)
    fail = settings.out_root / "fail_se.txt"
    if fail.is_file() and task.id == fail.read_text().strip():
        return Outcome("failed", "AstrometryError: 3 matched stars")
    paths = se_paths(settings.out_root, task.expnum, task.ccd, task.args)
    for p in paths.all():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    return Outcome("done")


def _fake_expcalib(task, settings, overwrite, deps):
    _log_start(task, settings)
    a = task.args
    d = exposure_outdir(settings.out_root, task.expnum, a)
    r, p = int(a["rnum"]), int(a["pnum"])
    for c in a["ccds"]:
        (d / zero_csv_name(task.expnum, int(c), r, p)).write_text("zp\n")
    (d / allzp_csv_name(task.expnum, r, p)).write_text("zp\n")
    (d / qc_exposure_name(task.expnum, str(a["band"]), r, p)).write_text("{}")
    return Outcome("done")


def _fake_diff(task, settings, overwrite, deps):
    _log_start(task, settings)
    assert all(r.ok for r in deps.values()), "a diff task started before its templates"
    done = diff_done_path(settings.out_root, task.expnum, task.ccd, task.args)
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps({"ok": True, "templates_requested": task.args["templates"]}))
    return Outcome("done", None, {"n_candidates": 3})


RUNNERS = {"se": _fake_se, "expcalib": _fake_expcalib, "diff": _fake_diff}


def _copy(src: Path, dest_dir: Path, expnum: int, **keys) -> Path:
    """A copy of a raw file with another EXPNUM (and header keys), under its final name."""
    tmp = dest_dir / f".stage_{expnum}.fits.fz"
    shutil.copyfile(src, tmp)
    with fits.open(tmp, mode="update") as h:
        h[0].header["EXPNUM"] = expnum
        for k, v in keys.items():
            h[0].header[k] = v
    return tmp


def _drop(staged: Path, raw_dir: Path, name: str) -> None:
    """Land a file: rename into place (the convention the service relies on)."""
    staged.rename(raw_dir / name)


def test_landing_rule_reads_only_complete_files(tmp_path, workflow_sim):
    _, truth = workflow_sim
    src = truth.raw_path(truth.search_expnums[0])
    data = src.read_bytes()
    assert fits_structure_complete(src)
    part = tmp_path / "DECam_00000001.fits.fz"
    part.write_bytes(data[: len(data) // 2 // 2880 * 2880])  # cut at a block boundary
    assert not fits_structure_complete(part)
    part.write_bytes(data[:-2880])
    assert not fits_structure_complete(part)
    watch = LandingWatch(tmp_path, settle_s=0.5)
    (tmp_path / ".DECam_00000002.fits.fz.part").write_bytes(data)  # temporary name: ignored
    assert watch.poll(now=100.0) == [] and watch.poll(now=101.0) == []  # truncated, hidden
    part.write_bytes(data)
    assert watch.poll(now=102.0) == []  # changed since the last look
    assert watch.poll(now=102.2) == []  # not settled yet
    assert watch.poll(now=103.0) == [part]
    assert watch.poll(now=104.0) == []  # reported once


def test_watch_replays_a_night_search_first_and_resumes(tmp_path, workflow_sim):
    from dask.distributed import Client, LocalCluster

    from desgw.db import connect
    from desgw.db.latency import get_latencies
    from desgw.io.raw import read_exposure_header
    from desgw.workflow.watch import run_watch

    root, truth = workflow_sim
    (t1,) = truth.template_expnums
    (s1,) = truth.search_expnums
    s2, u1, u2, zero, bad = s1 + 1, t1 + 101, t1 + 102, t1 + 103, 999999
    search_nite = read_exposure_header(truth.raw_path(s1)).nite
    raw_dir, stage = tmp_path / "raw", tmp_path / "stage"
    raw_dir.mkdir()
    stage.mkdir()
    far = {"TELDEC": "+10:00:00.00", "DEC": "+10:00:00.00"}
    staged = {
        u1: _copy(truth.raw_path(t1), stage, u1, **far),
        u2: _copy(truth.raw_path(t1), stage, u2, **far),
        t1: _copy(truth.raw_path(t1), stage, t1),
        s1: _copy(truth.raw_path(s1), stage, s1),
        zero: _copy(truth.raw_path(t1), stage, zero, OBSTYPE="zero"),
        s2: _copy(truth.raw_path(s1), stage, s2),
    }
    junk = stage / "junk.fits"
    fits.PrimaryHDU(np.zeros((4, 4), np.int16)).writeto(junk)
    schedule = [(0.0, u1), (0.0, u2), (0.6, t1), (1.2, s1), (1.3, zero), (1.5, bad),
                (2.0, s2)]

    def replay():
        t0 = time.time()
        for at, e in schedule:
            time.sleep(max(0.0, t0 + at - time.time()))
            if e == bad:
                _drop(junk, raw_dir, f"DECam_{bad:08d}.fits")
            else:
                _drop(staged[e], raw_dir, f"DECam_{e:08d}.fits.fz")

    out = tmp_path / "out"
    out.mkdir()
    bad_ccd = f"se-{u2}-{min(truth.ccdnums(t1))}"  # one CCD of u2 fails: reported, skipped
    (out / "fail_se.txt").write_text(bad_ccd)
    settings = Settings(raw_dir=raw_dir, calib_dir=root / "calib", refcat_dir=root / "refcat",
                        out_root=out, db_url=f"sqlite:///{tmp_path / 'watch.sqlite'}")
    lines: list[str] = []
    opts = {"settings": settings, "search_nite": search_nite, "runners": RUNNERS,
            "poll_s": 0.05, "settle_s": 0.1, "echo": lines.append, "handle_signals": False,
            "preload": False}
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    try:
        with Client(cluster) as client:
            dropper = threading.Thread(target=replay)
            dropper.start()
            first = run_watch(raw_dir, client=client, max_exposures=2, **opts)
            dropper.join()
            with connect(settings.db_url) as db:
                mid = {r.expnum: r for r in get_latencies(db)}
            second = run_watch(raw_dir, client=client, idle_s=1.0, **opts)
    finally:
        cluster.close()

    # every exposure processed or rejected with its reason
    rows = {r.expnum: r for r in second.latencies}
    assert {e: rows[e].role for e in (t1, u1, u2)} == dict.fromkeys((t1, u1, u2), "template")
    assert rows[s1].role == rows[s2].role == "search"
    assert all(rows[e].status == "done" for e in (t1, u1, s1, s2)), rows
    assert rows[u2].status == "failed" and rows[u2].n_failed == 1
    assert bad_ccd in rows[u2].reason and "3 matched stars" in rows[u2].reason
    assert any(ln.startswith(f"  FAILED {bad_ccd}: AstrometryError") for ln in lines)
    assert rows[zero].status == rows[bad].status == "rejected"
    assert "calibration" in rows[zero].reason and "zero" in rows[zero].reason
    assert rows[bad].reason
    for e in (s1, s2):
        r = rows[e]
        assert r.landed_at <= r.ingested_at <= r.se_done_at <= r.candidates_at
        assert r.n_candidates == 3  # one search CCD, 3 candidates from the stand-in diff
    # the first session stopped after two exposures with work left; the second finished it
    # without running any task again
    assert first.stop_reason == "max_exposures" and len(first.processed) == 2
    assert any(mid.get(e) is None or mid[e].status != "done" for e in (u1, u2, s2))
    assert second.stop_reason == "idle" and not set(second.processed) & set(first.processed)
    starts = [ln.split() for ln in (out / "ran.txt").read_text().splitlines()]
    ids = [s[0] for s in starts if s[0] != bad_ccd]  # a failed task is tried again on resume
    assert len(ids) == len(set(ids)), "a task ran twice"
    assert set(ids) >= {f"diff-{s1}-28", f"diff-{s2}-28", f"se-{s1}-28", f"expcalib-{u2}"}
    assert not (set(first.task_starts) & set(second.task_starts)) - {bad_ccd}
    assert "done" in (first.task_status.get(f"expcalib-{u2}"),
                      second.task_status.get(f"expcalib-{u2}"))  # calibrated without the failed CCD
    # search first: once s1 was ingested, no task of the unneeded templates started before
    # s1's difference imaging did, although their work was queued (but the one already handed
    # to the single worker while s1 was being planned)
    start = {tid: float(t) for tid, t in starts}
    planned = rows[s1].ingested_at
    s1_diff = start[f"diff-{s1}-28"]
    background = [t for tid, t in start.items()
                  if tid.split("-")[1] in (str(u1), str(u2))]
    assert any(t > s1_diff for t in background), "the template work was not queued"
    assert len([t for t in background if planned < t < s1_diff]) <= 1
    # the needed template ran before the unneeded ones that were still queued
    t1_tasks = [t for tid, t in start.items() if tid.split("-")[1] == str(t1)]
    assert max(t1_tasks) < max(background)
    # the live lines and the report
    assert any(ln.startswith(f"{s1} search done:") and "candidates in DB +" in ln
               for ln in lines)
    assert any(ln.startswith(f"rejected DECam_{zero:08d}.fits.fz") for ln in lines)
    page = second.report_path.read_text()
    assert "<svg" in page and f"<td>{s2}</td>" in page and "p50" in page
    pct = second.percentiles()
    assert pct["n"] == 2 and 0 < pct["p50"] <= pct["max"]


def test_sigterm_stops_the_service_after_the_running_task(tmp_path, workflow_sim):
    """SIGTERM (as SIGINT) ends the service cleanly: the running task finishes, no new one
    starts, and the handlers are put back."""
    import os
    import signal

    from desgw.workflow.watch import run_watch

    root, truth = workflow_sim
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    (t1,) = truth.template_expnums
    shutil.copyfile(truth.raw_path(t1), raw_dir / truth.raw_path(t1).name)
    out = tmp_path / "out"
    out.mkdir()
    settings = Settings(raw_dir=raw_dir, calib_dir=root / "calib", refcat_dir=root / "refcat",
                        out_root=out, db_url=None)
    before = signal.getsignal(signal.SIGTERM)
    ran = out / "ran.txt"

    def send_when_running():
        while not ran.is_file():
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=send_when_running, daemon=True)
    sender.start()
    lines: list[str] = []
    summary = run_watch(raw_dir, settings=settings, scheduler="single", search_nite=99991231,
                        runners=RUNNERS, poll_s=0.05, settle_s=0.1, echo=lines.append)
    sender.join(5)
    assert summary.stop_reason == "signal"
    assert any(ln.startswith(f"signal {int(signal.SIGTERM)}: stopping") for ln in lines)
    n_ran = len(ran.read_text().splitlines())
    n_tasks = len(truth.ccdnums(t1)) + 1
    assert 1 <= n_ran < n_tasks  # stopped part-way, after a whole task
    assert all(v == "done" for v in summary.task_status.values())
    assert len(summary.task_status) == n_ran
    assert signal.getsignal(signal.SIGTERM) is before
    assert (out / "desgw.sqlite").is_file() and summary.processed == ()


def test_watch_cli_rejects_a_bad_file_and_stops_when_idle(tmp_path, clean_env):
    from click.testing import CliRunner

    from desgw.cli import main

    raw = tmp_path / "raw"
    raw.mkdir()
    fits.PrimaryHDU(np.zeros((4, 4), np.int16)).writeto(raw / "DECam_00000042.fits")
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["watch", str(raw), "--scheduler", "single", "--poll", "0.05",
                                    "--settle", "0.05", "--idle", "0.5", "--out", str(out),
                                    "--calib-dir", str(tmp_path), "--refcat", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "rejected DECam_00000042.fits" in res.output and "EXPNUM" in res.output
    assert "stopped (idle)" in res.output
    page = (out / "watch_report" / "index.html").read_text()
    assert "<td>42</td>" in page and "rejected" in page


def test_worker_preload_imports_the_processing_modules():
    import sys

    from desgw.workflow.watch import PRELOAD_MODULES, _preload

    assert _preload() == []
    assert all(name in sys.modules for name in PRELOAD_MODULES)
