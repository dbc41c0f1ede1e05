"""Worker for test_db_concurrency: one process adding detections to a shared database."""

from __future__ import annotations

import math

N_SHARED = 100      # positions every worker detects (one candidate each, 4 detections)
N_UNIQUE = 100      # positions only this worker detects
N_BATCHES = 10      # add_detections calls per worker (interleaved with the other workers)
DEC0 = -10.0
STEP_DEG = 0.002    # 7.2 arcsec between positions


def shared_position(k: int, worker: int) -> tuple[float, float]:
    """Shared position k, jittered by 0.3 arcsec in a direction that depends on the worker."""
    angle = 2.0 * math.pi * worker / 4.0
    east, north = 0.3 * math.cos(angle) / 3600.0, 0.3 * math.sin(angle) / 3600.0
    return 30.0 + k * STEP_DEG + east / math.cos(math.radians(DEC0)), DEC0 + north


def unique_position(j: int, worker: int) -> tuple[float, float]:
    return 31.0 + worker * 0.5 + j * STEP_DEG, DEC0


def run_worker(url: str, worker: int, start, results) -> None:
    from types import SimpleNamespace

    from desgw.db import NewDetection, add_detections, connect, register_exposure

    db = connect(url)  # several processes may create the schema at the same moment
    expnum = 1000 + worker
    register_exposure(db, SimpleNamespace(
        expnum=expnum, nite=20190401 + worker, mjd_obs=58574.1 + worker, band="r",
        exptime=90.0, ra_deg=30.5, dec_deg=DEC0, object="hex", propid="p", obstype="object",
        airmass=1.1), None)
    rows = []
    for k in range(N_SHARED):
        rows.append(NewDetection(*shared_position(k, worker), flux=100.0, fluxerr=10.0,
                                 snr=10.0, real_bogus=0.1 * worker))
        rows.append(NewDetection(*unique_position(k, worker), flux=50.0, fluxerr=10.0,
                                 snr=5.0))
    start.wait(60)
    per = len(rows) // N_BATCHES
    ids: list[int] = []
    for b in range(N_BATCHES):
        ids.extend(add_detections(db, expnum, 1 + worker, rows[b * per:(b + 1) * per]))
    db.close()
    results.put((worker, ids))
