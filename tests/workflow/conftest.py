"""Fixtures shared by the workflow tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def workflow_sim(tmp_path_factory):
    """``simulate_night(seed=5, ccds=[28], n_templates=1)`` and its Gaia store (``ROOT/refcat``),
    made once per test session: ``(root, truth)``."""
    from desgw.refcat import ingest_gaia
    from desgw.sim import load_truth
    from desgw.sim.night import simulate_night

    root = tmp_path_factory.getbasetemp() / "workflow_sim_seed5"
    simulate_night(root, seed=5, band="r", ccds=[28], n_templates=1, n_search=1)
    ingest_gaia([root / "gaia" / "gaia_sim.csv"], root / "refcat", order=8)
    return root, load_truth(root)
