"""The ranker on logged bandit feedback (Open Bandit): learn clicks from one policy's impressions (no-click
impressions are the negatives) with inverse-propensity weights, then estimate off-policy what click rate its
choices would get on logs from another policy (uniform random, where IPS is unbiased), beside the logging
policies' own click rates.

Clicks are rare (about 40 per 10,000 impressions per campaign), so the click model learns from all
campaigns' training logs at once: items are keyed by campaign, and the item features are shared.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .open_bandit_data import ITEM_FEATURES, USER_FEATURES, BanditLog
from .click_model import ClickModel, ips_weights
from .off_policy import OffPolicyEstimate, estimate, top_k_policy

FEATURES = ["position", "affinity", "item_key", "campaign", *USER_FEATURES, *ITEM_FEATURES]
CATEGORICAL = ["item_key", "campaign", *USER_FEATURES, *ITEM_FEATURES[1:]]


def _keyed(frame: pd.DataFrame, log: BanditLog) -> pd.DataFrame:
    return frame.assign(campaign=log.campaign, item_key=log.campaign + ":" + frame["item_id"].astype(str))


def impression_rows(log: BanditLog) -> pd.DataFrame:
    """The logged impressions with the shown item's features."""
    return _keyed(log.impressions.merge(log.items, on="item_id", how="left", validate="many_to_one"), log)


def every_item_rows(log: BanditLog) -> pd.DataFrame:
    """For each logged context (user features, position), one row per catalog item with its affinity."""
    n, m = len(log.impressions), log.n_items
    ctx = log.impressions.loc[np.repeat(np.arange(n), m), ["position", *USER_FEATURES]].reset_index(drop=True)
    items = log.items.iloc[np.tile(np.arange(m), n)].reset_index(drop=True)
    return _keyed(pd.concat([ctx, items], axis=1).assign(affinity=log.affinity.ravel()), log)


def fit_click_model(logs: list[BanditLog], weighting: str = "ips", clip: float = 100.0) -> ClickModel:
    rows = pd.concat([impression_rows(log) for log in logs], ignore_index=True)
    weight = ips_weights(rows["propensity"], clip) if weighting == "ips" else None
    return ClickModel(FEATURES, CATEGORICAL).fit(rows, weight=weight)


def item_scores(model: ClickModel, log: BanditLog) -> tuple[np.ndarray, np.ndarray]:
    """([contexts, n_items] click scores of every item for each logged context, [contexts] logged item index)."""
    scores = model.predict(every_item_rows(log)).reshape(len(log.impressions), log.n_items)
    item_index = pd.Series(np.arange(log.n_items), index=log.items["item_id"])
    return scores, item_index[log.impressions["item_id"]].to_numpy()


def bandit_table(train: list[BanditLog], evaluation: list[BanditLog], ks=(1, 3, 5, 10),
                 clip: float = 100.0) -> pd.DataFrame:
    """Per evaluation campaign and pooled: the logging policies' click rates and the ranker's estimated click
    rates (IPS and SNIPS with 95% bootstrap intervals), one row each."""
    models = {"IPS-weighted": fit_click_model(train, "ips", clip), "unweighted": fit_click_model(train, "none")}
    # (policy, training) -> per campaign (target probability, logging propensity, click)
    parts: dict[tuple[str, str], list] = {}
    own = {log.campaign: log for log in train}
    for log in evaluation:
        p, click = log.impressions["propensity"].to_numpy(), log.impressions["click"].to_numpy()
        parts.setdefault((f"{log.policy} (logging policy of the evaluated log)", "-"), []).append((p, p, click))
        if log.campaign in own:
            t = own[log.campaign].impressions
            parts.setdefault((f"{own[log.campaign].policy} (logging policy, on its own log)", "-"), []).append(
                (t["propensity"].to_numpy(),) * 2 + (t["click"].to_numpy(),))
        scored = {how: item_scores(model, log) for how, model in models.items()}
        for k in ks:
            name = f"ranker top-{k}" + (" (greedy)" if k == 1 else " (uniform among them)")
            for how, (scores, logged) in scored.items():
                parts.setdefault((name, how), []).append((top_k_policy(scores, logged, k), p, click))
    rows = []
    campaigns = [log.campaign for log in evaluation] + (["pooled"] if len(evaluation) > 1 else [])
    for (policy, how), per_campaign in parts.items():
        for campaign, arrays in zip(campaigns, per_campaign + ([tuple(map(np.concatenate, zip(*per_campaign)))]
                                                               if len(evaluation) > 1 else [])):
            rows.append({"campaign": campaign, **_row(policy, how, estimate(*arrays))})
    table = pd.DataFrame(rows)
    base = table[table["training"] == "-"].groupby("campaign")["SNIPS"].first()
    return table.assign(lift=table["SNIPS"] / table["campaign"].map(base)).sort_values(
        "campaign", kind="stable", key=lambda c: c.map({n: i for i, n in enumerate(campaigns)}))


def _row(policy: str, training: str, e: OffPolicyEstimate) -> dict:
    return {"policy": policy, "training": training, "IPS": e.ips, "IPS low": e.ips_interval[0],
            "IPS high": e.ips_interval[1], "SNIPS": e.snips, "SNIPS low": e.snips_interval[0],
            "SNIPS high": e.snips_interval[1], "matched rows": e.matched}
