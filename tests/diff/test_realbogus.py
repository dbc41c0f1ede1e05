"""Real/bogus scoring with the shipped model: held-out ROC, obvious cases, versioning."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from astropy.table import Table
from scipy.spatial import cKDTree

from desgw.diff import realbogus
from desgw.diff.detect import detect_transients
from desgw.diff.measure import measure_candidates
from desgw.diff.realbogus import (
    FEATURE_NAMES,
    RealBogusModelError,
    features,
    load_model,
    save_model,
    score,
)
from desgw.diff.realbogus_trees import TreeEnsemble
from desgw.diff.stamps import Stamps, cutout_stamps
from desgw.diff.subtract import SubtractConfig, subtract
from desgw.diff.zogy_synth import MoffatPSFField, make_image_pair
from desgw.train.realbogus_sim import CCD_AREA_PX, make_training_set, roc_summary


@pytest.fixture(scope="module")
def heldout():
    """A small held-out set: 6 scenes of 1024^2 px (0.75 CCD) from a seed not used in training."""
    ts = make_training_set(seed=7, n_scenes=6)
    s = np.full(len(ts.label), np.nan)
    for k in np.unique(ts.scene):  # one score() call per scene, as the pipeline's per CCD
        rows = np.flatnonzero(ts.scene == k)
        st = Stamps(data=ts.stamps.data[rows], valid=ts.stamps.valid[rows],
                    kinds=ts.stamps.kinds, x0=ts.stamps.x0[rows], y0=ts.stamps.y0[rows])
        s[rows] = score(ts.candidates[rows], st)
    return ts, s


@pytest.fixture(scope="module")
def model():
    return load_model()


def test_scores_are_probabilities(heldout):
    ts, s = heldout
    assert s.shape == (len(ts.label),)
    assert np.all(np.isfinite(s)) and s.min() >= 0 and s.max() <= 1
    # both classes present and separated on average
    assert s[ts.label == 1].mean() > 0.8
    assert s[ts.label == 0].mean() < 0.2


def test_heldout_roc(heldout, model):
    ts, s = heldout
    assert ts.ccd_equivalents == pytest.approx(6 * 1024 * 1024 / CCD_AREA_PX)
    r = roc_summary(s, ts)
    assert r["n_real_snr_gt_min"] >= 150 and r["n_bogus"] >= 300
    assert r["auc"] > 0.995
    # the threshold keeping >= 99 % of the reals with S/N > 10, derived on this set
    assert r["real_kept_snr_gt_min"] >= 0.99
    # bogus surviving the shipped threshold on this fresh 0.75-CCD set, scaled by area to one
    # 4096 x 2048 CCD (~1200 bogus detections per CCD). The bar (issue #4) is <= 5 per CCD;
    # with ~4 expected survivors here the count is Poisson, so the tolerance is 10 per CCD
    # (7 survivors). Measured: 2.7 per CCD; the previous model (feature version 1) let 18.7
    # per CCD through here.
    r2 = roc_summary(s, ts, threshold=model.threshold)
    assert r2["real_kept_snr_gt_min"] >= 0.98
    assert r2["bogus_per_ccd"] <= 10.0, r2["by_kind"]


def test_shipped_model_meets_the_bar(model):
    """The training script's held-out set (>= 3 CCDs, a seed not used in training) meets
    issue #4's bar: >= 99 % of reals with S/N > 10 kept, <= 5 bogus per CCD survive."""
    v = model.meta["validation"]
    assert v["ccd_equivalents"] >= 3.0
    assert v["n_real_snr_gt_min"] >= 900
    assert v["bogus_detections_per_ccd"] >= 1000  # the hard artefact mix
    assert v["real_kept_snr_gt_min"] >= 0.99
    assert v["threshold"] == pytest.approx(model.threshold)
    assert v["bogus_per_ccd"] <= 5.0, v["by_kind"]
    assert v["auc"] > 0.998


def test_context_features_flag_a_common_residual():
    """Rows on reference point sources sharing one flux-ratio are 'alike'; an odd one is not."""
    from desgw.diff.realbogus_features import _context_features

    F = {n: i for i, n in enumerate(FEATURE_NAMES)}
    out = np.zeros((8, len(FEATURE_NAMES)))
    out[:, F["ref_offset"]] = 0.05
    out[:, F["log_ref_over_diff"]] = 1.3
    out[:6, F["diff_over_new"]] = 0.06 * np.r_[1.0, 1.05, 0.95, 1.1, 0.9, 1.0]
    out[6, F["diff_over_new"]] = 0.5            # a large fractional change on a point source
    out[7, F["ref_offset"]] = 2.0               # hostless: not a point-source candidate
    neg = np.zeros(8, bool)
    _context_features(out, F, neg)
    assert np.all(out[:6, F["ctx_ratio_dev"]] < 0.07)  # ratios within +-10 % (0.046 dex)
    assert np.all(out[:6, F["ctx_ratio_frac"]] > 0.75)
    assert out[6, F["ctx_ratio_dev"]] == pytest.approx(np.log10(0.5 / 0.06), abs=0.03)
    assert out[6, F["ctx_ratio_frac"]] == 0.0
    assert np.all(out[:, F["ctx_sign_frac"]] == 1.0)
    # a lone candidate has no context: fill values
    one = np.zeros((1, len(FEATURE_NAMES)))
    _context_features(one, F, np.zeros(1, bool))
    assert one[0, F["ctx_ratio_dev"]] == 3.0 and one[0, F["ctx_ratio_frac"]] == 0.0
    assert one[0, F["ctx_sign_frac"]] == 0.5


