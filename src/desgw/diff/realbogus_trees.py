"""A boosted ensemble of binary decision trees stored as numpy arrays, with numba inference.

Trees are padded to a common node count ``M``; node 0 is each tree's root. At an internal node
a sample goes left when ``x[feature] <= threshold`` (a NaN goes left when ``missing_left``).
Leaves hold additive log-odds values; the ensemble's log-odds is ``baseline + sum of the leaf
values`` and its probability the logistic function of that. Leaves point to themselves.
Inference walks each (sample, tree) pair from the root to its leaf in a compiled loop
(~2 ms for 200 samples x 500 trees).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

__all__ = ["TreeEnsemble"]


@njit(cache=True)
def _walk(x, feature, threshold, left, right, missing_left, value,
          depth):  # pragma: no cover - numba
    """Sum over trees of the node value each row of ``x`` reaches in ``depth`` steps."""
    n = x.shape[0]
    t = feature.shape[0]
    out = np.zeros(n)
    for i in range(n):
        acc = 0.0
        for k in range(t):
            node = 0
            for _ in range(depth):
                lft = left[k, node]
                if lft == node:  # a leaf points to itself
                    break
                v = x[i, feature[k, node]]
                if v <= threshold[k, node] or (np.isnan(v) and missing_left[k, node]):
                    node = lft
                else:
                    node = right[k, node]
            acc += value[k, node]
        out[i] = acc
    return out


@dataclass(frozen=True)
class TreeEnsemble:
    """Additive tree ensemble (log-odds).

    Attributes
    ----------
    feature : numpy.ndarray
        (T, M) int32 feature index of each node (0 at leaves).
    threshold : numpy.ndarray
        (T, M) float64 split threshold.
    left, right : numpy.ndarray
        (T, M) int32 child node indices (the node itself at leaves).
    missing_left : numpy.ndarray
        (T, M) bool, where NaN features go left.
    value : numpy.ndarray
        (T, M) float64 leaf log-odds contributions (0 at internal nodes).
    baseline : float
        Log-odds added to every prediction.
    max_depth : int
        Longest root-to-leaf path (edges).
    """

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    missing_left: np.ndarray
    value: np.ndarray
    baseline: float
    max_depth: int

    def __post_init__(self) -> None:
        shape = self.feature.shape
        if len(shape) != 2:
            raise ValueError("tree arrays must be (n_trees, n_nodes)")
        for name in ("threshold", "left", "right", "missing_left", "value"):
            if getattr(self, name).shape != shape:
                raise ValueError(f"{name} has shape {getattr(self, name).shape}, expected {shape}")
        m = shape[1]
        for name in ("left", "right"):
            a = getattr(self, name)
            if a.size and (a.min() < 0 or a.max() >= m):
                raise ValueError(f"{name} child index out of range")

    @property
    def n_trees(self) -> int:
        """Number of trees."""
        return int(self.feature.shape[0])

    @property
    def n_features_used(self) -> int:
        """1 + the largest feature index used at an internal node."""
        internal = self.left != np.arange(self.feature.shape[1])[None, :]
        return int(self.feature[internal].max()) + 1 if internal.any() else 0

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """Log-odds of each sample.

        Parameters
        ----------
        x : numpy.ndarray
            (n, k) features.

        Returns
        -------
        numpy.ndarray
            (n,) float64.
        """
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"features must be (n, k), got shape {x.shape}")
        if x.shape[1] < self.n_features_used:
            raise ValueError(f"features have {x.shape[1]} columns, the trees use "
                             f"{self.n_features_used}")
        if x.shape[0] == 0:
            return np.zeros(0)
        return self.baseline + _walk(np.ascontiguousarray(x), self.feature, self.threshold,
                                     self.left, self.right, self.missing_left, self.value,
                                     int(self.max_depth))

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Probability of the positive class, (n,) float64 in [0, 1]."""
        z = self.decision_function(x)
        return 0.5 * (1.0 + np.tanh(0.5 * z))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays for ``numpy.savez`` (inverse of :meth:`from_arrays`)."""
        return {"feature": self.feature.astype(np.int32), "threshold": self.threshold,
                "left": self.left.astype(np.int32), "right": self.right.astype(np.int32),
                "missing_left": self.missing_left, "value": self.value,
                "baseline": np.array(self.baseline, dtype=np.float64),
                "max_depth": np.array(self.max_depth, dtype=np.int64)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> TreeEnsemble:
        """Build from :meth:`to_arrays` output (e.g. an opened ``.npz``)."""
        return cls(feature=np.asarray(arrays["feature"], np.int64),
                   threshold=np.asarray(arrays["threshold"], np.float64),
                   left=np.asarray(arrays["left"], np.int64),
                   right=np.asarray(arrays["right"], np.int64),
                   missing_left=np.asarray(arrays["missing_left"], bool),
                   value=np.asarray(arrays["value"], np.float64),
                   baseline=float(arrays["baseline"]), max_depth=int(arrays["max_depth"]))
