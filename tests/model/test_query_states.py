"""The query states a server keeps give exactly the queries computed afresh, change with the user's history,
and stay within their bound."""

from __future__ import annotations

import numpy as np
import torch

import twotower
from twotower.data.dataset import request_context
from twotower.model.query_states import QueryStates
from twotower.model.recommender import query_vectors


def _fresh(server, users: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The queries as the towers compute them with nothing kept."""
    state = server.users
    ctx = request_context(server.saved.history.context_specs, at, state.last_seen_of(users), None)
    with torch.no_grad():
        items = server.saved.model.all_item_vectors()
    return query_vectors(server.saved.model, state.histories_of(users), users, ctx, items)


def test_kept_states_give_the_queries_computed_afresh_at_any_time(tiny_model):
    with twotower.load(tiny_model[0], rank=False) as m:
        server = m._server
        states = server.catalog.states
        users = np.flatnonzero(server.knows(np.arange(server.saved.history.n_users + 1)))[:12]
        at = np.full(len(users), 1_700_100_000.0)
        first, _ = server.query_vectors(users, at, None)
        assert (states.hits, states.misses) == (0, len(users))
        later = at + 3 * 3600.0 + 86_400.0                 # another hour and weekday: the context changes
        again, _ = server.query_vectors(users, later, None)
        assert (states.hits, states.misses) == (len(users), len(users))
        np.testing.assert_allclose(first, _fresh(server, users, at), atol=1e-5)
        np.testing.assert_allclose(again, _fresh(server, users, later), atol=1e-5)


def test_an_event_makes_a_new_state_instead_of_reading_a_stale_one(tiny_model, tmp_path):
    import shutil

    folder = shutil.copytree(tiny_model[0], tmp_path / "model")
    with twotower.load(folder, rank=False) as m:
        user = m.user_ids()[0]
        code = m._server.saved.history.users.encode([user])
        at = np.array([1_800_000_000.0])
        before, _ = m._server.query_vectors(code, at, None)
        m.ingest([{"user_id": user, "item_id": m.item_ids()[-1], "action": "purchase", "timestamp": 1_750_000_000.0}])
        server = m._server
        after, _ = server.query_vectors(code, at, None)
        assert server.catalog.states.misses == 2 and not np.allclose(before, after)
        np.testing.assert_allclose(after, _fresh(server, code, at), atol=1e-5)


def test_states_are_bounded_and_none_are_kept_at_size_zero(tiny_model):
    with twotower.load(tiny_model[0], rank=False) as m:
        server = m._server
        users = np.flatnonzero(server.knows(np.arange(server.saved.history.n_users + 1)))[:6]
        histories = server.users.histories_of(users)
        ctx = request_context(server.saved.history.context_specs, np.full(len(users), np.nan),
                              server.users.last_seen_of(users), None)
        items = server.catalog.states.item_vectors
        for size, kept in ((4, 4), (0, 0)):
            states = QueryStates(server.saved.model, items, size)
            states.queries(histories, users, ctx)
            assert len(states) == kept
        states = QueryStates(server.saved.model, items, 4)
        states.queries(histories[:4], users[:4], {k: v[:4] for k, v in ctx.items()})
        states.queries(histories[:1], users[:1], {k: v[:1] for k, v in ctx.items()})    # the first, used again
        states.queries(histories[4:5], users[4:5], {k: v[4:5] for k, v in ctx.items()})
        assert (int(users[0]), histories[0].tobytes()) in states._states            # the least recent left
        assert (int(users[1]), histories[1].tobytes()) not in states._states


def test_recent_users_are_the_latest_distinct_askers_first_and_keep_fills_them(tiny_model):
    with twotower.load(tiny_model[0], rank=False) as m:
        server = m._server
        states = server.catalog.states
        users = np.flatnonzero(server.knows(np.arange(server.saved.history.n_users + 1)))[:4]
        at = np.full(2, 1_700_100_000.0)
        server.query_vectors(users[:2], at, None)
        server.query_vectors(users[2:], at, None)
        server.query_vectors(users[:1], at[:1], None)           # asked again: the latest
        assert states.recent_users(3).tolist() == [users[0], users[3], users[2]]
        fresh = QueryStates(server.saved.model, server.catalog.states.item_vectors, 10)
        fresh.keep(server.users.histories_of(users), users)
        assert (len(fresh), fresh.misses) == (4, 4)
        fresh.keep(server.users.histories_of(users), users)
        assert fresh.hits == 4 and sorted(fresh.recent_users(10).tolist()) == sorted(users.tolist())