def _candidates(pair, sub):
    det = detect_transients(sub)
    meas = measure_candidates(sub, det, search_image=pair.search,
                              template_image=pair.template)
    st = cutout_stamps({"search": pair.search, "template": pair.template, "diff": sub.diff},
                       meas["x"], meas["y"])
    return meas, st


def test_obvious_cases(model):
    """Clean point sources score high; a cosmic ray and misregistration dipoles score low."""
    shape = (512, 512)
    ps = MoffatPSFField(4.5, beta=3.0, image_shape=shape, stamp=37)
    pt = MoffatPSFField(3.8, beta=3.0, image_shape=shape, stamp=37)
    pair = make_image_pair(shape, ps, pt, seed=11, n_stars=12, star_flux_range=(3e5, 1e6),
                           n_transients=8, transient_flux=(6e3, 2e4),
                           template_offset=(0.35, 0.0), min_distance=60, margin=40)
    search = pair.search.copy()
    # a cosmic ray: a 3-pixel sharp track, far from everything
    pos = np.c_[np.r_[pair.star_x, pair.transient_x], np.r_[pair.star_y, pair.transient_y]]
    tree = cKDTree(pos)
    rng = np.random.default_rng(3)
    while True:
        cx, cy = rng.integers(40, 472, 2)
        if tree.query([cx, cy])[0] > 40:
            break
    search[cy, cx:cx + 3] += np.float32([4000, 6000, 3000])
    m = np.zeros(shape, np.int32)
    sub = subtract(search, pair.search_var, m, ps, pair.template, pair.template_var, m, pt,
                   zp_search=pair.zp_search, zp_template=pair.zp_template,
                   config=SubtractConfig(tile=256, border=48))
    pair2 = type(pair)(**{**pair.__dict__, "search": search})
    meas, st = _candidates(pair2, sub)
    s = score(meas, st, model=model)
    xy = np.c_[meas["x"], meas["y"]]
    d_tr, _ = cKDTree(np.c_[pair.transient_x, pair.transient_y]).query(xy)
    d_st, _ = cKDTree(np.c_[pair.star_x, pair.star_y]).query(xy)
    d_cr = np.hypot(meas["x"] - (cx + 1), meas["y"] - cy)
    tr = (d_tr < 1.5) & ~np.asarray(meas["negative"])
    assert tr.sum() == 8
    assert np.all(s[tr] > model.threshold), s[tr]
    assert np.median(s[tr]) > 0.9
    cr = d_cr < 3
    assert cr.sum() >= 1
    assert np.all(s[cr] < model.threshold) and np.all(s[cr] < 0.1), s[cr]
    dip = (d_st < 6) & np.asarray(meas["is_dipole"])
    assert dip.sum() >= 8  # lobes of the misregistered bright stars
    assert np.all(s[dip] < model.threshold), s[dip]


def _swap_sign(meas: Table, st: Stamps) -> tuple[Table, Stamps]:
    """The same candidates seen as flux decreases: template <-> search, diff negated."""
    t = meas.copy()
    t["negative"] = ~np.asarray(meas["negative"], bool)
    for c in ("score", "flux", "snr", "flux_psf", "dipole_lobe_score", "diff_flux_aper"):
        t[c] = -np.asarray(meas[c])
    t["search_flux_aper"], t["template_flux_aper"] = (meas["template_flux_aper"],
                                                      meas["search_flux_aper"])
    k = {n: i for i, n in enumerate(st.kinds)}
    data = st.data.copy()
    data[:, k["search"]], data[:, k["template"]] = st.data[:, k["template"]], st.data[:, k[
        "search"]]
    data[:, k["diff"]] = -st.data[:, k["diff"]]
    valid = st.valid.copy()
    valid[:, k["search"]], valid[:, k["template"]] = (st.valid[:, k["template"]],
                                                      st.valid[:, k["search"]])
    return t, Stamps(data=data, valid=valid, kinds=st.kinds, x0=st.x0, y0=st.y0, fill=st.fill)


