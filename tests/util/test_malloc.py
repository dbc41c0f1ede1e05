"""keep_freed_memory: a Dask-like worker reuses freed planes instead of faulting in new pages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# In a child process started as Dask's nanny starts a worker (MALLOC_TRIM_THRESHOLD_ set),
# in a thread as a Dask task runs: allocate, touch and free a 48 MiB plane, then count the
# minor page faults of doing it again. Without the thresholds the second plane is a fresh
# mmap and every one of its pages faults; with them it comes back from the heap.
_CHILD = r"""
import json, resource, sys, threading
import numpy as np
from desgw.util.malloc import keep_freed_memory

out = {}
def work():
    if sys.argv[1] == "1":
        out["set"] = keep_freed_memory()
        out["again"] = keep_freed_memory()
    a = np.ones(12 << 20, np.float32)  # 48 MiB
    del a
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    b = np.ones(12 << 20, np.float32)
    out["faults"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    del b
t = threading.Thread(target=work)
t.start()
t.join()
print(json.dumps(out))
"""


def _child(call: bool) -> dict:
    src = Path(__file__).resolve().parents[2] / "src"
    # NUMPY_MADVISE_HUGEPAGE=0: 4 KiB pages, so that a fault is a page, not 2 MiB
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536", "NUMPY_MADVISE_HUGEPAGE": "0",
           "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    env.pop("DESGW_KEEP_FREED_MEMORY", None)
    res = subprocess.run([sys.executable, "-c", _CHILD, "1" if call else "0"], env=env,
                         capture_output=True, text=True, check=True, timeout=60)
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt only")
def test_freed_plane_is_reused_without_page_faults() -> None:
    before = _child(call=False)
    after = _child(call=True)
    assert after["set"] is True and after["again"] is True
    # 48 MiB is 12288 pages of 4 KiB
    assert before["faults"] > 10000
    assert after["faults"] < 0.01 * before["faults"]


def test_turned_off_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import desgw.util.malloc as m

    monkeypatch.setattr(m, "_state", {})
    monkeypatch.setenv("DESGW_KEEP_FREED_MEMORY", "0")
    assert m.keep_freed_memory() is False
    assert m.keep_freed_memory() is False  # remembered for the process
