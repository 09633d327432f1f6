"""`evaluate` reports exactly what the serving path serves: the lists `recommend`'s server gives the
protocol's test requests, scored by an independent metric function, give the figures in its table."""

from __future__ import annotations

import math

import pytest

from tests.conftest import tiny_config
from twotower.evaluate.protocol import split_for_protocol
from twotower.pipeline import dataset_from_frames, evaluate
from twotower.serving import Server


def independent_scores(lists: dict[str, list[str]], targets: dict[str, str], k: int = 10) -> dict[str, float]:
    """HR@k and NDCG@k of served lists, from the definitions (no product code)."""
    hr = ndcg = 0.0
    for user, target in targets.items():
        ranked = lists.get(user, [])[:k]
        if target in ranked:
            hr += 1
            ndcg += 1 / math.log2(ranked.index(target) + 2)
    return {f"HR@{k}": hr / len(targets), f"NDCG@{k}": ndcg / len(targets)}


@pytest.mark.parametrize("rerank", [True, False])
def test_evaluate_reports_the_metrics_of_the_served_lists(small_ml, tmp_path, rerank):
    cfg = tiny_config(rank={"candidates": 50, "slice_events": 6})
    data = dataset_from_frames(*small_ml, cfg)
    table = evaluate(data, cfg, baselines=False, log=lambda _: None, show_progress=False,
                     model_dir=tmp_path / "model").table
    row = table.set_index("model").loc["TwoTower (ranked)" if rerank else "TwoTower (retrieval)"]
    _, test = split_for_protocol(data)
    users = data.users.decode(test.targets.users)
    targets = dict(zip(users, data.items.decode(test.targets.items)))
    server = Server.open(tmp_path / "model", rerank=rerank, point_in_time=True)
    try:
        served = server.top_k(server.saved.history.users.encode(users), 20, at=test.targets.times)
    finally:
        server.close()
    lists = {u: [i for i in row_ids if i is not None] for u, row_ids in zip(users, served.ids)}
    for k in (10, 20):
        mine = independent_scores(lists, targets, k)
        assert row[f"HR@{k}"] == pytest.approx(mine[f"HR@{k}"], abs=1e-9)
        assert row[f"NDCG@{k}"] == pytest.approx(mine[f"NDCG@{k}"], abs=1e-9)
    assert 0 < row["HR@20"] < 1                      # a real measurement, neither empty nor saturated
    history = test.history.events[test.history.events["weight"] > 0]
    seen = set(zip(data.users.decode(history["user"]), data.items.decode(history["item"])))
    assert not [(u, i) for u, served_items in lists.items() for i in served_items if (u, i) in seen]
