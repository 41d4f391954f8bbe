"""The label rule of the whole project (SPEC 2.1), in one place; standard library only.

Labels are compared stripped and upper-cased; a row is PASS when that key is ``"PASS"``,
every other label is NO_PASS (the positive class). Rows keep their label as written.
"""
from __future__ import annotations


def normalize_label(label: object) -> str:
    """The comparison key of a label: ``str(label).strip().upper()``."""
    return str(label).strip().upper()


def is_pass_label(label: object) -> bool:
    return normalize_label(label) == "PASS"


def label_keys(labels):
    """:func:`normalize_label` of every value of a pandas Series (written as text first), for
    grouping and counting rows by label."""
    return labels.astype(str).map(normalize_label)
