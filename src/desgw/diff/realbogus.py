"""Real/bogus classification of difference-image candidates (an autoScan for ZOGY differences).

Goldstein et al. (2015, autoScan) classified DES-SN difference-image detections with a random
forest on stamp and catalog features. Here: the features of
:mod:`desgw.diff.realbogus_features` (38 scale-free numbers from the
:func:`desgw.diff.measure.measure_candidates` columns, the 51 x 51 search / template / diff
stamps of :func:`desgw.diff.stamps.cutout_stamps`, and how each candidate compares with the
other candidates of its CCD) feed a gradient-boosted tree ensemble
(:class:`desgw.diff.realbogus_trees.TreeEnsemble`, numpy inference) trained by
``scripts/train_realbogus.py`` on labelled simulated candidates
(:mod:`desgw.train.realbogus_sim`) and shipped in ``desgw/diff/data/`` (:data:`MODEL_FILENAME`).

"Real" means a point-source flux change on the difference image away from stars: a transient,
hostless or on a galaxy, brightening or fading (negative candidates are scored sign-corrected),
as autoScan's fakes; residuals at stars score low, as do cosmic rays, hot pixels, bad columns,
trails, saturated-star residuals, misregistration dipoles and coverage edges.

The model file (``.npz``) holds the tree arrays and a JSON ``meta`` record: ``format``,
``feature_version`` and ``feature_names`` (must equal :data:`FEATURE_VERSION` and
:data:`FEATURE_NAMES`, else :class:`RealBogusModelError`), ``threshold`` (the score keeping
99 % of simulated reals with S/N > 10) and the training summary.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

from desgw.diff.realbogus_features import (
    FEATURE_NAMES,
    FEATURE_VERSION,
    compute_features,
)
from desgw.diff.realbogus_trees import TreeEnsemble
from desgw.diff.stamps import Stamps
from desgw.errors import DesgwError
from desgw.io.atomic import atomic_write_path

__all__ = [
    "FEATURE_NAMES",
    "FEATURE_VERSION",
    "MODEL_FILENAME",
    "MODEL_FORMAT",
    "RealBogusModel",
    "RealBogusModelError",
    "features",
    "load_model",
    "save_model",
    "score",
]

#: File name of the shipped model in the ``desgw.diff`` package data.
MODEL_FILENAME: str = "realbogus_model.npz"
#: Layout version of the model file.
MODEL_FORMAT: int = 1


class RealBogusModelError(DesgwError):
    """The model file is unreadable or does not match this code's features."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message,))


@dataclass(frozen=True)
class RealBogusModel:
    """A loaded real/bogus model.

    Attributes
    ----------
    ensemble : TreeEnsemble
        The trees (log-odds of "real").
    feature_version : int
        Feature definition version it was trained on.
    feature_names : tuple of str
        Feature order it was trained on.
    threshold : float
        Recommended score cut (keeps 99 % of simulated reals with S/N > 10).
    meta : dict
        The file's JSON record (training summary, ROC numbers).
    """

    ensemble: TreeEnsemble
    feature_version: int
    feature_names: tuple[str, ...]
    threshold: float
    meta: dict[str, Any] = field(default_factory=dict)

    def check_features(self) -> None:
        """Raise :class:`RealBogusModelError` unless the model matches the code's features."""
        if self.feature_version != FEATURE_VERSION or self.feature_names != FEATURE_NAMES:
            raise RealBogusModelError(
                f"real/bogus model was trained on feature version {self.feature_version} "
                f"({len(self.feature_names)} features) but this code computes version "
                f"{FEATURE_VERSION} ({len(FEATURE_NAMES)} features); retrain it with "
                f"scripts/train_realbogus.py")

    def predict(self, feats: np.ndarray) -> np.ndarray:
        """Scores in [0, 1] of a (n, k) feature matrix from :func:`features`."""
        self.check_features()
        feats = np.asarray(feats)
        if feats.ndim != 2 or feats.shape[1] != len(self.feature_names):
            raise ValueError(f"features must be (n, {len(self.feature_names)}), "
                             f"got {feats.shape}")
        return self.ensemble.predict_proba(feats)


