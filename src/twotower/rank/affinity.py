"""The user's affinity to a candidate's categories: for each categorical or multi-valued item feature
(genre, brand, category), the share of the user's latest items that have the candidate's value(s).

Computed from the item table the model was trained with and the user's items strictly before the request,
so training rows and live rows get it from the same code.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..data.dataset import Dataset
from .covisit import kept_row_sums

MAX_VALUES = 1000          # features with more values (near-unique codes) say nothing about taste


def category_features(data: Dataset) -> list[str]:
    """The item features an affinity is computed for: categorical or multi-valued, at most MAX_VALUES values."""
    return [s.name for s in data.item_specs if s.kind in ("categorical", "multi") and len(s.vocab) <= MAX_VALUES]


def affinity_names(features: list[str]) -> list[str]:
    return [f"affinity_{f}" for f in features]


_ONE_HOT: dict[int, tuple[np.ndarray, sp.csr_matrix]] = {}


def _one_hot(feature: np.ndarray, codes: np.ndarray, size: int) -> sp.csr_matrix:
    """[size, values] 1 where the item has the value; kept per feature array (serving asks it per request)."""
    cached = _ONE_HOT.get(id(feature))
    if cached is not None and cached[0] is feature and cached[1].shape[0] == size:
        return cached[1]
    rows = np.repeat(np.arange(size), codes.shape[1])
    one_hot = sp.csr_matrix((np.ones(codes.size), (rows, codes.ravel())), shape=(size, int(codes.max()) + 1))
    one_hot.data[:] = 1.0
    if len(_ONE_HOT) > 64:
        _ONE_HOT.clear()
    _ONE_HOT[id(feature)] = (feature, one_hot)
    return one_hot


def category_affinity(data: Dataset, features: list[str], profile: list[np.ndarray], request: np.ndarray,
                      item: np.ndarray) -> dict[str, np.ndarray]:
    """Per row (request index into `profile`, candidate item code): for each feature, the mean over the
    candidate's values of the share of the request's profile items having that value (0 without a profile)."""
    lengths = np.array([len(p) for p in profile])
    size = data.n_items + 1
    item = np.where(item < size, item, 0)        # items added after training have no features here
    out = {}
    for name in features:
        codes = data.item_features[name]
        codes = codes[:, None] if codes.ndim == 1 else codes                 # [n_items + 1, values]
        one_hot = _one_hot(data.item_features[name], codes, size)
        shares = kept_row_sums(one_hot, profile, np.float64) / np.maximum(lengths, 1)[:, None]    # [requests, values]
        shares[:, 0] = 0.0                                                   # value 0 = missing
        mine = codes[item]                                                   # [rows, values]
        present = mine > 0
        total = (shares[request[:, None], mine] * present).sum(1)
        out[f"affinity_{name}"] = total / np.maximum(present.sum(1), 1)
    return out
