"""A damaged model folder is one clear error naming the file and the fix, never a traceback or a silent
half-model."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from twotower.cli import app

runner = CliRunner()


def edit_json(path, **changes):
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


def truncate(path):
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 3)])


DAMAGE = {
    "weights.pt missing": (lambda m: (m / "weights.pt").unlink(), "weights.pt", "retrain"),
    "weights.pt corrupt": (lambda m: truncate(m / "weights.pt"), "weights.pt", "retrain"),
    "model.json not JSON": (lambda m: (m / "model.json").write_text("{not json"), "model.json", "retrain"),
    "model.json wrong dim": (lambda m: edit_json(m / "model.json", config={
        **json.loads((m / "model.json").read_text())["config"],
        "model": {**json.loads((m / "model.json").read_text())["config"]["model"], "dim": 12, "heads": 1}}),
        "model.json", "retrain"),
    "history.parquet missing": (lambda m: (m / "history.parquet").unlink(), "history.parquet", "retrain"),
    "items.parquet corrupt": (lambda m: truncate(m / "items.parquet"), "items.parquet", "retrain"),
    "features.npz missing": (lambda m: (m / "features.npz").unlink(), "features.npz", "retrain"),
    "index damaged": (lambda m: (m / "index" / "faiss.index").write_bytes(b"junk"), "index", "twotower index"),
    "online.sqlite corrupt": (lambda m: (m / "features" / "online.sqlite").write_bytes(b"not a database" * 100),
                              "online.sqlite", "twotower materialize"),
    "online.sqlite missing": (lambda m: (m / "features" / "online.sqlite").unlink(), "online.sqlite",
                              "twotower materialize"),
    "ranker missing": (lambda m: shutil.rmtree(m / "ranker"), "ranker", "--no-rank"),
    "ranker corrupt": (lambda m: (m / "ranker" / "reranker.json").write_text("{"), "ranker", "retrain"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_model_folder_names_the_file_and_the_fix(model_copy, tmp_path, damage):
    harm, file, fix = DAMAGE[damage]
    harm(model_copy)
    result = runner.invoke(app, ["recommend", "--model", str(model_copy), "--out", str(tmp_path / "r.csv"), "-q"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and file in result.output and fix in result.output, result.output
    assert not (tmp_path / "r.csv").exists()


def test_damaged_item_vectors_stop_an_index_rebuild(model_copy):
    (model_copy / "item_vectors.npy").write_bytes(b"junk")
    result = runner.invoke(app, ["index", "--model", str(model_copy), "-q"])
    assert result.exit_code == 2 and "item_vectors.npy" in result.output and "retrain" in result.output


def test_a_model_trained_without_a_ranker_says_so_when_asked_to_rank(tiny_model, tmp_path):
    _, events, config = tiny_model
    out = tmp_path / "towers"
    assert runner.invoke(app, ["train", "-e", str(events), "-o", str(out), "-c", str(config), "--no-ranker",
                               "-q"]).exit_code == 0
    result = runner.invoke(app, ["recommend", "--model", str(out), "--out", str(tmp_path / "r.csv"), "-q"])
    assert result.exit_code == 0 and "has no ranker" in result.output and "retrieval order" in result.output


def test_k_is_capped_at_the_catalog(tiny_model, tmp_path):
    model, events, _ = tiny_model
    result = runner.invoke(app, ["recommend", "--model", str(model), "--k", "1000000000", "--out",
                                 str(tmp_path / "r.csv"), "-q"])
    assert result.exit_code == 0, result.output
    import pandas as pd

    recs = pd.read_csv(tmp_path / "r.csv", dtype=str)
    assert recs.groupby("user_id").size().max() <= pd.read_csv(events)["item_id"].nunique()
