"""Offline features are point-in-time correct: equal to a brute-force count over strictly earlier events, and
blind to anything at or after the request time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from twotower.errors import InputError
from twotower.features.definitions import DAY, FeatureDefinitions
from twotower.features.offline import OfflineStore


def random_log(seed: int = 0, n: int = 600) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "user_id": rng.integers(0, 12, n).astype(str),
        "item_id": rng.integers(0, 15, n).astype(str),
        "timestamp": np.sort(rng.integers(0, 40 * int(DAY), n)).astype(float),   # ties happen
        "weight": rng.choice([0.0, 1.0, 5.0], n),
    })


def brute_force(events: pd.DataFrame, user: str, item: str, t: float, windows) -> dict:
    before = events[(events["timestamp"] < t) & (events["weight"] > 0)]
    it, us = before[before["item_id"] == item], before[before["user_id"] == user]
    row = {f"item_count_{w:g}d": int((it["timestamp"] >= t - w * DAY).sum()) for w in windows}
    row.update(item_count_all=len(it), user_events=len(us), user_weight=float(us["weight"].sum()),
               user_item_events=int((us["item_id"] == item).sum()),
               item_age_days=(t - it["timestamp"].min()) / DAY if len(it) else np.nan,
               user_gap_hours=(t - us["timestamp"].max()) / 3600 if len(us) else np.nan)
    return row


def test_features_equal_a_brute_force_count_over_earlier_events(tmp_path):
    events = random_log()
    store = OfflineStore(tmp_path)
    store.write_events(events)
    rng = np.random.default_rng(1)
    requests = events.sample(80, random_state=2)[["user_id", "item_id", "timestamp"]].reset_index(drop=True)
    requests.loc[:9, "timestamp"] += rng.integers(1, 3 * int(DAY), 10)    # some between events too
    got = pd.DataFrame(store.features(requests))
    assert len(got) == len(requests)
    windows = store.definitions.windows_days
    for i, r in requests.iterrows():
        want = brute_force(events, r["user_id"], r["item_id"], r["timestamp"], windows)
        for name, value in want.items():
            assert got.loc[i, name] == pytest.approx(value, nan_ok=True), (i, name)
    assert set(FeatureDefinitions().names) <= set(got.columns)
    assert got["hour"].between(0, 23).all() and got["weekday"].between(0, 6).all()


def test_a_prepared_store_answers_each_chunk_as_the_plain_store_does(tmp_path):
    """`prepared` computes the running counts once for a batch job's chunks of requests: the same rows."""
    events = random_log(seed=3)
    store = OfflineStore(tmp_path)
    store.write_events(events)
    requests = events.sample(90, random_state=4)[["user_id", "item_id", "timestamp"]].reset_index(drop=True)
    plain = pd.DataFrame(store.features(requests))
    with store.prepared() as counted:
        chunks = [pd.DataFrame(counted.features(requests.iloc[lo:lo + 25].reset_index(drop=True)))
                  for lo in range(0, len(requests), 25)]
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), plain)
    assert store._counted is None                                  # released on leaving the block
    pd.testing.assert_frame_equal(pd.DataFrame(store.features(requests)), plain)


def test_a_later_event_never_reaches_an_earlier_training_row(tmp_path):
    """The leakage test: events at or after the request time change nothing; an earlier one does."""
    events = random_log(seed=3)
    request = events.iloc[[300]][["user_id", "item_id", "timestamp"]].reset_index(drop=True)
    t = float(request["timestamp"].iloc[0])
    user, item = request["user_id"].iloc[0], request["item_id"].iloc[0]
    store = OfflineStore(tmp_path)
    store.write_events(events)
    before = pd.DataFrame(store.features(request))

    future = pd.DataFrame({"user_id": [user, user, "other"], "item_id": [item, item, item],
                           "timestamp": [t, t + 1, t + 60], "weight": [5.0, 1.0, 1.0]})
    store.write_events(pd.concat([events, future], ignore_index=True))
    pd.testing.assert_frame_equal(pd.DataFrame(store.features(request)), before)

    past = future.assign(timestamp=[t - 1, t - 2, t - 60])     # the same events a moment earlier do count
    store.write_events(pd.concat([events, past], ignore_index=True))
    after = pd.DataFrame(store.features(request))
    assert after["user_item_events"].iloc[0] == before["user_item_events"].iloc[0] + 2
    assert after["item_count_1d"].iloc[0] == before["item_count_1d"].iloc[0] + 3
    assert after["user_gap_hours"].iloc[0] == pytest.approx(1 / 3600)


def test_missing_columns_and_an_empty_store_are_clear_errors(tmp_path):
    store = OfflineStore(tmp_path)
    with pytest.raises(InputError, match="no events"):
        store.features(pd.DataFrame({"user_id": ["1"], "item_id": ["2"], "timestamp": [0.0]}))
    with pytest.raises(InputError, match="missing column"):
        store.write_events(pd.DataFrame({"user_id": ["1"]}))
