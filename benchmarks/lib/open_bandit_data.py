"""The Open Bandit Dataset (ZOZOTOWN fashion e-commerce): logged impressions with clicks, positions and the
logging policy's propensities, from a uniform-random policy and from Bernoulli Thompson Sampling.

Read from $TWOTOWER_DATA/open-bandit-dataset-small (the 10,000-row-per-file sample the
`obp` package ships); the full logs (about 26M rows) are at research.zozo.com/data.html.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from twotower.data.movielens import search_roots
from twotower.errors import InputError

FOLDERS = ("open-bandit-dataset-small", "open_bandit_dataset", "obd")
POLICIES = ("random", "bts")
CAMPAIGNS = ("all", "men", "women")
USER_FEATURES = [f"user_feature_{i}" for i in range(4)]
ITEM_FEATURES = [f"item_feature_{i}" for i in range(4)]


@dataclass
class BanditLog:
    """One campaign's log under one policy. `impressions`: one row per shown item (timestamp in unix
    seconds, item_id, position, click, propensity, user features, the user's affinity with the shown item).
    `affinity`: [rows, n_items] the user's affinity with every item, so a new policy can score them all.
    `items`: item_id + item features."""

    impressions: pd.DataFrame
    affinity: np.ndarray
    items: pd.DataFrame
    policy: str
    campaign: str

    @property
    def n_items(self) -> int:
        return len(self.items)


def locate_open_bandit() -> Path:
    for root in search_roots():
        for name in FOLDERS:
            if (root / name / "random" / "all").is_dir():
                return (root / name).resolve()
    raise InputError("open bandit dataset", "not found in " + ", ".join(str(r) for r in search_roots()),
                     "set TWOTOWER_DATA to a folder holding open-bandit-dataset-small/{random,bts}/{all,men,"
                     "women} (pip download --no-deps --no-binary=:all: obp==0.5.7 has the sample)")


def load_open_bandit(folder: Path, policy: str, campaign: str) -> BanditLog:
    if policy not in POLICIES or campaign not in CAMPAIGNS:
        raise InputError("open bandit dataset", f"unknown policy/campaign {policy}/{campaign}",
                         f"use one of {POLICIES} / {CAMPAIGNS}")
    base = Path(folder) / policy / campaign
    log_file = next((p for p in (base / f"{campaign}.csv.gz", base / f"{campaign}.csv") if p.is_file()), None)
    if log_file is None:
        raise InputError(str(base), "no log file", f"expected {campaign}.csv.gz there")
    raw = pd.read_csv(log_file, index_col=0)
    items = pd.read_csv(base / "item_context.csv", index_col=0).sort_values("item_id").reset_index(drop=True)
    affinity = raw[[f"user-item_affinity_{i}" for i in items["item_id"]]].to_numpy(np.float64)
    impressions = pd.DataFrame({
        "timestamp": (pd.to_datetime(raw["timestamp"], utc=True)
                      - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(),
        "item_id": raw["item_id"].to_numpy(), "position": raw["position"].to_numpy(),
        "click": raw["click"].to_numpy(), "propensity": raw["propensity_score"].to_numpy(),
        **{c: raw[c].to_numpy() for c in USER_FEATURES},
    })
    impressions["affinity"] = affinity[np.arange(len(raw)), impressions["item_id"].to_numpy()]
    return BanditLog(impressions, affinity, items, policy, campaign)
