"""Every verb, given any of a corpus of bad inputs, exits 0 or 2 with one message and never a traceback; user
text in messages (brackets included) is printed literally."""

from __future__ import annotations

import os
import shutil

import pytest
from typer.testing import CliRunner

from twotower.cli import app

runner = CliRunner()

BAD_TABLES = {
    "empty.csv": b"",
    "header-only.csv": b"user_id,item_id,timestamp\n",
    "binary.csv": bytes(range(256)) * 4,
    "latin1.csv": "user_id,item_id,timestamp\nJos\xe9,1,100\n".encode("latin-1"),
    "missing-columns.csv": b"user,item,time\n1,2,3\n",
    "bad-time.csv": b"user_id,item_id,timestamp\n1,2,yesterday\n",
    "absurd-time.csv": b"user_id,item_id,timestamp\n1,2,1e20\n1,3,1e20\n",
    "unknown-action.csv": b"user_id,item_id,timestamp,action\n1,2,100,[/x]\n",
    "empty-id.csv": b"user_id,item_id,timestamp\n,2,100\n",
    "ragged.csv": b"user_id,item_id,timestamp\n1,2,100,4,5,6\n\"unclosed,2\n",
    "[brackets]/[/x].csv": b"user_id,item_id,timestamp\n1,2,100\n",
    "events.json": b"{}",
    "not-parquet.parquet": b"PAR1 not really",
    "duplicate-ids.csv": b"item_id,colour\n1,red\n1,blue\n",
    "one-event.csv": b"user_id,item_id,timestamp\n1,2,100\n",
    "stray-quote.csv": b'user_id,item_id,timestamp\n1,a,100\n"2,b,101\n3,c,102\n4,d,103"\n5,e,104\n',
    "year-1.csv": b"user_id,item_id,timestamp\n1,2,0001-01-01\n1,3,2020-01-01\n",
    "bool-actions.csv": b"user_id,item_id,timestamp,action\n1,2,100,True\n1,3,101,False\n",
    "inf-action.csv": b"user_id,item_id,timestamp,action\n1,2,100,inf\n1,3,101,1\n",
    "weight-column.csv": b"user_id,item_id,timestamp,weight\n1,2,100,1\n1,3,101,1\n",
}
BAD_CONFIGS = {
    "latin1.toml": "[data.actions]\n\"vu\xe9\" = 1\n".encode("latin-1"),
    "syntax.toml": b"[model\ndim = 8\n",
    "negative.toml": b"[data.actions]\nreturn = -1\n",
    "unknown-key.toml": b"[model]\ndimension = 8\n",
    "separator.toml": b"[data]\nmulti_separator = \"\"\n",
    "brackets.toml": b"[data.feature_kinds]\n\"[/x]\" = \"wrong\"\n",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    for name, data in {**BAD_TABLES, **BAD_CONFIGS}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "a-folder.csv").mkdir()
    os.mkfifo(root / "fifo.csv")
    return root


