#!/usr/bin/env python
"""Train the real/bogus model shipped in desgw/diff/data/ and report its ROC as JSON.

Training and held-out validation sets are simulated by :mod:`desgw.train.realbogus_sim`
(synthetic search/template scenes with injected point sources and artefacts, subtracted,
detected, measured and labelled by desgw's own difference-imaging code) with two different
seeds. A gradient-boosted tree ensemble (scikit-learn's GradientBoostingClassifier, from the
``train`` extra: ``pip install 'desgw[train]'``) is fitted, exported through scikit-learn's
public tree API to the numpy arrays of
:class:`desgw.diff.realbogus_trees.TreeEnsemble` (checked to reproduce scikit-learn's log-odds),
and saved with the score threshold keeping 99 % of the held-out reals with S/N > 10.

Usage::

    python scripts/train_realbogus.py [--seed 1] [--val-seed 2] [--scenes 400]
        [--val-scenes 24] [--workers 2] [--out src/desgw/diff/data/realbogus_model.npz]
        [--report realbogus_roc.json]

Deterministic for given seeds and scene counts (independent of ``--workers``). The default
400 + 24 scenes take ~13 min of simulation on 2 cores and hold ~3.5 GB of stamps in memory.
Each scene is one candidate set for the context features (a CCD's candidates in the pipeline).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from desgw.diff.realbogus import FEATURE_NAMES, load_model, save_model, score
from desgw.diff.realbogus_trees import TreeEnsemble
from desgw.io.atomic import atomic_write_text
from desgw.train.realbogus_sim import make_training_set, roc_summary
from desgw.util.extras import require_extra

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src/desgw/diff/data/realbogus_model.npz"


def export_gbc(clf) -> TreeEnsemble:
    """Tree arrays of a fitted binary GradientBoostingClassifier, through scikit-learn's
    public API: ``estimators_`` (one DecisionTreeRegressor per stage, whose ``tree_`` holds
    the node arrays), ``learning_rate`` and the prior of ``init_`` (the log-odds baseline)."""
    if clf.estimators_.shape[1] != 1:
        raise ValueError("only binary classifiers can be exported")
    trees = [est.tree_ for est in clf.estimators_[:, 0]]
    m = max(tr.node_count for tr in trees)
    t = len(trees)
    feature = np.zeros((t, m), np.int64)
    threshold = np.zeros((t, m))
    left = np.tile(np.arange(m), (t, 1))
    right = left.copy()
    missing = np.zeros((t, m), bool)
    value = np.zeros((t, m))
    for i, tr in enumerate(trees):
        k = tr.node_count
        leaf = tr.children_left == -1
        nodes = np.arange(k)
        feature[i, :k] = np.where(leaf, 0, tr.feature)
        threshold[i, :k] = tr.threshold
        left[i, :k] = np.where(leaf, nodes, tr.children_left)
        right[i, :k] = np.where(leaf, nodes, tr.children_right)
        missing[i, :k] = np.asarray(tr.missing_go_to_left, dtype=bool)
        value[i, :k] = np.where(leaf, clf.learning_rate * tr.value[:, 0, 0], 0.0)
    prior = np.asarray(clf.init_.class_prior_, dtype=np.float64)
    baseline = float(np.log(prior[1] / prior[0]))
    depth = max(int(tr.max_depth) for tr in trees)
    return TreeEnsemble(feature=feature, threshold=threshold, left=left, right=right,
                        missing_left=missing, value=value, baseline=baseline, max_depth=depth)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1, help="training-set seed")
    ap.add_argument("--val-seed", type=int, default=2, help="held-out set seed")
    ap.add_argument("--scenes", type=int, default=400, help="training scenes (1024x1024 px)")
    ap.add_argument("--val-scenes", type=int, default=24, help="held-out scenes")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--report", type=Path, default=None, help="write the JSON here too")
    args = ap.parse_args(argv)
    if args.seed == args.val_seed:
        ap.error("--seed and --val-seed must differ")
    ensemble = require_extra("sklearn.ensemble", "train", "Training the real/bogus model")

    t0 = time.perf_counter()
    train = make_training_set(args.seed, args.scenes, workers=args.workers)
    val = make_training_set(args.val_seed, args.val_scenes, workers=args.workers)
    t_sim = time.perf_counter() - t0
    clf = ensemble.GradientBoostingClassifier(
        n_estimators=600, learning_rate=0.05, max_leaf_nodes=32, min_samples_leaf=20,
        subsample=0.8, validation_fraction=0.15, n_iter_no_change=30, random_state=args.seed)
    clf.fit(train.features, train.label)
    ens = export_gbc(clf)
    z_sk = clf.decision_function(val.features)
    z_np = ens.decision_function(val.features)
    if not np.allclose(z_sk, z_np, rtol=0, atol=1e-6):
        raise RuntimeError(f"exported trees disagree with scikit-learn "
                           f"(max |dz| {np.abs(z_sk - z_np).max():.3g})")
    s_val = ens.predict_proba(val.features)
    summary = roc_summary(s_val, val)
    s_train = ens.predict_proba(train.features)
    meta = {
        "trained_with": "scikit-learn GradientBoostingClassifier",
        "n_trees": ens.n_trees, "max_depth": ens.max_depth,
        "train": {"seed": args.seed, "scenes": args.scenes, "n_real": int(train.label.sum()),
                  "n_bogus": int((train.label == 0).sum()),
                  "ccd_equivalents": train.ccd_equivalents,
                  "auc": roc_summary(s_train, train)["auc"]},
        "validation": summary | {"seed": args.val_seed, "scenes": args.val_scenes},
    }
    save_model(args.out, ens, threshold=summary["threshold_derived"], meta=meta)
    model = load_model(args.out)  # round trip
    if not np.allclose(model.predict(val.features), s_val, atol=1e-12):
        raise RuntimeError("saved model does not reproduce the scores")
    sel = np.flatnonzero(val.scene == np.bincount(val.scene).argmax())[:200]
    sub = val.candidates[sel]
    from desgw.diff.stamps import Stamps

    st = Stamps(data=val.stamps.data[sel], valid=val.stamps.valid[sel], kinds=val.stamps.kinds,
                x0=val.stamps.x0[sel], y0=val.stamps.y0[sel], fill=val.stamps.fill)
    score(sub, st, model=model)  # compile
    t1 = time.perf_counter()
    for _ in range(5):
        score(sub, st, model=model)
    t_inf = (time.perf_counter() - t1) / 5
    report = {"model": str(args.out), "features": list(FEATURE_NAMES),
              "inference_seconds": {"n_candidates": int(sel.size), "features_and_score":
                                    round(t_inf, 4)},
              "seconds_simulation": round(t_sim, 1),
              "seconds_total": round(time.perf_counter() - t0, 1)} | meta
    text = json.dumps(report, indent=1)
    if args.report is not None:
        atomic_write_text(args.report, text + "\n")
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
