"""replace_ccd_results: one search CCD's difference-imaging rows stored idempotently (a rerun,
a slightly different rerun, two processes at once) next to other exposures' rows that share
candidates (SQLite always; PostgreSQL when DESGW_TEST_PG_URL is set)."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import sys
import time

import pytest

from desgw.db import (
    NewDetection,
    add_detections,
    connect,
    get_candidates,
    get_detections,
    get_fakes,
    get_templates_used,
    replace_ccd_results,
)

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import db_concurrency_worker as w  # noqa: E402  (found through the sys.path line above)


def snapshot(db):
    """The database's science content without the ids (which differ between runs)."""
    fakes = {f.id: f for f in get_fakes(db, 2000)}
    dets = get_detections(db)
    det_by_id = {d.id: d for d in dets}
    return {
        "detections": sorted((d.expnum, d.ccdnum, round(d.ra, 9), round(d.dec, 9), d.flux,
                              d.is_fake, None if d.fake_id is None else
                              round(fakes[d.fake_id].ra, 9)) for d in dets),
        "fakes": sorted((round(f.ra, 9), f.mag, f.host, f.recovered,
                         None if f.recovered_detection_id is None
                         else round(det_by_id[f.recovered_detection_id].ra, 9))
                        for f in fakes.values()),
        "candidates": sorted((round(c.ra, 9), round(c.dec, 9), c.n_detections, c.n_nights,
                              c.first_mjd, c.last_mjd, c.max_real_bogus, c.is_fake)
                             for c in get_candidates(db)),
        "templates": sorted((u.search_ccdnum, u.template_expnum, u.template_ccdnum)
                            for u in get_templates_used(db, 2000)),
    }


def _other_exposure(db):
    """Exposure 1990 CCD 4 detected the first 10 real sources of 2000/5 (shared candidates)."""
    add_detections(db, 1990, 4, [NewDetection(30.0 + k * w.STEP_DEG, w.DEC0, flux=90.0,
                                              fluxerr=10.0, snr=9.0, real_bogus=0.7)
                                 for k in range(10)])


def test_rerun_replaces_not_duplicates(db):
    w.register_two(db)
    _other_exposure(db)
    uses, fakes, dets = w.ccd_results()
    fake_ids, det_ids = replace_ccd_results(db, 2000, 5, templates_used=uses, fakes=fakes,
                                            detections=dets)
    assert len(fake_ids) == 40 and len(det_ids) == 90
    once = snapshot(db)
    assert len(once["detections"]) == 100 and len(once["fakes"]) == 40
    assert sum(f[3] for f in once["fakes"]) == 30
    cands = once["candidates"]
    assert len(cands) == 90 and sum(c[2] == 2 and c[3] == 2 for c in cands) == 10
    for _ in range(2):
        replace_ccd_results(db, 2000, 5, templates_used=uses, fakes=fakes, detections=dets)
    assert snapshot(db) == once

    # a different rerun (fewer sources) drops what it no longer finds, candidates included
    replace_ccd_results(db, 2000, 5, templates_used=uses[:1], fakes=fakes[:20],
                        detections=dets[:5] + dets[60:70])
    less = snapshot(db)
    assert len(less["detections"]) == 10 + 15 and len(less["fakes"]) == 20
    assert len(less["templates"]) == 1
    # 5 shared sources keep 2 detections, 5 keep the other exposure's only, 10 fakes detected
    assert sorted(c[2] for c in less["candidates"]) == [1] * 15 + [2] * 5
    assert sum(c[7] for c in less["candidates"]) == 10
    replace_ccd_results(db, 2000, 5, templates_used=uses, fakes=fakes, detections=dets)
    assert snapshot(db) == once


def test_bad_fake_index_changes_nothing(db):
    w.register_two(db)
    uses, fakes, dets = w.ccd_results()
    replace_ccd_results(db, 2000, 5, templates_used=uses, fakes=fakes, detections=dets)
    once = snapshot(db)
    bad = [*dets, NewDetection(33.0, w.DEC0, flux=1.0, fluxerr=1.0, snr=1.0, is_fake=True,
                               fake_id=40)]
    with pytest.raises(ValueError, match="fake index 40 out of range"):
        replace_ccd_results(db, 2000, 5, templates_used=uses, fakes=fakes, detections=bad)
    assert snapshot(db) == once


def test_two_processes_on_one_ccd(db_url):
    """Two processes storing the same CCD three times each, at once: the rows of one run."""
    db = connect(db_url)
    w.register_two(db)
    uses, fakes, dets = w.ccd_results()
    replace_ccd_results(db, 2000, 5, templates_used=uses, fakes=fakes, detections=dets)
    once = snapshot(db)
    ctx = mp.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=w.run_replace_worker, args=(db_url, k, start, results))
             for k in range(2)]
    for p in procs:
        p.start()
    start.set()
    got, deadline = 0, time.monotonic() + 120.0
    try:
        while got < 2:
            try:
                results.get(timeout=0.5)
                got += 1
                continue
            except queue.Empty:
                pass
            codes = [p.exitcode for p in procs]
            if any(c not in (None, 0) for c in codes) or time.monotonic() > deadline:
                raise AssertionError(f"workers failed or hung; exit codes {codes}")
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    assert snapshot(db) == once
    db.close()


def test_replace_statement_count_does_not_grow_with_rows(db):
    """The touched candidates are read in one SELECT and updated in one batch: the SELECT and
    UPDATE statements of a call are as many for 270 detections as for 90 (a SELECT, an
    autoflush UPDATE and a flush per candidate, as before, gave ~2 per detection). INSERTs are
    left out of the count: SQLite's driver may insert row by row inside one batch."""
    from dataclasses import replace

    import sqlalchemy as sa

    from desgw.db import TemplateUse

    w.register_two(db)
    _other_exposure(db)
    counts = []

    def count(_conn, _cursor, statement, *_args):
        if not statement.lstrip().upper().startswith("INSERT"):
            counts[-1] += 1

    sa.event.listen(db.engine, "before_cursor_execute", count)
    try:
        for ccd, n_extra in ((5, 0), (6, 180)):  # two CCDs' first runs, apart on the sky
            _, fakes, dets = w.ccd_results()
            dets += [NewDetection(35.0 + k * w.STEP_DEG, w.DEC0, flux=50.0, fluxerr=10.0,
                                  snr=5.0, real_bogus=0.2) for k in range(n_extra)]
            if ccd == 6:
                fakes = [replace(f, dec=f.dec + 1.0) for f in fakes]
                dets = [replace(d, dec=d.dec + 1.0) for d in dets]
            counts.append(0)
            _, det_ids = replace_ccd_results(db, 2000, ccd, fakes=fakes, detections=dets,
                                             templates_used=[TemplateUse(2000, ccd, 1990, 4)])
            assert len(det_ids) == 90 + n_extra
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", count)
    # CCD 5's 90 detections: 10 on candidates of exposure 1990 (their own 10 included)
    assert len(get_candidates(db)) == 90 + 90 + 180
    assert counts[1] <= counts[0] + 5, counts
    assert counts[1] < 60, counts
