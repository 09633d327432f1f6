from pathlib import Path

import pandas as pd
import pytest

from twotower.config import DataConfig
from twotower.data.schema import read_events, read_table, validate_event_rows, validate_events
from twotower.errors import InputError

CFG = DataConfig()


def test_actions_map_to_graded_weights_and_numbers_pass_through(write_csv):
    path = write_csv("e.csv", [
        {"user_id": "a", "item_id": 1, "timestamp": 10, "action": "impression"},
        {"user_id": "a", "item_id": 2, "timestamp": 11, "action": "Click"},
        {"user_id": "a", "item_id": 3, "timestamp": 12, "action": "purchase"},
        {"user_id": "a", "item_id": 4, "timestamp": 13, "action": "2.5"},
    ])
    ev = read_events(path, CFG)
    assert ev["weight"].tolist() == [0.0, 1.0, 5.0, 2.5]
    assert ev["item_id"].tolist() == ["1", "2", "3", "4"]


def test_iso_timestamps_parse_to_seconds(write_csv):
    path = write_csv("e.csv", [{"user_id": 1, "item_id": 1, "timestamp": "2024-01-01T00:00:10Z"},
                               {"user_id": 1, "item_id": 2, "timestamp": "2024-01-01 00:01:00"}])
    ev = read_events(path, CFG)
    assert ev["timestamp"].diff().iloc[1] == pytest.approx(50.0)


@pytest.mark.parametrize("rows, needle", [
    ([{"user_id": 1, "timestamp": 5}], "missing column(s) item_id"),
    ([{"user_id": 1, "item_id": 2, "timestamp": "yesterday-ish"}], "cannot parse timestamp 'yesterday-ish' at line 2"),
    ([{"user_id": 1, "item_id": 2, "timestamp": 5, "action": "click"},
      {"user_id": 1, "item_id": 3, "timestamp": 6, "action": "wishlist"}], "unknown action 'wishlist' at line 3"),
    ([{"user_id": None, "item_id": 2, "timestamp": 5}, {"user_id": 2, "item_id": 2, "timestamp": 5}], "user_id is empty at line 2"),
])
def test_bad_events_name_the_file_the_place_and_a_fix(write_csv, rows, needle):
    path = write_csv("events.csv", rows)
    with pytest.raises(InputError) as exc:
        read_events(path, CFG)
    assert needle in str(exc.value)
    assert str(path) in str(exc.value) and "Fix:" in str(exc.value)


def test_empty_and_header_only_files_are_refused(tmp_path):
    empty = tmp_path / "e.csv"
    empty.write_text("")
    with pytest.raises(InputError, match="empty"):
        read_events(empty, CFG)
    header = tmp_path / "h.csv"
    header.write_text("user_id,item_id,timestamp\n")
    with pytest.raises(InputError, match="no rows"):
        read_events(header, CFG)


def test_duplicated_ids_in_an_item_table_are_refused(write_csv):
    path = write_csv("items.csv", [{"item_id": 7, "genre": "a"}, {"item_id": 8, "genre": "b"}, {"item_id": 7, "genre": "c"}])
    with pytest.raises(InputError, match="item_id '7' appears more than once .line 2 and line 4"):
        read_table(path, id_column="item_id")


def test_unknown_file_type_is_refused(tmp_path):
    path = tmp_path / "events.xlsx"
    path.write_text("x")
    with pytest.raises(InputError, match="unknown file type"):
        read_table(path)


def test_parquet_and_csv_read_the_same(tmp_path):
    df = pd.DataFrame({"user_id": [1, 2], "item_id": ["x", "y"], "timestamp": [1, 2]})
    df.to_parquet(tmp_path / "e.parquet")
    df.to_csv(tmp_path / "e.csv", index=False)
    a, b = read_events(tmp_path / "e.parquet", CFG), read_events(tmp_path / "e.csv", CFG)
    pd.testing.assert_frame_equal(a, b)


