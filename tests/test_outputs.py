"""An --out path never destroys an input, a model's file or a non-file, and is checked before the work."""

from __future__ import annotations

import hashlib
import os

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twotower.errors import InputError
from twotower.outputs import table_output

TABLE = pd.DataFrame({"user_id": ["007", "a"], "item_id": ["1.5", "NA"], "score": [0.5, 0.25]})


@pytest.fixture()
def inputs(tmp_path):
    events = tmp_path / "events.csv"
    events.write_text("user_id,item_id,timestamp\n1,2,100\n")
    users = tmp_path / "users.txt"
    users.write_text("1\n")
    return events, users


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_an_input_is_refused_by_name_by_link_and_by_hard_link(tmp_path, inputs):
    events, users = inputs
    (tmp_path / "link.csv").symlink_to(events)
    os.link(events, tmp_path / "hard.csv")
    for path in (events, tmp_path / "link.csv", tmp_path / "hard.csv", tmp_path / "." / "events.csv"):
        with pytest.raises(InputError, match="is the input file"):
            table_output(path, inputs=[events, users])


def test_folders_devices_and_fifos_are_refused(tmp_path):
    os.mkfifo(tmp_path / "pipe.csv")
    (tmp_path / "dir.csv").mkdir()
    for path, what in ((tmp_path / "dir.csv", "a folder"), (tmp_path / "pipe.csv", "not a regular file")):
        with pytest.raises(InputError, match=what):
            table_output(path)
    with pytest.raises(InputError):
        table_output("/dev/full")


def test_a_symlink_to_an_output_file_is_written_through(tmp_path):
    real = tmp_path / "real.csv"
    real.write_text("old\n")
    (tmp_path / "link.csv").symlink_to(real)
    table_output(tmp_path / "link.csv").write(TABLE)
    assert (tmp_path / "link.csv").is_symlink() and pd.read_csv(real, dtype=str)["user_id"].tolist() == ["007", "a"]


@pytest.mark.parametrize("name,reader", [("t.parquet", pd.read_parquet), ("t.tsv", lambda p: pd.read_csv(p, sep="\t")),
                                         ("t.csv", pd.read_csv), ("t.csv.gz", pd.read_csv)])
def test_the_format_follows_the_extension(tmp_path, name, reader):
    table_output(tmp_path / name).write(TABLE)
    assert reader(tmp_path / name)["score"].tolist() == [0.5, 0.25]


def test_an_unknown_extension_and_an_unwritable_folder_are_refused(tmp_path):
    with pytest.raises(InputError, match=r"\.csv, \.tsv or \.parquet"):
        table_output(tmp_path / "recs.txt")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="cannot write"):
        table_output(tmp_path / "file" / "recs.csv")


def test_dash_writes_csv_to_stdout(capsys):
    out = table_output("-")
    out.write(TABLE)
    assert capsys.readouterr().out.splitlines()[1] == "007,1.5,0.5"


def test_a_model_s_own_files_are_refused(tmp_path):
    from twotower.folder import owned_paths

    model = tmp_path / "model"
    model.mkdir()
    for name in ("history.parquet", "index/labels.parquet", "features/events.parquet"):
        with pytest.raises(InputError, match="part of the model"):
            table_output(model / name, protected=owned_paths(model))
    assert table_output(model / "recs.csv", protected=owned_paths(model)).path == (model / "recs.csv").resolve()


KINDS = ["input", "input-link", "folder", "fifo", "device", "no-extension", "inside-a-file", "model-file", "fresh"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(KINDS), ext=st.sampled_from([".csv", ".parquet", ".tsv", ""]))
def test_generated_bad_paths_never_change_an_input(tmp_path_factory, kind, ext):
    from twotower.folder import owned_paths

    folder = tmp_path_factory.mktemp("out")
    events = folder / f"events{ext or '.csv'}"
    events.write_text("user_id,item_id,timestamp\n1,2,100\n")
    model = folder / "model"
    model.mkdir()
    (model / "history.parquet").write_bytes(b"model bytes")
    before = {p: digest(p) for p in (events, model / "history.parquet")}
    path = {"input": events, "input-link": folder / f"l{ext}", "folder": folder / f"d{ext}", "fifo": folder / f"f{ext}",
            "device": "/dev/null", "no-extension": folder / "recs", "inside-a-file": events / f"x{ext}",
            "model-file": model / "history.parquet", "fresh": folder / f"new{ext}"}[kind]
    if kind == "input-link":
        path.symlink_to(events)
    elif kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    try:
        table_output(path, inputs=[events], protected=owned_paths(model)).write(TABLE)
        assert kind == "fresh" and ext, f"{kind}{ext} was accepted"
    except InputError:
        assert not (kind == "fresh" and ext)
    assert before == {p: digest(p) for p in before}


@pytest.mark.parametrize("name", ["recs.csv", "recs.tsv", "recs.csv.gz", "recs.parquet"])
def test_a_table_written_in_chunks_equals_the_table_written_whole(tmp_path, name):
    def read(path):
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",", dtype={"user_id": str, "item_id": str})

    df = pd.DataFrame({"user_id": ["u1", "u1", "u2", "u3"], "item_id": ["a", "b", "a", "c"],
                       "rank": [1, 2, 1, 1], "score": [0.5, 0.25, 0.125, 1.0]})
    whole, chunked = table_output(tmp_path / f"whole-{name}"), table_output(tmp_path / f"chunked-{name}")
    whole.write(df)
    assert chunked.write_chunks(iter([df[:1], df[1:3], df[3:]]), columns=list(df.columns)) == len(df)
    a, b = (read(o.path) for o in (whole, chunked))
    pd.testing.assert_frame_equal(a, b)
    empty = table_output(tmp_path / f"empty-{name}")
    assert empty.write_chunks(iter([]), columns=list(df.columns)) == 0 and empty.path.is_file()
