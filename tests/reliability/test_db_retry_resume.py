"""Issue 10 case 2: a database write that meets a locked (or unreachable) database is tried
again with backoff for ``--db-timeout`` seconds instead of being lost, the timeout reaches the
tasks (they waited 60 s whatever --db-timeout said), and resume checks the database as well as
the files: products whose rows are missing (a failed write, or products made without a
database) are not skipped."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from types import SimpleNamespace

import pytest

from desgw.db import (
    DatabaseConnectionError,
    TemplateUse,
    Zeropoint,
    connect,
    get_templates_used,
    record_ccd_product,
    record_zeropoints,
    register_exposure,
    replace_ccd_results,
    retry_database,
)
from desgw.db.records import CCDProduct
from desgw.engine.graph import Task
from desgw.engine.run import task_complete
from desgw.io.completion import diff_done_path, exposure_outdir, se_paths
from desgw.io.naming import allzp_csv_name, qc_exposure_name, zero_csv_name
from desgw.io.settings import load_settings

EXPNUM, TEMPLATE = 2000, 1990
ARGS = {"band": "r", "nite": 20190401, "rnum": 1, "pnum": 1, "cache": "scratch",
        "schema": "gw"}


def _register(db):
    for e, nite, mjd in ((TEMPLATE, 20190301, 58543.1), (EXPNUM, 20190401, 58574.1)):
        register_exposure(db, SimpleNamespace(
            expnum=e, nite=nite, mjd_obs=mjd, band="r", exptime=90.0, ra_deg=30.0,
            dec_deg=-10.0, object="hex", propid="p", obstype="object", airmass=1.1), None)


def _hold_write_lock(path, seconds, ready):
    con = sqlite3.connect(path, timeout=30, isolation_level=None)
    con.execute("BEGIN IMMEDIATE")
    ready.set()
    time.sleep(seconds)
    con.execute("COMMIT")
    con.close()


def test_locked_write_is_retried_until_it_succeeds(tmp_path):
    path = tmp_path / "desgw.sqlite"
    url = f"sqlite:///{path}"
    with connect(url) as db:
        _register(db)
    ready = threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(path, 2.0, ready))
    holder.start()
    ready.wait(10)
    tries = []

    def write():
        tries.append(time.monotonic())
        with connect(url, busy_timeout_s=0.2) as db:
            replace_ccd_results(db, EXPNUM, 5, templates_used=[TemplateUse(EXPNUM, 5, TEMPLATE, 4)])

    retry_database(write, timeout_s=30.0, first_delay_s=0.1)
    holder.join()
    assert len(tries) >= 2  # the first try met the lock and was not the last
    with connect(url) as db:
        assert len(get_templates_used(db, EXPNUM)) == 1


def test_gives_up_after_the_timeout_not_after_60_s(tmp_path):
    path = tmp_path / "desgw.sqlite"
    url = f"sqlite:///{path}"
    with connect(url) as db:
        _register(db)
    ready = threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(path, 8.0, ready))
    holder.start()
    ready.wait(10)
    t0 = time.monotonic()
    try:
        with pytest.raises(DatabaseConnectionError, match="locked"):
            retry_database(lambda: _write_zeropoint(url, busy=0.2), timeout_s=1.0)
        elapsed = time.monotonic() - t0
    finally:
        holder.join()
    assert 1.0 <= elapsed < 7.0  # about --db-timeout, and before the lock was released


def _write_zeropoint(url, busy):
    with connect(url, busy_timeout_s=busy) as db:
        record_zeropoints(db, [Zeropoint(EXPNUM, 0, 1, 1, 31.0, 0.01, 100, 0)])


def _fake_calibration_files(out, ccds):
    d = exposure_outdir(out, EXPNUM, ARGS)
    for c in ccds:
        qc = se_paths(out, EXPNUM, c, ARGS).qc
        qc.parent.mkdir(parents=True, exist_ok=True)
        qc.write_text("{}")
        os.utime(qc, (1e9, 1e9))
        (d / zero_csv_name(EXPNUM, c, 1, 1)).write_text("zp\n")
    (d / allzp_csv_name(EXPNUM, 1, 1)).write_text("zp\n")
    (d / qc_exposure_name(EXPNUM, "r", 1, 1)).write_text("{}")


def test_resume_redoes_tasks_whose_rows_are_missing(tmp_path):
    url = f"sqlite:///{tmp_path / 'desgw.sqlite'}"
    settings = load_settings(raw_dir=tmp_path, calib_dir=tmp_path, refcat_dir=tmp_path,
                             out_root=tmp_path / "out", db_url=url, environ={}, cwd=tmp_path)
    calib = Task(f"expcalib-{EXPNUM}", "expcalib", EXPNUM, None, (), {**ARGS, "ccds": [5, 6]})
    diff_args = {**ARGS, "season": 3, "version": "v", "templates": [TEMPLATE],
                 "template_ccds": {str(TEMPLATE): [4]}}
    diff = Task(f"diff-{EXPNUM}-5", "diff", EXPNUM, 5, (), diff_args)
    _fake_calibration_files(settings.out_root, [5, 6])
    done = diff_done_path(settings.out_root, EXPNUM, 5, diff_args)
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps({"ok": True, "templates_requested": [TEMPLATE]}))

    with connect(url) as db:
        _register(db)
        # the files alone (what resume checked) say done
        assert task_complete(calib, settings) and task_complete(diff, settings)
        # the rows are missing (write failed, or made without --db-url): run again
        assert not task_complete(calib, settings, db)
        assert not task_complete(diff, settings, db)
        for c in (5, 6):
            record_ccd_product(db, CCDProduct(expnum=EXPNUM, ccdnum=c, rnum=1, pnum=1,
                                              status="done"))
        assert not task_complete(calib, settings, db)  # still no exposure zeropoint
        record_zeropoints(db, [Zeropoint(EXPNUM, 0, 1, 1, 31.0, 0.01, 100, 0)])
        assert task_complete(calib, settings, db)
        replace_ccd_results(db, EXPNUM, 5, templates_used=[TemplateUse(EXPNUM, 5, TEMPLATE, 4)])
        assert task_complete(diff, settings, db)


def test_diff_ccd_redoes_a_marked_ccd_without_rows(tmp_path):
    from desgw.workflow.diff_ccd import DiffTask, _db_has_records

    url = f"sqlite:///{tmp_path / 'desgw.sqlite'}"
    settings = load_settings(raw_dir=tmp_path, calib_dir=tmp_path, refcat_dir=tmp_path,
                             out_root=tmp_path / "out", db_url=url, environ={}, cwd=tmp_path)
    task = DiffTask(search_expnum=EXPNUM, ccdnum=5, template_expnums=(TEMPLATE,),
                    settings=settings, rnum=1, pnum=1, season=3, cache="scratch", schema="gw",
                    version="v", band="r", nite=20190401)
    with connect(url) as db:
        _register(db)
    assert not _db_has_records(task)
    with connect(url) as db:
        replace_ccd_results(db, EXPNUM, 5, templates_used=[TemplateUse(EXPNUM, 5, TEMPLATE, 4)])
    assert _db_has_records(task)
    no_db = load_settings(raw_dir=tmp_path, calib_dir=tmp_path, refcat_dir=tmp_path,
                          out_root=tmp_path / "out", environ={}, cwd=tmp_path)
    assert _db_has_records(DiffTask(**{**task.__dict__, "settings": no_db}))
