"""The S3-Rec sequence format: positions are time, ids stay strings, attributes become a multi-valued column."""

from __future__ import annotations

import json

import pytest

from tests.conftest import missing
from twotower.data.s3rec import load_s3rec, load_toys, locate_toys
from twotower.errors import InputError


def test_lines_become_events_in_order_with_ids_as_written(tmp_path):
    seq = tmp_path / "seq.txt"
    seq.write_text("007 0042 13 0042\n7 5\n")
    attrs = tmp_path / "attrs.json"
    attrs.write_text(json.dumps({"0042": [1, 2], "13": [], "5": [3]}))
    events, items, users = load_s3rec(seq, attrs)
    assert events.values.tolist() == [["007", "0042", 0], ["007", "13", 1], ["007", "0042", 2], ["7", "5", 0]]
    assert dict(zip(items["item_id"], items["attributes"])) == {"0042": "1|2", "13": "", "5": "3"}
    assert users is None


def test_a_user_without_items_is_named(tmp_path):
    seq = tmp_path / "seq.txt"
    seq.write_text("1 2 3\n4\n")
    with pytest.raises(InputError, match=r"seq.txt:2"):
        load_s3rec(seq)


def test_the_shared_toys_files_load():
    try:
        folder = locate_toys()
    except InputError as exc:
        missing(f"Amazon Toys files: {exc}")
        return
    events, items, _ = load_toys(folder)
    assert events["user_id"].nunique() == 19_412 and len(events) == 167_597
    assert events["item_id"].nunique() == 11_924 and len(items) >= 11_924
