"""Single-epoch processing of a Community Pipeline (CP) InstCal exposure, CCD by CCD.

The CP counterpart of :func:`desgw.workflow.se_exposure.run_ccd_task`: a picklable
:class:`InstCalTask` per CCD, run by :func:`run_instcal_ccd_task` (a local loop, a process
pool or a Dask worker alike), which reads the CCD from the ``ooi``/``ood``/``oow`` triplet
(:func:`desgw.io.instcal.read_instcal`), queries the Gaia store around the CP WCS footprint at
the exposure epoch, runs :func:`desgw.se.process_instcal.process_instcal_ccd` and writes the
same products, with the same names, as a raw exposure's CCD (immask, fullcat, PSF model,
``_qc.json``). :func:`desgw.workflow.se_exposure.run_se_exposure` with ``instcal=True`` runs
the exposure-level steps (corners, calibration, QC, database) unchanged.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

from desgw.errors import DesgwInputError, describe_error
from desgw.io.product_paths import CCDProductPaths, ccd_product_paths

from .se_ccd import _write_products
from .se_qc import finished_ccd_summary
from .se_types import CCDSummary

__all__ = ["InstCalTask", "run_instcal_ccd_task"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InstCalTask:
    """One CCD of a CP InstCal exposure; picklable.

    Attributes
    ----------
    expnum, ccdnum : int
    band : str
    rnum, pnum : int
        Processing version of the products (``r{R}p{P}``).
    image_path : str
        The ``*_ooi_*`` file (mask and weight: the ``_ood_``/``_oow_`` names beside it).
    refcat_dir : str
        Gaia store.
    outdir : str
        Exposure product directory.
    config : SEConfig or None
    overwrite : bool
    """

    expnum: int
    ccdnum: int
    band: str
    rnum: int
    pnum: int
    image_path: str
    refcat_dir: str
    outdir: str
    config: Any = None
    overwrite: bool = False

    @property
    def paths(self) -> CCDProductPaths:
        """The CCD's product paths (the names of a raw exposure's products)."""
        return ccd_product_paths(self.outdir, self.expnum, self.band, self.ccdnum, self.rnum,
                                 self.pnum)


def run_instcal_ccd_task(task: InstCalTask) -> CCDSummary:
    """SE processing of one CP InstCal CCD, products written atomically; never raises for a
    CCD failure (the summary carries ``"Type: message"``). A CCD whose products exist is not
    redone unless ``task.overwrite``."""
    done = finished_ccd_summary(task.paths, task.ccdnum, overwrite=task.overwrite)
    if done is not None:
        return done
    from desgw.io.instcal import read_instcal
    from desgw.refcat import RefCatStore, mjd_to_jyear
    from desgw.se.process import SEConfig
    from desgw.se.process_instcal import process_instcal_ccd

    config = task.config if task.config is not None else SEConfig()
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    try:
        t0 = time.perf_counter()
        ccd = read_instcal(task.image_path, ccd=int(task.ccdnum))
        if ccd.expnum is not None and int(ccd.expnum) != int(task.expnum):
            raise DesgwInputError(task.image_path, 0, f"EXPNUM is {ccd.expnum}, expected "
                                  f"{task.expnum}")
        timings["read_instcal"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        ny, nx = ccd.shape
        ra, dec = ccd.wcs.all_pix2world(np.array([-0.5, nx - 0.5, nx - 0.5, -0.5]),
                                        np.array([-0.5, -0.5, ny - 0.5, ny - 0.5]), 0)
        refcat = RefCatStore(task.refcat_dir).query_footprint(
            np.asarray(ra) % 360.0, np.asarray(dec),
            margin_arcsec=float(config.refcat_margin_arcsec),
            epoch=float(mjd_to_jyear(ccd.mjd_obs)))
        timings["refcat"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = process_instcal_ccd(ccd, refcat, config=config)
        timings["process"] = time.perf_counter() - t0
        for key, value in dict(result.timings).items():
            timings.setdefault(str(key), float(value))
        return _write_products(task, result, config.hash(), timings, t_start)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - a failed CCD must not stop the others
        log.error("CP CCD %d of exposure %d failed: %s", task.ccdnum, task.expnum,
                  describe_error(exc))
        return CCDSummary(ccdnum=task.ccdnum, ok=False, error=exc,
                          error_traceback=traceback.format_exc(),
                          timings={**timings, "total": time.perf_counter() - t_start})
