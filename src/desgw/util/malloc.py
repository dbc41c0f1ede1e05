"""Keep freed memory in a long-lived worker process for the next CCD (glibc ``mallopt``).

Why
---
A CCD task allocates and frees hundreds of arrays of 0.1-64 MiB (image planes, FFT tiles,
filter stacks). glibc serves an allocation above its *mmap threshold* with a fresh ``mmap``,
and every page of it is zero-filled by the kernel on first touch, the next allocation of the
same size again. glibc raises that threshold by itself as large blocks are freed (up to
32 MiB), but setting any ``MALLOC_*`` tunable turns that adaptation off, and Dask's nanny
starts every worker with ``MALLOC_TRIM_THRESHOLD_=65536`` (its ``distributed.nanny.
pre-spawn-environ``): the threshold then stays at 128 KiB and a worker page-faults its whole
working set on every CCD.

Measured (``difference_ccd`` of a search CCD against 4 template CCDs, one core, in a thread
as a Dask task runs, environment as a Dask worker's, best of 3, load 6-8): 4.26 and 4.45
CPU-s with the worker's settings, 3.36 and 3.15 after :func:`keep_freed_memory`; system
time 5.9 -> 1.3-1.4 s. Peak RSS 1.67 -> 1.93 GB, and the freed memory (~2 GB) stays with
the process until it exits instead of going back to the system.

:func:`keep_freed_memory` sets a 64 MiB mmap threshold (every float32 CCD plane comes from
the heap and is reused) and a 256 MiB trim threshold. It acts once per process; on a C
library without ``mallopt`` (not glibc: macOS, musl) it does nothing. The environment
variable ``DESGW_KEEP_FREED_MEMORY=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_freed_memory"]

log = logging.getLogger(__name__)

#: Allocations at or below this size (bytes) come from the heap and are reused once freed.
MMAP_THRESHOLD: int = 64 << 20
#: Free memory at the top of the heap (bytes) kept instead of being returned to the system.
TRIM_THRESHOLD: int = 256 << 20

_M_TRIM_THRESHOLD = -1  # glibc malloc.h
_M_MMAP_THRESHOLD = -3

_state: dict[str, bool] = {}


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for a long-lived worker (module docstring).

    Returns
    -------
    bool
        True when the thresholds are set (now or by an earlier call in this process); False
        when turned off by ``DESGW_KEEP_FREED_MEMORY=0``, not on Linux, or ``mallopt``
        refused or is not there.
    """
    if "done" in _state:
        return _state["done"]
    ok = False
    if os.environ.get("DESGW_KEEP_FREED_MEMORY", "1").strip() in ("0", "false", "no"):
        log.debug("keep_freed_memory: turned off by DESGW_KEEP_FREED_MEMORY")
    elif sys.platform.startswith("linux"):
        try:
            # the C library the interpreter is linked with (no ldconfig subprocess)
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError) as exc:
            log.debug("keep_freed_memory: no mallopt (%s)", exc)
        else:
            mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
            mallopt.restype = ctypes.c_int
            ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
                bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
            if not ok:
                log.debug("keep_freed_memory: mallopt refused the thresholds")
    _state["done"] = ok
    return ok
