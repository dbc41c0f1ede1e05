"""The shipped real/bogus model inside the difference imaging of a full simulated CCD (search
CCD 28 of the session's simulated night against its narrow-PSF template, SE products made by
the real pipeline), judged against the simulator's truth: fakes and simulated transients are
kept, and few bogus candidates that the star veto does not flag pass the threshold."""

from __future__ import annotations


import numpy as np
import pytest
from scipy.spatial import cKDTree

from desgw.diff.pipeline import DiffConfig, difference_ccd
from desgw.diff.pipeline_products import load_ccd_products
from desgw.diff.realbogus import load_model
from desgw.diff.starcat import make_star_catalog, make_veto_table
from desgw.sim.model import OBJECT_KINDS
from desgw.io.product_paths import ccd_product_paths, find_exposure_dir
from desgw.workflow.templates import ccd_corners_from_wcs

pytestmark = pytest.mark.slow

R, P, CCD = 1, 1, 28
NARROW = 797828  # the 0.89" template of sim_night (search 1.28")


@pytest.fixture(scope="module")
def result(sim_night, sim_night_se):
    _, truth = sim_night
    out_root = sim_night_se  # the SE products tests/diff/test_pipeline_sim.py uses too

    def load(e: int, c: int):
        p = ccd_product_paths(find_exposure_dir(out_root, e, R, P), e, "r", c, R, P)
        return load_ccd_products(p.immask, psfmodel=p.psfmodel, fullcat=p.fullcat, qc=p.qc)

    search = load(truth.search_expnums[0], CCD)
    templates = [load(NARROW, c) for c in truth.ccdnums(NARROW)]
    stars = make_star_catalog([t.catalog for t in templates],
                              ccd_footprint=ccd_corners_from_wcs(search.wcs),
                              zeropoints=[t.zp for t in templates])
    cfg = DiffConfig(require_template_qc=False, n_fakes=300)
    r = difference_ccd(search, templates, star_veto=make_veto_table(stars), config=cfg,
                       rng=np.random.default_rng(7))
    return r, truth


def test_shipped_model_keeps_reals_and_rejects_bogus(result):
    r, truth = result
    thr = load_model().threshold
    c = r.candidates
    rb = np.asarray(c["real_bogus"], float)
    assert np.all((rb >= 0) & (rb <= 1))
    snr = np.abs(np.asarray(c["snr"], float))
    fake = np.asarray(c["is_fake"], bool)
    veto = np.asarray(c["veto"], bool)
    objs = truth.objects_on_ccd(truth.search_expnums[0], CCD)
    kinds = np.asarray(objs["kind"])
    astro = np.isin(kinds, [OBJECT_KINDS[k] for k in ("transient", "variable", "moving")])
    tree = cKDTree(np.c_[np.asarray(objs["x"])[astro], np.asarray(objs["y"])[astro]])
    d, _ = tree.query(np.c_[np.asarray(c["x"]), np.asarray(c["y"])])
    real = fake | (d < 2.0)
    # fakes that are clearly detected pass the threshold (the 99 % point of the training)
    bright = fake & (snr > 10)
    assert bright.sum() >= 60
    assert np.mean(rb[bright] >= thr) >= 0.97
    # simulated transients detected with S/N > 10 pass too
    tr = ~fake & (d < 2.0) & (snr > 10) & ~np.asarray(c["negative"], bool)
    if tr.any():
        assert np.mean(rb[tr] >= thr) >= 0.8
    # bogus: what passes the threshold and is not flagged by the star veto, per CCD
    bogus = ~real
    assert bogus.sum() >= 5  # the CCD has artefacts to reject
    assert np.sum(bogus & (rb >= thr) & ~veto) <= 5
    # and the model separates them: most bogus fall below the threshold
    assert np.mean(rb[bogus] < thr) >= 0.6
