"""Ids are the user's strings: read verbatim from every input format and written unchanged to every output."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from twotower.config import Config
from twotower.data.schema import read_events, read_id_list, read_table
from twotower.errors import InputError
from twotower.outputs import table_output
from twotower.pipeline import load_inputs

NASTY = ["007", "7", "0042", "42", "1.5", "1.0", "1", "NA", "N/A", "null", "nan", "NaN", "None", "#N/A", "-", "TRUE",
         "1e3", "[/x]", "[bold]x[/bold]", 'say "hi"', "a,b", "tab\there", "two\nlines", "cr\rlf", "end\r", " 7", "7 ", "ü", "日本", "😀"]
ID_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\ufeff"), min_size=1, max_size=8)
IDS = st.one_of(st.sampled_from(NASTY), ID_TEXT).filter(lambda s: s.strip() != "")
FORMATS = ["csv", "tsv", "csv.gz", "parquet"]


def write(df: pd.DataFrame, path) -> None:
    """Write a table the way a user's tools would: pandas' own writer for the format (valid CSV: a value with
    a carriage return is quoted, which the csv module does when lines end in \r\n)."""
    if str(path).endswith(".parquet"):
        df.to_parquet(path, index=False)
    elif ".tsv" in str(path):          # TSV is literal: values are written as they are, never quoted
        df.to_csv(path, index=False, sep="\t", quoting=csv.QUOTE_NONE)
    else:
        crlf = any("\r" in str(v) for c in df.columns for v in df[c])
        df.to_csv(path, index=False, lineterminator="\r\n" if crlf else "\n")


def log_of(users: list[str], items: list[str]) -> pd.DataFrame:
    n = max(len(users), len(items)) * 2
    return pd.DataFrame({"user_id": [users[i % len(users)] for i in range(n)],
                         "item_id": [items[(i * 7) % len(items)] for i in range(n)],
                         "timestamp": 1_700_000_000 + np.arange(n), "action": "click"})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(users=st.lists(IDS, min_size=1, max_size=6, unique=True), items=st.lists(IDS, min_size=1, max_size=6, unique=True),
       fmt=st.sampled_from(FORMATS))
def test_ids_round_trip_from_every_input_format_to_every_output(tmp_path_factory, users, items, fmt):
    literal = not any(ch in v for v in users + items for ch in "\t\r\n")    # what TSV can hold
    assume(literal or fmt != "tsv")
    folder = tmp_path_factory.mktemp("ids")
    log = log_of(users, items)
    write(log, folder / f"events.{fmt}")
    write(pd.DataFrame({"item_id": items, "price": np.arange(len(items), dtype=float)}), folder / f"items.{fmt}")
    events = read_events(folder / f"events.{fmt}", Config().data)
    assert events["user_id"].tolist() == log["user_id"].tolist()
    assert events["item_id"].tolist() == log["item_id"].tolist()
    assert read_table(folder / f"items.{fmt}", id_column="item_id")["item_id"].tolist() == items
    for out_fmt in FORMATS:
        out = table_output(folder / f"recs.{out_fmt}")
        if out_fmt == "tsv" and not literal:
            with pytest.raises(InputError, match="TSV cannot hold"):
                out.write(events[["user_id", "item_id"]])
            continue
        out.write(events[["user_id", "item_id"]])
        back = read_table(out.path)
        assert back["user_id"].tolist() == log["user_id"].tolist(), out_fmt
        assert back["item_id"].tolist() == log["item_id"].tolist(), out_fmt


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=st.lists(IDS.filter(lambda s: "\n" not in s and "\r" not in s and s != "user_id"), min_size=1, max_size=8,
                    unique=True), header=st.booleans())
def test_a_text_file_of_ids_is_read_line_by_line_and_a_header_line_is_not_an_id(tmp_path_factory, ids, header):
    path = tmp_path_factory.mktemp("list") / "users.txt"
    path.write_text("\n".join((["user_id"] if header else []) + ids) + "\n", encoding="utf-8")
    assert read_id_list(path, "user_id") == ids


def test_ids_that_look_like_numbers_stay_distinct_users_with_their_own_features(tmp_path):
    events = pd.DataFrame({"user_id": ["007", "7", "0042", "42", "NA", "007", "7", "0042", "42", "NA"],
                           "item_id": ["1", "2", "1.5", "3", "1", "2", "3", "1", "2", "1.5"],
                           "timestamp": range(1_700_000_000, 1_700_000_010), "action": "click"})
    events.to_csv(tmp_path / "events.csv", index=False)
    pd.DataFrame({"user_id": ["007", "7"], "age": [10.0, 90.0]}).to_csv(tmp_path / "users.csv", index=False)
    pd.DataFrame({"item_id": ["1", "2", "3", "1.5"], "genre": ["a", "b", "c", "d"]}).to_csv(tmp_path / "items.csv",
                                                                                         index=False)
    data = load_inputs(tmp_path / "events.csv", tmp_path / "items.csv", tmp_path / "users.csv", Config())
    assert sorted(data.users.ids) == sorted(["007", "7", "0042", "42", "NA"])
    assert sorted(data.items.ids) == ["1", "1.5", "2", "3"]          # no 1.0, 2.0: the items table still matches
    age = data.user_features["age"]
    older = age[data.users.encode(["7"])[0]]
    younger = age[data.users.encode(["007"])[0]]
    assert float(np.ravel(older)[0]) > float(np.ravel(younger)[0])   # 007's age is 007's, not 7's


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_train_and_recommend_keep_every_id_exactly(tmp_path, fmt):
    from twotower.config import config_from_dict
    from twotower.pipeline import train_and_save
    from twotower.recommend import recommend

    rng = np.random.default_rng(0)
    users = NASTY[:20]
    items = [f"0{i}" if i % 3 == 0 else (f"{i}.5" if i % 3 == 1 else f"[{i}]") for i in range(30)]
    rows = [{"user_id": u, "item_id": items[j], "timestamp": 1_700_000_000 + 100 * t, "action": "click"}
            for u in users for t, j in enumerate(rng.choice(len(items), 6, replace=False))]
    write(pd.DataFrame(rows), tmp_path / f"events.{fmt}")
    cfg = config_from_dict({"model": {"dim": 8, "max_history": 5, "layers": 1, "heads": 1},
                            "train": {"epochs": 1, "threads": 1}, "rank": {"candidates": 10, "slice_events": 2}})
    data = load_inputs(tmp_path / f"events.{fmt}", None, None, cfg)
    train_and_save(data, cfg, tmp_path / "model", {}, show_progress=False)
    (tmp_path / "who.txt").write_text("\n".join(u for u in users if "\n" not in u) + "\n")
    for users_spec in ("all", str(tmp_path / "who.txt")):
        recommend(tmp_path / "model", users_spec, 5, tmp_path / f"recs.{fmt}", show_progress=False)
        recs = read_table(tmp_path / f"recs.{fmt}")
        expected = users if users_spec == "all" else [u for u in users if "\n" not in u]
        assert set(recs["user_id"]) == set(expected)
        assert set(recs["item_id"]) <= set(items)


def test_a_grown_vocabulary_adds_codes_and_the_one_it_grew_from_keeps_its_own():
    """`extended` (a service's new users) shares the table and adds after it, past its spare room too; the
    older vocabulary still answers for its own codes only, and a second vocabulary grown beside it copies."""
    from twotower.data.dataset import IdVocab

    base = IdVocab(["u1", "u2"])
    grown = base.extended(["u3"])
    more = grown.extended([f"n{i}" for i in range(3000)])           # past the first room: it doubles
    assert grown.encode(["u3", "u1", "n7"]).tolist() == [3, 1, 0] and len(grown) == 3
    assert more.encode(["n7", "u3"]).tolist() == [11, 3] and more.decode([3, 3003]).tolist() == ["u3", "n2999"]
    assert base.encode(["u3"]).tolist() == [0] and "u3" not in base and base.ids.tolist() == ["u1", "u2"]
    beside = base.extended(["other"])                                 # beside `grown`: a copy of its own
    assert beside.encode(["other", "u3"]).tolist() == [3, 0] and grown.encode(["other"]).tolist() == [0]
    with pytest.raises(ValueError):
        more.extended(["u1"])
