"""Keep a long-lived worker's modules out of Python's full garbage collections (``gc.freeze``).

Why
---
Python's cyclic garbage collector runs a *full* (generation 2) collection from time to time,
and each one walks every container object the process tracks. A worker process that has run
one CCD holds ~300,000 of them, nearly all from the modules it imported (astropy, numba,
sqlalchemy, dask, desgw) and none of them ever garbage.

Measured (one Dask worker process kept for 8 runs of a 2-CCD simulated search exposure: 16
fused SE + difference tasks and 8 exposure calibrations; gc callbacks timing each collection;
load ~5): without freezing, 8 full collections took 1.54 s (0.19 s each; 348,000 tracked
objects at the end); with :func:`freeze_after_first_task`, 10 took 1.05 s (0.1 s each; 43,500
objects outside the permanent generation at the end): ~0.03 s per CCD less. Full collections
come more often once the modules are frozen (Python starts one only when the objects that
survived since the last one exceed a quarter of those it keeps, and frozen objects do not
count), so the gain is less than the per-collection cost suggests. In one process without Dask
(the same CCDs repeated) a full collection took 0.4-0.54 s before and 0.03 s after.

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
