"""Cold items: a random share of the catalog's items is held out of training entirely (every event on them
is removed from what the models learn from; they stay in the items table, so they are in the catalog with
their features), and the protocol's test targets on those items are scored apart from the others. Content
towers can place a cold item from its features; an id-only model and popularity cannot."""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import pandas as pd

from ..data.dataset import Dataset
from ..data.split import holdout_last
from ..errors import InputError
from .metrics import mean_interval, ndcg_at
from .protocol import EvalSet

KS_SHOWN = (10, 20)


@dataclass
class ColdSplit:
    """The protocol's test, with the training history stripped of the cold items' events."""

    history: Dataset           # events before each user's test event, none on a cold item
    validation: EvalSet        # each user's last event of `history`, for early stopping and tuning
    cold: EvalSet              # test targets on a cold item
    warm: EvalSet              # the other test targets
    cold_items: np.ndarray     # item codes held out


def cold_split(test: EvalSet, fraction: float, seed: int = 0) -> ColdSplit:
    """Hold `fraction` of the items with a positive event out of `test.history` (drawn at random)."""
    if not 0.0 < fraction < 1.0:
        raise InputError("--cold-items", f"{fraction} is not a share of the items",
                         "give a number between 0 and 1, e.g. 0.1")
    hist = test.history
    if not hist.item_specs:
        raise InputError("--cold-items", "the items have no feature columns, so nothing can place an item "
                         "never seen in training", "give an items table (--items) with text or category columns")
    seen_items = np.unique(hist.events.loc[hist.events["weight"] > 0, "item"].to_numpy())
    rng = np.random.default_rng(seed)
    cold_items = np.sort(rng.choice(seen_items, max(1, int(round(len(seen_items) * fraction))), replace=False))
    is_cold = np.zeros(hist.n_items + 1, bool)
    is_cold[cold_items] = True
    history = hist.subset(~is_cold[hist.events["item"].to_numpy()])
    before, val_targets = holdout_last(history, min_history=1)
    targets = test.targets
    on_cold = is_cold[targets.items]
    if not on_cold.any():
        raise InputError("--cold-items", "no test event is on a held-out item", "hold out a larger share")
    return ColdSplit(history, EvalSet.make(before, val_targets), EvalSet.make(history, targets.subset(on_cold)),
                     EvalSet.make(history, targets.subset(~on_cold)), cold_items)


def cold_rows(name: str, ranks: dict[str, np.ndarray], seconds: float = 0.0) -> list[dict]:
    """One row per split ('cold', 'warm') of recall@K and NDCG@10 with 95% bootstrap intervals."""
    rows = []
    for split, r in ranks.items():
        row = {"model": name, "items": split, "targets": len(r)}
        for k in KS_SHOWN:
            mean, low, high = mean_interval((r < k).astype(np.float64))
            row[f"Recall@{k}"], row[f"Recall@{k} 95%"] = mean, f"[{low:.4f}, {high:.4f}]"
        mean, low, high = mean_interval(ndcg_at(r, 10))
        row["NDCG@10"], row["NDCG@10 95%"] = mean, f"[{low:.4f}, {high:.4f}]"
        row["seconds"] = seconds
        rows.append(row)
    return rows


def cold_table(rows: list[dict]) -> pd.DataFrame:
    """The rows, cold items first."""
    return pd.DataFrame(rows).sort_values(["items", "Recall@20"], ascending=[True, False], kind="stable") \
        .reset_index(drop=True)

