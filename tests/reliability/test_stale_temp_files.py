"""Issue 10 case 7: temporary files of killed writers are removed at the start of a run (they
stayed forever); those of running writers, or too recent to judge, are kept."""

from __future__ import annotations

import os
import subprocess
import sys

from desgw.engine.graph import Task, TaskGraph
from desgw.io.atomic import clean_stale_temp_files, temp_name_for
from desgw.io.completion import exposure_outdir
from desgw.io.settings import load_settings
from desgw.workflow.tasks import run_pipeline

ARGS = {"band": "r", "nite": 20190301, "rnum": 2, "pnum": 3, "cache": "scratch",
        "schema": "gw"}


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _temp(final, pid, age_s):
    tmp = temp_name_for(final)
    tmp = tmp.with_name(tmp.name.replace(f"tmp{os.getpid()}", f"tmp{pid}"))
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(b"half written")
    t = tmp.stat().st_mtime - age_s
    os.utime(tmp, (t, t))
    return tmp


def test_clean_stale_temp_files(tmp_path):
    dead = _dead_pid()
    stale = _temp(tmp_path / "dp5" / "r_28" / "D1_diff.fits.fz", dead, 3600)
    recent = _temp(tmp_path / "D1_immask.fits.fz", dead, 10)
    alive = _temp(tmp_path / "D1_fullcat.fits", os.getpid(), 3600)
    other = tmp_path / ".hidden.tmpnot-ours.fits"
    other.write_text("x")
    assert clean_stale_temp_files(tmp_path) == [stale]
    assert not stale.exists() and recent.exists() and alive.exists() and other.exists()


def test_the_engine_cleans_the_exposure_folders_first(tmp_path):
    settings = load_settings(raw_dir=tmp_path, calib_dir=tmp_path, refcat_dir=tmp_path,
                             out_root=tmp_path / "out", environ={}, cwd=tmp_path)
    d = exposure_outdir(settings.out_root, 770003, ARGS)
    stale = _temp(d / "D00770003_r_28_r2p3_immask.fits.fz", _dead_pid(), 3600)
    graph = TaskGraph((Task("se-770003-28", "se", 770003, 28, (), ARGS),), {})
    run_pipeline(graph, settings=settings, scheduler="single", progress=False, retries=0)
    assert not stale.exists()
