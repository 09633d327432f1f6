"""Off-policy estimates recover a known policy's click rate from another policy's log, and the click model
learns clicks per item from biased logged impressions when inverse-propensity weights undo the bias."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from twotower.errors import InputError
from benchmarks.lib.click_model import ClickModel, ips_weights
from benchmarks.lib.off_policy import estimate, top_k_policy

CTR = np.array([0.02, 0.05, 0.10, 0.20, 0.03])


def uniform_log(n=40_000, seed=0):
    rng = np.random.default_rng(seed)
    shown = rng.integers(0, len(CTR), n)
    return shown, np.full(n, 1 / len(CTR)), (rng.random(n) < CTR[shown]).astype(float)


def test_ips_and_snips_recover_the_click_rate_of_a_policy_that_never_ran():
    shown, p, click = uniform_log()
    scores = np.tile(CTR, (len(shown), 1))            # a policy that knows the click rates
    for k, truth in ((1, CTR[3]), (2, (CTR[3] + CTR[2]) / 2)):
        e = estimate(top_k_policy(scores, shown, k), p, click)
        assert e.ips_interval[0] <= truth <= e.ips_interval[1]
        assert e.snips_interval[0] <= truth <= e.snips_interval[1]
        assert abs(e.ips - truth) < 0.02
    e = estimate(p, p, click)                          # the logging policy itself: its observed click rate
    assert e.ips == pytest.approx(click.mean()) and e.snips == pytest.approx(click.mean())


def test_top_k_policy_is_a_distribution_and_shares_ties():
    scores = np.array([[3.0, 2.0, 2.0, 2.0, 1.0]])
    probs = [top_k_policy(scores, np.array([i]), 2)[0] for i in range(5)]
    assert probs == pytest.approx([0.5, 1 / 6, 1 / 6, 1 / 6, 0.0]) and sum(probs) == pytest.approx(1.0)


def test_ips_weights_are_capped_and_bad_propensities_refused():
    w = ips_weights(np.array([0.5, 0.001, 0.25]), clip=100)
    assert w.mean() == pytest.approx(1.0) and w[1] / w[0] == pytest.approx(50)
    with pytest.raises(InputError, match="propensity"):
        ips_weights(np.array([0.5, 0.0]))


def test_inverse_propensity_weights_undo_a_logging_policy_that_favours_bad_items():
    """The logging policy shows the worst items most; item identity alone must be learned per impression."""
    rng = np.random.default_rng(1)
    show_prob = np.array([0.45, 0.30, 0.05, 0.02, 0.18])          # favours items 0, 1 (low click rates)
    n = 20_000
    shown = rng.choice(len(CTR), n, p=show_prob)
    # position confounds: bad items were shown at the top, where everything gets clicked more
    position = np.where(show_prob[shown] > 0.1, 1, 3)
    click = (rng.random(n) < CTR[shown] * np.where(position == 1, 1.5, 0.7)).astype(float)
    rows = pd.DataFrame({"item": shown.astype(str), "position": position, "click": click})
    model = ClickModel(["item", "position"], ["item"]).fit(rows, weight=ips_weights(show_prob[shown]))
    grid = pd.DataFrame({"item": np.arange(len(CTR)).astype(str), "position": 2})
    assert int(np.argmax(model.predict(grid))) == int(np.argmax(CTR))
    assert model.report["clicks"] == int(click.sum()) and model.report["trees"] >= 1
