"""Test-only: make pandas' ``sort_values`` stable by default inside NVIDIA's process.

NVIDIA's gap analysis sorts by weakness with pandas' default (quicksort), which leaves rows of
equal weakness in an unspecified order. Our runner promises one order (ties keep CSV row
order); loading this, the differential tests can demand identical output on tied data too.
"""
import pandas as pd

_sort_values = pd.DataFrame.sort_values


def _stable_sort_values(self, *args, **kwargs):
    kwargs.setdefault("kind", "stable")
    return _sort_values(self, *args, **kwargs)


pd.DataFrame.sort_values = _stable_sort_values
