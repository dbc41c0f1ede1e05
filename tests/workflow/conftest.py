"""Fixtures shared by the workflow tests."""

from __future__ import annotations

import json
import sys
import types

import pytest

from desgw.io.completion import diff_done_path


@pytest.fixture(scope="session")
def workflow_sim(build_once):
    """``simulate_night(seed=5, ccds=[28], n_templates=1)`` and its Gaia store (``ROOT/refcat``),
    made once per test run: ``(root, truth)``."""
    from desgw.refcat import ingest_gaia
    from desgw.sim import load_truth
    from desgw.sim.night import simulate_night

    def build(root):
        simulate_night(root, seed=5, band="r", ccds=[28], n_templates=1, n_search=1)
        ingest_gaia([root / "gaia" / "gaia_sim.csv"], root / "refcat", order=8)

    root = build_once("workflow_sim_seed5", build)
    return root, load_truth(root)


@pytest.fixture
def fake_diff(monkeypatch):
    """A stand-in for desgw.workflow.diff_ccd (same names and fields) recording its tasks; it
    writes the star/veto lists and the completion marker where the real one does."""
    from desgw.io.star_lists import snstar_name, snveto_name
    from desgw.workflow.diff_ccd import DiffSummary

    seen = []

    def run_diff_ccd(task, *, search=None, before_marker=None):
        seen.append(task)
        if before_marker is not None:  # a fused search CCD writes its SE products here
            before_marker()
        args = {"band": task.band, "nite": task.nite, "rnum": task.rnum, "pnum": task.pnum,
                "cache": task.cache, "schema": task.schema, "season": task.season}
        done = diff_done_path(task.settings.out_root, task.search_expnum, task.ccdnum, args)
        done.parent.mkdir(parents=True, exist_ok=True)
        for name in (snstar_name, snveto_name):
            (done.parent / name(task.search_expnum, task.ccdnum, task.rnum, task.pnum)
             ).write_text(f"# {name.__name__}\n")
        done.write_text(json.dumps({"ok": True, "template_expnums":
                                    sorted(task.template_expnums)}))
        return DiffSummary(ccdnum=task.ccdnum, ok=True, n_candidates=3, n_fakes=10,
                           n_fakes_recovered=9, timings={"total": 0.01}, skipped=False,
                           outdir=str(done.parent))

    module = types.ModuleType("desgw.workflow.diff_ccd")
    module.DiffTask = types.SimpleNamespace
    module.DiffSummary = DiffSummary
    module.run_diff_ccd = run_diff_ccd
    monkeypatch.setitem(sys.modules, "desgw.workflow.diff_ccd", module)
    return seen


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ("DESGW_RAW_DIR", "DESGW_CALIB_DIR", "DESGW_REFCAT", "DESGW_OUT",
                 "DESGW_DB_URL", "DESGW_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
