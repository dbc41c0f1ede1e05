"""Four processes adding detections to one database at the same time: no row lost, one
candidate per source (SQLite file always; PostgreSQL when DESGW_TEST_PG_URL is set)."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import sys
import time

import numpy as np

from desgw.db import connect, get_candidates, get_detections

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # the spawned children must import the worker module
    sys.path.insert(0, HERE)

import db_concurrency_worker as worker_mod  # noqa: E402

N_WORKERS = 4


def test_concurrent_writers(db_url):
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    results = ctx.Queue()
    procs = [ctx.Process(target=worker_mod.run_worker, args=(db_url, w, start, results))
             for w in range(N_WORKERS)]
    for p in procs:
        p.start()
    start.set()
    returned = {}
    deadline = time.monotonic() + 120.0
    try:
        while len(returned) < N_WORKERS:
            try:
                w, ids = results.get(timeout=0.5)
                returned[w] = ids
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
    assert [p.exitcode for p in procs] == [0] * N_WORKERS

    db = connect(db_url)
    detections = get_detections(db)
    per_worker = worker_mod.N_SHARED + worker_mod.N_UNIQUE
    assert len(detections) == N_WORKERS * per_worker == 800
    all_ids = sorted(i for ids in returned.values() for i in ids)
    assert all_ids == sorted(d.id for d in detections)  # every returned id stored, no extras

    candidates = {c.id: c for c in get_candidates(db)}
    assert len(candidates) == worker_mod.N_SHARED + N_WORKERS * worker_mod.N_UNIQUE == 500
    by_cand: dict[int, list] = {}
    for d in detections:
        by_cand.setdefault(d.candidate_id, []).append(d)
    assert set(by_cand) == set(candidates)
    shared = [c for c in candidates.values() if c.n_detections == N_WORKERS]
    single = [c for c in candidates.values() if c.n_detections == 1]
    assert len(shared) == worker_mod.N_SHARED and len(single) == N_WORKERS * worker_mod.N_UNIQUE
    for c in shared:
        members = by_cand[c.id]
        assert sorted(d.expnum for d in members) == [1000, 1001, 1002, 1003]
        assert c.n_nights == N_WORKERS  # each worker's exposure is on its own night
        assert c.first_mjd == 58574.1 and c.last_mjd == 58577.1
        assert abs(c.max_real_bogus - 0.3) < 1e-12
        # the mean of the four symmetric 0.3" jitters is the unjittered position
        k = round((c.ra - 30.0) / worker_mod.STEP_DEG)
        assert abs(c.dec - worker_mod.DEC0) * 3600 < 1e-6
        assert abs(c.ra - (30.0 + k * worker_mod.STEP_DEG)) * 3600 < 1e-6
    for c in candidates.values():
        assert c.n_detections == len(by_cand[c.id])
    # no two candidates within the association radius
    ra = np.radians([c.ra for c in candidates.values()])
    dec = np.radians([c.dec for c in candidates.values()])
    xyz = np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=1)
    cosines = xyz @ xyz.T
    np.fill_diagonal(cosines, -1.0)
    assert np.degrees(np.arccos(np.clip(cosines.max(), -1, 1))) * 3600 > 5.0
    db.close()
