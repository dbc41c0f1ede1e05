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


# ----------------------------------------------------------------------------- replace_ccd_results
def register_two(db) -> None:
    """Exposures 2000 (search, CCD 5) and 1990 (template), on two nights."""
    from types import SimpleNamespace

    from desgw.db import register_exposure

    for expnum, nite, mjd in ((1990, 20190301, 58543.1), (2000, 20190401, 58574.1)):
        register_exposure(db, SimpleNamespace(
            expnum=expnum, nite=nite, mjd_obs=mjd, band="r", exptime=90.0, ra_deg=30.5,
            dec_deg=DEC0, object="hex", propid="p", obstype="object", airmass=1.1), None)


def ccd_results(variant: int = 0):
    """(templates_used, fakes, detections) of search CCD 2000/5: 60 real detections and 40
    fakes of which the first 30 are detected; ``variant`` shifts fluxes (a rerun that
    differs slightly)."""
    from desgw.db import NewDetection, NewFake, TemplateUse

    uses = [TemplateUse(2000, 5, 1990, 4), TemplateUse(2000, 5, 1990, 5)]
    fakes = [NewFake(ra=32.0 + k * STEP_DEG, dec=DEC0, mag=21.0 + 0.05 * k, host=k % 2 == 0)
             for k in range(40)]
    dets = [NewDetection(30.0 + k * STEP_DEG, DEC0, flux=100.0 + k + variant, fluxerr=10.0,
                         snr=10.0 + k, real_bogus=0.5) for k in range(60)]
    dets += [NewDetection(32.0 + k * STEP_DEG, DEC0, flux=80.0, fluxerr=10.0, snr=8.0,
                          real_bogus=0.9, is_fake=True, fake_id=k) for k in range(30)]
    return uses, fakes, dets


def run_replace_worker(url: str, worker: int, start, results) -> None:
    from desgw.db import connect, replace_ccd_results

    db = connect(url)
    uses, fakes, dets = ccd_results()
    start.wait(60)
    for _ in range(3):
        replace_ccd_results(db, 2000, 5, templates_used=uses, fakes=fakes, detections=dets)
    db.close()
    results.put((worker, []))
