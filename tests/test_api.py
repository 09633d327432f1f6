"""The public Python API as a user calls it: `twotower.train` -> `Model`, `twotower.load`, `recommend`
(the same rows as the CLI), `similar`, and `ingest` (durable, idempotent, seen at once, safe beside reads)."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import twotower
from tests.conftest import tiny_config
from twotower.cli import app
from twotower.errors import InputError
from twotower.features.event_log import LOG_FILE, EventLog
from twotower.features.materialize import FEATURES_DIR

CFG = tiny_config(rank={"candidates": 40, "slice_events": 3})


@pytest.fixture(scope="module")
def trained(small_ml, tmp_path_factory):
    """A model trained from DataFrames through the public API, closed again (tests open their own)."""
    events, items, users = small_ml
    out = tmp_path_factory.mktemp("api") / "model"
    with twotower.train(events, items, users, config=CFG, out=out) as model:
        assert model.ranked, model.note
    return out


@pytest.fixture()
def model_dir(trained, tmp_path):
    """A private copy: ingest writes into the model folder."""
    return shutil.copytree(trained, tmp_path / "model")


def test_python_recommend_equals_the_cli_file(trained, tmp_path):
    users = [str(u) for u in range(1, 101)]
    (tmp_path / "users.txt").write_text("user_id\n" + "\n".join(users) + "\n")
    out = tmp_path / "recs.csv"
    result = CliRunner().invoke(app, ["recommend", "-m", str(trained), "-u", str(tmp_path / "users.txt"), "-k", "10",
                                      "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    cli = pd.read_csv(out, dtype={"user_id": str, "item_id": str})
    with twotower.load(trained) as model:
        api = model.recommend(users, k=10)
    assert list(api.columns) == ["user_id", "item_id", "rank", "score"]
    assert len(api) == 1000 and api["user_id"].nunique() == 100
    pd.testing.assert_frame_equal(api[["user_id", "item_id", "rank"]], cli[["user_id", "item_id", "rank"]],
                                  check_dtype=False)
    np.testing.assert_allclose(api["score"], cli["score"], rtol=1e-5)


def test_ingest_changes_the_list_and_excludes_the_new_items(model_dir, small_ml):
    events, _, _ = small_ml
    user = "7"
    with twotower.load(model_dir) as model:
        before = model.recommend(user, k=20)
        new_items = before["item_id"].tolist()[:5]         # the user's own top items: they must leave the list
        at = float(events["timestamp"].max()) + 60
        stored = model.ingest(pd.DataFrame({"user_id": user, "item_id": new_items, "action": "click",
                                            "timestamp": at + np.arange(5), "event_id": [f"e{i}" for i in range(5)]}))
        after = model.recommend(user, k=20)
        assert stored == 5
        assert not set(new_items) & set(after["item_id"]), "ingested items are seen: excluded"
        assert before["item_id"].tolist() != after["item_id"].tolist()
        assert model.history(user)["item_id"].tolist()[:5] == new_items[::-1], "newest first"
        again = model.ingest(pd.DataFrame({"user_id": user, "item_id": new_items[:2], "action": "click",
                                           "timestamp": at, "event_id": ["e0", "e1"]}))
        assert again == 0, "an event_id already stored is not stored twice"
    with twotower.load(model_dir) as reopened:
        assert reopened.recommend(user, k=20)["item_id"].tolist() == after["item_id"].tolist(), \
            "ingested events survive closing the model"


def test_ingest_counts_each_new_event_once_alone_and_in_a_group_commit(model_dir):
    def event(event_id=None, n=0):
        return {"user_id": "5", "item_id": "50", "action": "click", "timestamp": 1e9 + n,
                **({"event_id": event_id} if event_id else {})}

    with twotower.load(model_dir) as model:
        assert model.ingest([event("x1")]) == 1
        # one request: a stored id, a new id twice, two events without an id
        assert model.ingest([event("x1"), event("x2", 1), event("x2", 2), event(n=3), event(n=4)]) == 3
        # a group commit: an id both requests send counts for the first only
        first, second = (model.check_events(batch) for batch in ([event("x3"), event("x4")], [event("x4"), event()]))
        assert model.ingest_checked([first, second]) == [2, 1]
        assert model.ingest_checked([model.check_events([event("x3")])]) == [0]


def test_a_user_who_arrives_through_events_gets_personal_items(model_dir):
    with twotower.load(model_dir) as model:
        assert not model.knows(["newcomer"])[0]
        popular = model.recommend("newcomer", k=10)["item_id"].tolist()
        seen = ["50", "181", "100"]
        model.ingest([{"user_id": "newcomer", "item_id": i, "action": "purchase", "timestamp": 1e9 + n}
                      for n, i in enumerate(seen)])
        assert model.knows(["newcomer"])[0]
        recs = model.recommend("newcomer", k=10)["item_id"].tolist()
        assert not set(seen) & set(recs) and recs != popular
        assert "newcomer" in model.user_ids()


def test_events_logged_but_not_applied_are_applied_on_open(model_dir):
    """A crash after the event was acknowledged (logged) and before the online store applied it."""
    log = EventLog(model_dir / FEATURES_DIR / LOG_FILE)
    stored = log.append(pd.DataFrame({"user_id": ["3"], "item_id": ["50"], "timestamp": [1e9], "weight": [1.0]}))
    log.close()
    with twotower.load(model_dir) as model:
        assert model._server.features.applied(model._log.log_id) == int(stored["seq"].max())
        assert "50" in model.history("3")["item_id"].tolist()


def test_similar_items_come_from_the_item_vectors(trained):
    with twotower.load(trained) as model:
        sims = model.similar(["50", "181"], k=5)
        assert list(sims.columns) == ["item_id", "similar_id", "rank", "score"]
        assert len(sims) == 10 and not (sims["item_id"] == sims["similar_id"]).any()
        assert (sims.groupby("item_id")["score"].apply(lambda s: s.is_monotonic_decreasing)).all()
        with pytest.raises(InputError, match="'no-such-item'"):
            model.similar("no-such-item")


def test_bad_requests_get_one_clear_error(trained):
    with twotower.load(trained) as model:
        with pytest.raises(InputError, match="k: must be a positive whole number"):
            model.recommend("1", k=0)
        with pytest.raises(InputError, match="unknown context field"):
            model.recommend("1", context={"no_such_column": "x"})
        with pytest.raises(InputError, match="2 times for 1 users"):
            model.recommend("1", at=[1.0, 2.0])
        with pytest.raises(InputError, match="unknown action 'teleport'"):
            model.ingest([{"user_id": "1", "item_id": "50", "action": "teleport", "timestamp": 1e9}])


def test_the_request_time_is_read_when_given(trained):
    with twotower.load(trained) as model:
        a = model.recommend("1", k=10, at="2024-01-01T03:00:00")
        b = model.recommend("1", k=10, at=1704078000.0)       # the same instant
        pd.testing.assert_frame_equal(a, b)


def test_reads_and_ingest_run_side_by_side(model_dir):
    errors = []
    with twotower.load(model_dir) as model:
        users = [str(u) for u in range(1, 31)]

        def read():
            try:
                for _ in range(5):
                    recs = model.recommend(users, k=10)
                    assert recs["user_id"].nunique() == 30
            except Exception as exc:        # noqa: BLE001 (reported below)
                errors.append(exc)

        before = len(model.history("1"))
        readers = [threading.Thread(target=read) for _ in range(3)]
        for t in readers:
            t.start()
        for n in range(5):
            model.ingest([{"user_id": "1", "item_id": f"{1600 + n}", "action": "click", "timestamp": 1e9 + n}])
        for t in readers:
            t.join()
        assert not errors, errors
        assert len(model.history("1")) == before + 5


def test_catalog_changes_swap_in_while_reads_run(model_dir, small_ml, tmp_path):
    """FAISS cannot search and add at once: `update_catalog` changes a copy and swaps it in whole."""
    _, items, _ = small_ml
    new = items.head(5).assign(item_id=lambda t: "new-" + t["item_id"].astype(str))
    new.to_csv(tmp_path / "new_items.csv", index=False)
    errors, stop = [], threading.Event()
    with twotower.load(model_dir) as model:
        def read():
            try:
                while not stop.is_set():
                    assert len(model.recommend([str(u) for u in range(1, 21)], k=10)) == 200
            except Exception as exc:        # noqa: BLE001 (reported below)
                errors.append(exc)

        readers = [threading.Thread(target=read) for _ in range(2)]
        for t in readers:
            t.start()
        build = model.update_catalog(items=tmp_path / "new_items.csv")
        stop.set()
        for t in readers:
            t.join()
        assert not errors, errors
        assert build.new_items == 5
        assert len(model.similar(new["item_id"].tolist(), k=3)) == 15, "the new items are searchable"