def test_features_sign_symmetric_and_row_independent(heldout):
    ts, _ = heldout
    idx = np.arange(0, len(ts.label), max(1, len(ts.label) // 60))
    meas = ts.candidates[idx]
    st = Stamps(data=ts.stamps.data[idx], valid=ts.stamps.valid[idx], kinds=ts.stamps.kinds,
                x0=ts.stamps.x0[idx], y0=ts.stamps.y0[idx])
    f = features(meas, st)
    assert f.dtype == np.float32 and f.shape == (len(idx), len(FEATURE_NAMES))
    assert np.all(np.isfinite(f))
    own = [i for i, n in enumerate(FEATURE_NAMES) if not n.startswith("ctx_")]
    assert len(own) == len(FEATURE_NAMES) - 3
    # per-candidate features do not depend on the other rows (the context ones do)
    np.testing.assert_allclose(f[:, own], ts.features[idx][:, own], rtol=1e-6, atol=1e-6)
    f_neg = features(*_swap_sign(meas, st))
    np.testing.assert_allclose(f_neg, f, rtol=1e-5, atol=1e-5)
    one = features(meas[3:4], Stamps(data=st.data[3:4], valid=st.valid[3:4], kinds=st.kinds,
                                     x0=st.x0[3:4], y0=st.y0[3:4]))
    np.testing.assert_allclose(one[0, own], f[3, own], rtol=1e-6, atol=1e-6)


def test_tree_inference_by_hand():
    # one tree: x0 <= 1 -> leaf -2, else (x1 <= 0 -> +1, else +3); NaN in x0 goes right
    ens = TreeEnsemble(feature=np.array([[0, 0, 1, 0, 0]]),
                       threshold=np.array([[1.0, 0, 0.0, 0, 0]]),
                       left=np.array([[1, 1, 3, 3, 4]]), right=np.array([[2, 1, 4, 3, 4]]),
                       missing_left=np.array([[False, False, True, False, False]]),
                       value=np.array([[0, -2.0, 0, 1.0, 3.0]]), baseline=0.5, max_depth=2)
    x = np.array([[0.0, 9.0], [2.0, -1.0], [2.0, 1.0], [np.nan, np.nan]])
    np.testing.assert_allclose(ens.decision_function(x), [-1.5, 1.5, 3.5, 1.5])
    np.testing.assert_allclose(ens.predict_proba(x), 1 / (1 + np.exp(-np.r_[-1.5, 1.5, 3.5,
                                                                            1.5])))
    with pytest.raises(ValueError):
        TreeEnsemble(feature=np.zeros((1, 2), int), threshold=np.zeros((1, 2)),
                     left=np.array([[5, 1]]), right=np.zeros((1, 2), int),
                     missing_left=np.zeros((1, 2), bool), value=np.zeros((1, 2)), baseline=0,
                     max_depth=1)


def test_model_file_round_trip_and_version_mismatch(tmp_path, model, heldout):
    ts, s = heldout
    p = save_model(tmp_path / "m.npz", model.ensemble, threshold=0.3, meta={"note": "x"})
    m2 = load_model(p)
    assert m2.threshold == 0.3 and m2.meta["note"] == "x"
    np.testing.assert_allclose(m2.predict(ts.features), s)
    # a model trained on other features is refused with a clear message
    with np.load(p) as z:
        arrays = {k: z[k] for k in z.files}
    rec = json.loads(str(arrays.pop("meta")))
    for change in ({"feature_version": rec["feature_version"] + 1},
                   {"feature_names": rec["feature_names"][:-1]}):
        bad = tmp_path / "bad.npz"
        np.savez(bad, meta=np.array(json.dumps(rec | change)), **arrays)
        with pytest.raises(RealBogusModelError, match="feature version"):
            load_model(bad)
    with pytest.raises(RealBogusModelError):
        load_model(tmp_path / "missing.npz")
    err = RealBogusModelError("boom")
    assert str(pickle.loads(pickle.dumps(err))) == "boom"
    # the shipped model records this code's features and its held-out ROC
    assert model.feature_names == FEATURE_NAMES
    assert model.feature_version == realbogus.FEATURE_VERSION
    assert model.meta["validation"]["auc"] > 0.98
    assert 0 < model.threshold < 1


def test_features_reject_bad_input(heldout):
    ts, _ = heldout
    st = Stamps(data=ts.stamps.data[:2], valid=ts.stamps.valid[:2], kinds=ts.stamps.kinds,
                x0=ts.stamps.x0[:2], y0=ts.stamps.y0[:2])
    with pytest.raises(ValueError, match="columns"):
        features(ts.candidates[:2][["x", "y"]], st)
    with pytest.raises(ValueError, match="stamps for"):
        features(ts.candidates[:3], st)