def cases(corpus, model, events, config):
    """(verb arguments) for every verb with each bad input in each place it can go."""
    tables = [corpus / n for n in BAD_TABLES] + [corpus / "a-folder.csv", corpus / "missing.csv"]
    configs = [corpus / n for n in BAD_CONFIGS] + [corpus / "missing.toml"]
    out = corpus / "out"
    valid_as_a_feature_table = {"[brackets]/[/x].csv", "one-event.csv"}
    for t in tables:
        yield ["train", "-e", t, "-o", out / "m", "-c", config]
        if t.name not in valid_as_a_feature_table and t.relative_to(corpus).as_posix() not in valid_as_a_feature_table:
            yield ["train", "-e", events, "-i", t, "-o", out / "m", "-c", config]
            yield ["train", "-e", events, "-u", t, "-o", out / "m", "-c", config]
        yield ["evaluate", "-e", t, "-c", config, "--no-baselines"]
        yield ["recommend", "-m", model, "-u", t, "-o", out / "r.csv"]
        yield ["index", "-m", model, "--items", t]
        yield ["index", "-m", model, "--remove", t]
    for c in configs:
        yield ["train", "-e", events, "-o", out / "m", "-c", c]
        yield ["evaluate", "-e", events, "-c", c]
        yield ["index", "-m", model, "-c", c]
        yield ["demo", "-c", c, "-o", out / "d"]
    for target in (events, corpus / "a-folder.csv", corpus / "fifo.csv", "/dev/full", out / "recs.txt", config,
                   corpus / "binary.csv" / "x.csv"):
        yield ["recommend", "-m", model, "-o", target]
        yield ["evaluate", "-e", events, "-c", config, "-o", target]
        yield ["train", "-e", events, "-c", config, "-o", target]
    for k in ("0", "-5", "ten"):
        yield ["recommend", "-m", model, "-k", k, "-o", out / "r.csv"]
    for not_a_model in (corpus, corpus / "binary.csv", corpus / "nowhere"):
        yield ["recommend", "-m", not_a_model, "-o", out / "r.csv"]
        yield ["index", "-m", not_a_model]
        yield ["materialize", "-m", not_a_model]
    yield ["materialize", "-m", model, "--store", "mongodb"]
    yield ["index", "-m", model, "--backend", "[/x]"]
    yield ["demo", "--data", corpus, "-o", out / "d"]
    junk_movielens = corpus / "junk-ml"
    junk_movielens.mkdir(exist_ok=True)
    for name in ("u.data", "u.item", "u.user"):
        (junk_movielens / name).write_text("junk\n")
    yield ["demo", "--data", junk_movielens, "-c", config, "-o", out / "d"]
    yield ["materialize", "-m", model, "--store", "redis", "--redis-url", "not a url"]
    yield ["benchmark", "index", "--backends", "bogus", "-o", out / "b"]
    yield ["benchmark", "index", "--items", "0", "-o", out / "b"]
    yield ["benchmark", "open-bandit", "--data", corpus, "-o", out / "ob"]


def test_every_verb_answers_a_corpus_of_bad_inputs_with_exit_2_and_no_traceback(corpus, tiny_model):
    model, events, config = tiny_model
    before = events.read_bytes(), config.read_bytes(), (model / "model.json").read_bytes()
    failures = []
    for args in cases(corpus, model, events, config):
        args = [str(a) for a in args] + ["-q"] * (args[0] not in ("benchmark",))
        result = runner.invoke(app, args)
        if result.exit_code not in (0, 2) or "Traceback" in result.output or (
                result.exception is not None and not isinstance(result.exception, SystemExit)):
            failures.append(f"{' '.join(args)} -> {result.exit_code}: {result.output[-300:]!r} {result.exception!r}")
        if (corpus / "out" / "m").exists():                    # a refused input never leaves a model behind
            if result.exit_code != 0:
                failures.append(f"{' '.join(args)} failed but left a model: {result.output[-300:]!r}")
            shutil.rmtree(corpus / "out" / "m")          # (some bad event files are valid feature tables)
    assert not failures, "\n".join(failures)
    assert (events.read_bytes(), config.read_bytes(), (model / "model.json").read_bytes()) == before


def test_an_output_that_is_an_input_is_refused_before_the_work_and_the_input_is_unchanged(tiny_model, tmp_path):
    model, events, config = tiny_model
    users = tmp_path / "users.csv"
    users.write_text("user_id\nu001\n")
    before = events.read_bytes(), users.read_bytes()
    for args in (["evaluate", "-e", events, "-c", config, "-o", events],
                 ["recommend", "-m", model, "-u", users, "-o", users],
                 ["recommend", "-m", model, "-o", events],                  # the log the model was trained from
                 ["recommend", "-m", model, "-o", model / "history.parquet"]):
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 2 and ("is the input file" in result.output or "part of the model" in result.output)
        assert "protocol" not in result.output                    # refused before any training
    assert (events.read_bytes(), users.read_bytes()) == before


def test_messages_print_brackets_literally(tmp_path):
    events = tmp_path / "[shop].csv"
    events.write_text("user_id,item_id,timestamp,action\n1,2,100,[/x]\n")
    result = runner.invoke(app, ["evaluate", "-e", str(events)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "[shop].csv" in result.output and "'[/x]'" in result.output and "[data.actions]" in result.output
    assert "click=1" in result.output                              # the known actions' list survives
