"""Keep a long-lived worker's modules out of Python's full garbage collections (``gc.freeze``).

Why
---
Python's cyclic garbage collector runs a *full* (generation 2) collection from time to time,
and each one walks every container object the process tracks. A worker process that has run
one CCD holds ~270,000 of them, nearly all from the modules it imported (astropy, numba,
sqlalchemy, dask, desgw) and none of them ever garbage. Measured on the fused SE + difference
task of a simulated search CCD, one core, the same CCDs repeated in one process (load ~15):
a full collection took 0.4-0.54 s, and one came every ~4 CCD tasks (~0.1 CPU-s per CCD);
after ``gc.collect(); gc.freeze()`` following the first task, the tracked objects outside the
permanent generation were ~1,400 and a full collection took 0.03 s.

:func:`freeze_after_first_task` collects the garbage once (so no unreachable cycle is made
permanent) and moves every surviving object to the permanent generation, the first time a
task of each kind ends in the process (a task of a new kind imports new modules). Objects
created later are collected as before. The engine calls it in Dask worker processes only
(:func:`desgw.engine.tasks.execute_task`); a short-lived CLI process or a test session is
left alone. ``DESGW_GC_FREEZE=0`` turns it off.
"""

from __future__ import annotations

import gc
import logging
import os

__all__ = ["freeze_after_first_task"]

log = logging.getLogger(__name__)

_frozen_kinds: set[str] = set()


def freeze_after_first_task(kind: str) -> bool:
    """Collect and freeze the process's objects after its first task of ``kind``.

    Parameters
    ----------
    kind : str
        Task kind (``se``, ``diff``, ``expcalib``...).

    Returns
    -------
    bool
        True when this call collected and froze; False when a task of ``kind`` already did in
        this process, or ``DESGW_GC_FREEZE=0``.
    """
    if kind in _frozen_kinds or os.environ.get("DESGW_GC_FREEZE", "1") == "0":
        return False
    _frozen_kinds.add(kind)
    gc.collect()
    gc.freeze()
    log.debug("after the first %s task: %d objects in the permanent generation", kind,
              gc.get_freeze_count())
    return True
