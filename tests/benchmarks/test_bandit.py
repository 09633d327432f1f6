"""The Open Bandit loader and the bandit table on the real logs (one small campaign)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.lib.open_bandit_data import load_open_bandit, locate_open_bandit
from twotower.errors import InputError
from benchmarks.lib.bandit import bandit_table
from tests.conftest import missing


@pytest.fixture(scope="module")
def folder():
    try:
        return locate_open_bandit()
    except InputError as exc:
        missing(str(exc))


def test_the_log_keeps_positions_propensities_and_the_shown_items_affinity(folder):
    log = load_open_bandit(folder, "random", "men")
    imp = log.impressions
    assert len(imp) == 10_000 and log.n_items == 34 and log.affinity.shape == (10_000, 34)
    assert set(imp["position"]) == {1, 2, 3} and np.allclose(imp["propensity"], 1 / 34)
    assert imp["click"].sum() == 46
    assert (imp["affinity"].to_numpy() == log.affinity[np.arange(10_000), imp["item_id"]]).all()
    assert imp["timestamp"].is_monotonic_increasing and imp["timestamp"].iloc[0] > 1.5e9
    with pytest.raises(InputError, match="unknown policy"):
        load_open_bandit(folder, "greedy", "men")


def test_bandit_table_reports_every_policy_with_intervals(folder):
    table = bandit_table([load_open_bandit(folder, "bts", "men")], [load_open_bandit(folder, "random", "men")],
                         ks=(1, 5))
    assert len(table) == 2 + 2 * 2
    logging = table.iloc[0]
    assert logging["IPS"] == pytest.approx(46 / 10_000) and logging["lift"] == 1.0
    assert (table["SNIPS low"] <= table["SNIPS"]).all() and (table["SNIPS"] <= table["SNIPS high"]).all()
    ranker = table[table["training"] == "IPS-weighted"]
    assert ranker["matched rows"].between(1, 10_000).all()
