"""Fast column helpers for million-row tables: categorical-aware string views and row hashing."""

from __future__ import annotations

import numpy as np
import pandas as pd


def as_str_array(s: pd.Series) -> np.ndarray:
    """Object array of the column's values as text; categoricals convert their few categories only."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        cats = np.append(np.asarray(s.cat.categories.astype(str), dtype=object), "")
        return cats[s.cat.codes.to_numpy()]  # code -1 (missing) picks the appended ""
    return s.astype(str).to_numpy(dtype=object)


class KindView:
    """Masks of one text column by value, computed on categorical codes (no per-row string compare)."""

    def __init__(self, s: pd.Series) -> None:
        if isinstance(s.dtype, pd.CategoricalDtype):
            self._codes = np.asarray(s.cat.codes.to_numpy())
            self._cats = pd.Index(s.cat.categories.astype(str))
        else:
            codes, uniques = pd.factorize(s.astype(str).to_numpy(dtype=object))
            self._codes, self._cats = np.asarray(codes), pd.Index(uniques)

    def eq(self, value: str) -> np.ndarray:
        pos = self._cats.get_indexer([value])[0]
        return self._codes == pos if pos >= 0 else np.zeros(len(self._codes), dtype=bool)

    def isin(self, values: tuple[str, ...]) -> np.ndarray:
        pos = self._cats.get_indexer(list(values))
        return np.isin(self._codes, pos[pos >= 0])

    def startswith(self, prefix: str) -> np.ndarray:
        hits = np.flatnonzero([str(c).startswith(prefix) for c in self._cats])
        return np.isin(self._codes, hits)


def as_category(s: pd.Series) -> pd.Categorical:
    """The column as a pandas Categorical (text categories), without a per-row text conversion."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        cat = s.array
        assert isinstance(cat, pd.Categorical)
        # text categories (object or pandas' str dtype) as they are: renaming 10^4 categories costs ms
        return cat if pd.api.types.is_string_dtype(cat.categories.dtype) else cat.rename_categories(str)
    return pd.Categorical(s.astype(str).to_numpy(dtype=object))


def take_categorical(values: np.ndarray, pos: np.ndarray, missing: str = "") -> pd.Categorical:
    """``values[pos]`` (``missing`` where pos is -1) as a categorical: few values over many rows."""
    codes, uniques = pd.factorize(np.append(np.asarray(values, dtype=object), missing))
    picked = codes[np.where(pos >= 0, pos, len(values))]
    return pd.Categorical.from_codes(picked, categories=pd.Index(uniques, dtype=object))


def concat_frames(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """``pd.concat`` that keeps categorical columns categorical (union of their categories)."""
    if len(frames) == 1:
        return frames[0].reset_index(drop=True)
    out = pd.concat(frames, ignore_index=True)
    for col in frames[0].columns:
        parts = [f[col] for f in frames]
        if all(isinstance(p.dtype, pd.CategoricalDtype) for p in parts):
            out[col] = pd.api.types.union_categoricals([p.array for p in parts], ignore_order=True)
    return out


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
        cats = s.cat.categories
        cat_pos = index.get_indexer(cats if pd.api.types.is_string_dtype(cats.dtype) else pd.Index(cats.astype(str)))
        # one take: code -1 (missing) picks the appended -1
        return np.append(np.asarray(cat_pos, dtype="int64"), -1)[s.cat.codes.to_numpy()]
    return np.asarray(index.get_indexer(pd.Index(s.astype(str).to_numpy())), dtype="int64")


_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer (wrapping uint64 arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return np.asarray(x ^ (x >> np.uint64(31)), dtype=np.uint64)


def row_hash(*cols: np.ndarray) -> np.ndarray:
    """A 64-bit hash per row over integer columns (collision odds ~n²/2⁶⁴: none in practice)."""
    with np.errstate(over="ignore"):
        h = np.zeros(len(cols[0]), dtype=np.uint64)
        for c in cols:
            h = _mix(h ^ np.asarray(c).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
    return h
