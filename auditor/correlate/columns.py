"""Fast column helpers for million-row tables: categorical-aware string views and row hashing."""

from __future__ import annotations

import numpy as np
import pandas as pd


def as_str_array(s: pd.Series) -> np.ndarray:
    """Object array of the column's values as text; categoricals convert their few categories only."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        cats = np.asarray(s.cat.categories.astype(str), dtype=object)
        codes = s.cat.codes.to_numpy()
        out = np.empty(len(codes), dtype=object)
        ok = codes >= 0
        out[ok] = cats[codes[ok]]
        out[~ok] = ""
        return out
    return s.astype(str).to_numpy(dtype=object)


def distinct(*series: pd.Series) -> pd.Index:
    """The distinct text values of some columns (categoricals: their categories, not their rows)."""
    parts = []
    for s in series:
        if isinstance(s.dtype, pd.CategoricalDtype):
            parts.append(np.asarray(s.cat.categories.astype(str), dtype=object))
        else:
            parts.append(pd.unique(s.astype(str).to_numpy(dtype=object)))
    return pd.Index(pd.unique(np.concatenate(parts))) if parts else pd.Index([])


def codes_in(s: pd.Series, index: pd.Index) -> np.ndarray:
    """Position of each value in ``index`` (-1 when absent), without converting every row to text."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        cat_pos = index.get_indexer(pd.Index(s.cat.categories.astype(str)))
        codes = s.cat.codes.to_numpy()
        out = np.full(len(codes), -1, dtype="int64")
        ok = codes >= 0
        out[ok] = cat_pos[codes[ok]]
        return out
    return np.asarray(index.get_indexer(pd.Index(s.astype(str).to_numpy())), dtype="int64")


_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer (wrapping uint64 arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def row_hash(*cols: np.ndarray) -> np.ndarray:
    """A 64-bit hash per row over integer columns (collision odds ~n²/2⁶⁴: none in practice)."""
    with np.errstate(over="ignore"):
        h = np.zeros(len(cols[0]), dtype=np.uint64)
        for c in cols:
            h = _mix(h ^ np.asarray(c).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
    return h
