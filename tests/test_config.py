"""The config file: actions extend the defaults, bad values are blamed on the config, never a traceback."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from twotower.config import Config, config_from_dict, load_config
from twotower.data.schema import read_events
from twotower.errors import InputError


def test_configured_actions_extend_the_defaults(tmp_path):
    cfg = config_from_dict({"data": {"actions": {"wishlist": 2, "Click": 1.5}}})
    assert cfg.data.actions["wishlist"] == 2 and cfg.data.actions["purchase"] == 5 and cfg.data.actions["click"] == 1.5
    events = tmp_path / "e.csv"
    events.write_text("user_id,item_id,timestamp,action\n1,2,100,wishlist\n1,3,101,purchase\n1,4,102,impression\n")
    assert read_events(events, cfg.data)["weight"].tolist() == [2, 5, 0]


def test_a_negative_weight_is_blamed_on_the_config(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[data.actions]\nreturn = -1\n")
    with pytest.raises(InputError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "data.actions" in str(err.value) and "events" not in str(err.value)


def test_an_empty_separator_and_a_config_that_is_not_utf8_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="multi_separator"):
        config_from_dict({"data": {"multi_separator": ""}})
    path = tmp_path / "latin1.toml"
    path.write_bytes("[data.actions]\n\"vu\xe9\" = 1\n".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        load_config(path)


def test_a_feature_kind_for_a_missing_column_is_reported(tmp_path, caplog):
    from twotower.pipeline import load_inputs

    events = tmp_path / "e.csv"
    pd.DataFrame({"user_id": ["a", "a", "b", "b"], "item_id": ["1", "2", "1", "3"], "timestamp": [1, 2, 3, 4]}).to_csv(
        events, index=False)
    cfg = config_from_dict({"data": {"feature_kinds": {"titel": "text"}}})
    with caplog.at_level(logging.WARNING):
        load_inputs(events, None, None, cfg)
    assert "'titel'" in caplog.text


def test_a_saved_config_reloads_unchanged():
    cfg = config_from_dict({"data": {"actions": {"wishlist": 2}}, "recommend": {"exclude_seen": False}})
    assert config_from_dict(cfg.model_dump()) == cfg and Config().recommend.exclude_seen