# What a new user's probe found after the first fixes: each is a file a real log or shell produces.
BAD_EVENTS = {
    "stray quote": ('user_id,item_id,timestamp\n1,a,100\n"2,b,101\n3,c,102\n4,d,103"\n5,e,104\n', "never closed"),
    "quote to the end": ('user_id,item_id,timestamp\n1,a,100\n"2,b,101\n3,c,102\n', "EOF inside string"),
    "year 1": ("user_id,item_id,timestamp\n1,a,0001-01-01\n", "between the years 1900 and 2200"),
    "year 9999": ("user_id,item_id,timestamp\n1,a,9999-12-31T23:59:59\n", "between the years 1900 and 2200"),
    "boolean timestamps": ("user_id,item_id,timestamp\n1,a,True\n1,b,False\n", "cannot parse timestamp 'True'"),
    "empty timestamp": ("user_id,item_id,timestamp\n1,a,100\n1,b,\n", "timestamp is empty at line 3"),
    "boolean actions": ("user_id,item_id,timestamp,action\n1,a,100,True\n", "unknown action 'True'"),
    "empty action": ("user_id,item_id,timestamp,action\n1,a,100,click\n1,b,101,\n", "action is empty at line 3"),
    "infinite weight": ("user_id,item_id,timestamp,action\n1,a,100,inf\n", "not a finite number"),
    "huge weight": ("user_id,item_id,timestamp,action\n1,a,100,1e308\n", "not a finite number"),
    "own weight column": ("user_id,item_id,timestamp,weight\n1,a,100,2\n", "'weight' is a name twotower uses"),
    "latin-1 on line 3": ("user_id,item_id,timestamp\n1,a,100\n1,Jos\xe9,101\n".encode("latin-1"), "line 3"),
}


@pytest.mark.parametrize("case", list(BAD_EVENTS))
def test_probed_bad_event_files_are_one_clear_error(tmp_path, case):
    content, message = BAD_EVENTS[case]
    path = tmp_path / "events.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(InputError) as err:
        read_events(path, DataConfig())
    assert message in str(err.value) and str(path) in str(err.value)


def test_tsv_is_literal_a_quote_is_part_of_the_id(tmp_path):
    path = tmp_path / "events.tsv"
    path.write_text('user_id\titem_id\ttimestamp\n"quoted"\ta\t100\n"open\tb\t101\n')
    assert read_events(path, DataConfig())["user_id"].tolist() == ['"quoted"', '"open']


def test_parquet_float_ids_beyond_int64_keep_their_own_spelling(tmp_path):
    path = tmp_path / "events.parquet"
    pd.DataFrame({"user_id": [1.0, 2.0**63, 1e20], "item_id": ["a", "b", "c"], "timestamp": [1, 2, 3]}).to_parquet(path)
    users = read_events(path, DataConfig())["user_id"].tolist()
    assert users == ["1", "9223372036854775808", "100000000000000000000"]


def test_a_folder_or_a_device_given_as_a_file_is_named_as_such(tmp_path):
    with pytest.raises(InputError, match="is a folder"):
        read_events(tmp_path, DataConfig())
    with pytest.raises(InputError, match="not a regular file"):
        read_events(Path("/dev/null"), DataConfig())


def test_the_quick_check_of_small_batches_gives_what_the_full_check_gives():
    config = DataConfig()
    batches = [
        [{"user_id": "u1", "item_id": " 7", "action": "Click ", "timestamp": 1.7e9, "event_id": "e1"}],
        [{"user_id": "u1", "item_id": "a", "action": "purchase", "timestamp": 1_700_000_000, "device": "web"},
         {"user_id": "0042", "item_id": "b", "action": "impression", "timestamp": 1.7e9 + 0.5, "device": None}],
        [{"user_id": "u", "item_id": "i", "timestamp": 1.6e9}],
    ]
    for rows in batches:
        quick = validate_event_rows(rows, config)
        assert quick is not None
        pd.testing.assert_frame_equal(pd.DataFrame(quick), validate_events(pd.DataFrame(rows), config, Path("events")))
    declined = [
        [{"user_id": " ", "item_id": "i", "action": "click", "timestamp": 1.7e9}],           # blank id
        [{"user_id": 7, "item_id": "i", "action": "click", "timestamp": 1.7e9}],             # not a string
        [{"user_id": "u", "item_id": "i", "action": "click", "timestamp": 1.7e12}],          # milliseconds
        [{"user_id": "u", "item_id": "i", "action": "click", "timestamp": "2024-05-01"}],    # a date string
        [{"user_id": "u", "item_id": "i", "action": "zap", "timestamp": 1.7e9}],             # unknown action
        [{"user_id": "u", "item_id": "i", "action": 2, "timestamp": 1.7e9}],                 # a number
        [{"user_id": "u", "item_id": "i", "action": "click", "timestamp": True}],
        [{"user_id": "u", "item_id": "i", "action": "click"}, {"user_id": "u", "item_id": "i", "timestamp": 1.7e9}],
    ]
    for rows in declined:
        assert validate_event_rows(rows, config) is None, rows