def features(candidates: Table, stamps: Stamps) -> np.ndarray:
    """Real/bogus features of candidates.

    Parameters
    ----------
    candidates : astropy.table.Table
        :func:`desgw.diff.measure.measure_candidates` output.
    stamps : Stamps
        Their stamps (kinds search, template, diff), one per row.

    Returns
    -------
    numpy.ndarray
        (n, len(FEATURE_NAMES)) float32; see :mod:`desgw.diff.realbogus_features`.
    """
    return compute_features(candidates, stamps)


def save_model(path: str | os.PathLike[str], ensemble: TreeEnsemble, *, threshold: float,
               meta: dict[str, Any] | None = None) -> Path:
    """Write a model file (atomically) for the current :data:`FEATURE_NAMES`.

    Parameters
    ----------
    path : path-like
        Output ``.npz``.
    ensemble : TreeEnsemble
    threshold : float
        Recommended score cut.
    meta : dict or None
        JSON-serialisable extra record (training summary).

    Returns
    -------
    pathlib.Path
    """
    record = dict(meta or {})
    record.update({"format": MODEL_FORMAT, "feature_version": FEATURE_VERSION,
                   "feature_names": list(FEATURE_NAMES), "threshold": float(threshold)})
    final = Path(path)
    with atomic_write_path(final) as tmp, open(tmp, "wb") as fh:
        arrays: dict[str, Any] = {"meta": np.array(json.dumps(record)), **ensemble.to_arrays()}
        np.savez_compressed(fh, **arrays)
    return final


def _read_model(path: str | os.PathLike[str] | Any) -> RealBogusModel:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise RealBogusModelError(f"cannot read real/bogus model {path}: {exc}") from exc
    try:
        record = json.loads(str(arrays.pop("meta")))
        if int(record["format"]) != MODEL_FORMAT:
            raise RealBogusModelError(f"real/bogus model {path} has format {record['format']}, "
                                      f"this code reads format {MODEL_FORMAT}")
        ens = TreeEnsemble.from_arrays(arrays)
        model = RealBogusModel(ensemble=ens, feature_version=int(record["feature_version"]),
                               feature_names=tuple(record["feature_names"]),
                               threshold=float(record["threshold"]), meta=record)
    except (KeyError, TypeError, ValueError) as exc:
        raise RealBogusModelError(f"real/bogus model {path} is malformed: {exc}") from exc
    model.check_features()
    return model


@functools.lru_cache(maxsize=1)
def _shipped_model() -> RealBogusModel:
    ref = resources.files("desgw.diff").joinpath("data", MODEL_FILENAME)
    with resources.as_file(ref) as p:
        if not Path(p).is_file():
            raise RealBogusModelError(f"the shipped real/bogus model {p} is missing; train it "
                                      "with scripts/train_realbogus.py")
        return _read_model(p)


def load_model(path: str | os.PathLike[str] | None = None) -> RealBogusModel:
    """Load a model file; ``None`` loads the shipped one (cached).

    Raises
    ------
    RealBogusModelError
        Unreadable file, or feature version / names differ from this code's.
    """
    if path is None:
        return _shipped_model()
    return _read_model(path)


def score(candidates: Table, stamps: Stamps, *, model: RealBogusModel | None = None
          ) -> np.ndarray:
    """Real/bogus score of each candidate: ~1 real, ~0 bogus.

    Parameters
    ----------
    candidates : astropy.table.Table
        :func:`desgw.diff.measure.measure_candidates` output of one CCD (all its candidates
        at once: the context features compare each candidate with the others).
    stamps : Stamps
        Their 51 x 51 stamps (:func:`desgw.diff.stamps.cutout_stamps` of the search image,
        the template on the search grid and the difference image).
    model : RealBogusModel or None
        Default: the shipped model (:func:`load_model`).

    Returns
    -------
    numpy.ndarray
        (n,) float64 in [0, 1]. Compare with ``model.threshold``.
    """
    m = load_model() if model is None else model
    return m.predict(features(candidates, stamps))
