"""Test-only stand-in for ``cuml.neighbors.NearestNeighbors``: exact brute force (scikit-learn).

cuML's distances: euclidean (not squared), cosine = 1 - cosine similarity, manhattan = L1.
The order of equal distances is unspecified in cuML; here ties go to the lower source index.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import pairwise_distances

_METRICS = {"euclidean": "euclidean", "cosine": "cosine", "manhattan": "manhattan",
            "l2": "euclidean", "l1": "manhattan", "cityblock": "manhattan"}


class NearestNeighbors:
    def __init__(self, n_neighbors: int = 5, metric: str = "euclidean", **_):
        if metric not in _METRICS:
            raise ValueError(f"Metric {metric} is not supported")
        self.n_neighbors = int(n_neighbors)
        self.metric = metric

    def fit(self, X):
        self._fit = np.asarray(X, dtype=np.float64)
        return self

    def kneighbors(self, X, n_neighbors: int | None = None):
        k = self.n_neighbors if n_neighbors is None else int(n_neighbors)
        n_fit = self._fit.shape[0]
        if k < 1 or k > n_fit:
            raise ValueError(f"n_neighbors must be in [1, {n_fit}], got {k}")
        d = pairwise_distances(np.asarray(X, dtype=np.float64), self._fit,
                               metric=_METRICS[self.metric])
        if self.metric == "euclidean":
            # scikit-learn's euclidean is the dot-product form; use the exact difference form
            diff = np.asarray(X, dtype=np.float64)[:, None, :] - self._fit[None, :, :]
            d = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
        idx = np.argsort(d, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(d, idx, axis=1), idx
