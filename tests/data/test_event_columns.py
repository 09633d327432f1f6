"""Events as numpy columns read as their frame does, and the event log takes and gives them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from twotower.data.event_columns import as_columns, column, concat_columns, rows_in, where
from twotower.features.event_log import EventLog, beyond, follows


def _events() -> pd.DataFrame:
    return pd.DataFrame({"user_id": ["u1", "u2", "u1"], "item_id": ["a", "b", "c"],
                         "timestamp": [1.0e9, 1.0e9 + 5, 1.0e9 + 9], "weight": [1.0, 0.0, 5.0],
                         "event_id": ["e1", None, "e3"]})


def test_columns_read_as_their_frame():
    frame = _events()
    cols = as_columns(frame)
    assert rows_in(cols) == rows_in(frame) == 3 and rows_in({}) == 0
    keep = np.array([True, False, True])
    pd.testing.assert_frame_equal(pd.DataFrame(where(cols, keep)), where(frame, keep).reset_index(drop=True))
    np.testing.assert_array_equal(column(cols, "timestamp", np.float64), frame["timestamp"].to_numpy())


def test_concatenated_batches_mark_a_column_one_lacks_as_missing():
    first = as_columns(_events())
    second = {"user_id": np.array(["u9"], object), "item_id": np.array(["z"], object),
              "timestamp": np.array([2.0e9]), "weight": np.array([1.0])}
    both = concat_columns([first, second])
    assert rows_in(both) == 4 and both["user_id"].tolist() == ["u1", "u2", "u1", "u9"]
    assert both["event_id"][0] == "e1" and pd.isna(both["event_id"][1]) and both["event_id"][3] is None
    assert both["timestamp"].dtype == np.float64


def test_the_log_stores_columns_and_frames_alike_once_per_event_id(tmp_path):
    log = EventLog(tmp_path / "events.sqlite")
    try:
        stored = log.append(as_columns(_events()))
        assert stored["seq"].tolist() == [1, 2, 3] and stored["event_id"].tolist() == ["e1", None, "e3"]
        again = log.append(_events())                     # e1 and e3 are stored already; the id-less one is new
        assert len(again["seq"]) == 1 and again["seq"][0] > 3 and again["user_id"].tolist() == ["u2"]
        assert follows(stored, 0) and not follows(stored, 1) and follows(again, int(again["seq"][0]) - 1)
        assert beyond(stored, "seq", 0) is stored and beyond(stored, "seq", 2)["seq"].tolist() == [3]
        back = log.since(0)
        assert back["seq"].tolist() == [1, 2, 3, again["seq"][0]] and back["item_id"].tolist() == ["a", "b", "c", "b"]
    finally:
        log.close()
