"""Test-only CPU stand-in for the few ``cudf`` calls NVIDIA's ``nearest_neighbors`` makes.

``read_parquet`` -> a pandas DataFrame whose columns offer ``.list.leaves.values`` (the dense
values of a list column) and ``.to_pandas()``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


class _Leaves:
    def __init__(self, series: pd.Series):
        self._series = series

    @property
    def values(self) -> np.ndarray:
        if len(self._series) == 0:
            return np.empty(0, dtype=np.float64)
        return np.concatenate([np.asarray(v, dtype=np.float64) for v in self._series])


class _ListAccessor:
    def __init__(self, series: pd.Series):
        self.leaves = _Leaves(series)


class Series(pd.Series):
    @property
    def _constructor(self):
        return Series

    @property
    def _constructor_expanddim(self):
        return DataFrame

    @property
    def list(self) -> _ListAccessor:  # noqa: A003 - cudf's name
        return _ListAccessor(self)

    def to_pandas(self) -> pd.Series:
        return pd.Series(self)


class DataFrame(pd.DataFrame):
    @property
    def _constructor(self):
        return DataFrame

    @property
    def _constructor_sliced(self):
        return Series


def read_parquet(path, *args, **kwargs) -> DataFrame:
    return DataFrame(pd.read_parquet(path, *args, **kwargs))
