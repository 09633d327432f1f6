"""Repeat consumption is data: logs where users buy the same item again train and evaluate, under both
readings of a repeat (excluded from recommendations, or the point of them)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import synthetic_log, tiny_config
from twotower.evaluate.protocol import split_for_protocol
from twotower.pipeline import dataset_from_frames, evaluate, train_and_save
from twotower.recommend import recommend


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(repeat_share=st.sampled_from([0.3, 0.7, 1.0]), users=st.integers(8, 30), exclude_seen=st.booleans(),
       seed=st.integers(0, 1000))
def test_generated_logs_with_repeats_train_recommend_and_evaluate(tmp_path_factory, repeat_share, users, exclude_seen,
                                                                   seed):
    cfg = tiny_config(train={"epochs": 1}, rank={"candidates": 10, "slice_events": 2},
                      recommend={"exclude_seen": exclude_seen})
    log = synthetic_log(users=users, items=15, per_user=8, repeat_share=repeat_share, seed=seed)
    data = dataset_from_frames(log, None, None, cfg)
    folder = tmp_path_factory.mktemp("repeats")
    train_and_save(data, cfg, folder / "model", {}, show_progress=False)
    recs = recommend(folder / "model", "all", 5, folder / "recs.csv", show_progress=False)
    assert recs.rows > 0
    _, test = split_for_protocol(data, exclude_seen)
    if len(test.targets):            # under exclude_seen a log of repeats only has nothing to rank, and says so
        table = evaluate(data, cfg, baselines=False, log=lambda _: None, show_progress=False).table
        assert np.isfinite(table.loc[0, "NDCG@10"])


def test_repeats_count_as_targets_only_when_seen_items_are_allowed():
    cfg = tiny_config()
    log = synthetic_log(users=20, items=15, per_user=8, repeat_share=1.0, seed=1)   # after the first, all repeats
    data = dataset_from_frames(log, None, None, cfg)
    _, masked = split_for_protocol(data, exclude_seen=True)
    _, unmasked = split_for_protocol(data, exclude_seen=False)
    assert len(masked.targets) == 0 and len(unmasked.targets) == 20
    assert unmasked.seen.nnz == 0
