"""A model folder: retraining replaces only the model's own files; a failed train leaves the previous model."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from twotower.cli import app
from twotower.errors import InputError
from twotower.folder import BUILD_DIR, MODEL_NAMES
from twotower.model.artifact import load_model

runner = CliRunner()


def train(events, out, config, *extra):
    return runner.invoke(app, ["train", "--events", str(events), "--out", str(out), "--config", str(config), "-q",
                               *extra])


def test_every_name_train_writes_is_one_the_model_owns(tiny_model):
    folder, _, _ = tiny_model
    assert {p.name for p in folder.iterdir()} <= MODEL_NAMES
    assert json.loads((folder / "model.json").read_text())["ranker"] == {"trained": True}


def test_retraining_keeps_the_users_own_files_and_replaces_the_model(model_copy, tiny_model):
    _, events, config = tiny_model
    (model_copy / "notes.md").write_text("my notes")
    (model_copy / "recs.csv").write_text("user_id,item_id\n007,1\n")
    (model_copy / "mine").mkdir()
    (model_copy / "mine" / "a.txt").write_text("a")
    result = train(events, model_copy, config, "--no-ranker")
    assert result.exit_code == 0, result.output
    assert (model_copy / "notes.md").read_text() == "my notes"
    assert (model_copy / "recs.csv").read_text() == "user_id,item_id\n007,1\n"
    assert (model_copy / "mine" / "a.txt").read_text() == "a"
    assert not (model_copy / "ranker").exists()           # the old model's ranker does not outlive its towers
    assert not (model_copy / BUILD_DIR).exists()
    meta = json.loads((model_copy / "model.json").read_text())
    assert meta["ranker"]["trained"] is False and meta["model_id"] == load_model(model_copy).model_id


def test_a_failure_in_a_later_stage_leaves_the_previous_model_whole(model_copy, tiny_model, monkeypatch):
    from twotower import pipeline

    _, events, config = tiny_model
    before = {p.name: p.stat().st_mtime_ns for p in model_copy.rglob("*") if p.is_file()}

    def broken(*args, **kwargs):
        raise InputError("ranker", "broke on purpose", "none")

    monkeypatch.setattr(pipeline, "save_ranker", broken)
    result = train(events, model_copy, config)
    assert result.exit_code == 2 and "broke on purpose" in result.output
    assert {p.name: p.stat().st_mtime_ns for p in model_copy.rglob("*") if p.is_file()} == before
    assert not (model_copy / BUILD_DIR).exists()
    load_model(model_copy)


def test_a_failed_first_train_leaves_no_folder(tiny_model, tmp_path, monkeypatch):
    from twotower import pipeline

    _, events, config = tiny_model
    monkeypatch.setattr(pipeline, "build_model_index", lambda *a, **k: (_ for _ in ()).throw(
        InputError("index", "broke on purpose", "none")))
    result = train(events, tmp_path / "new", config)
    assert result.exit_code == 2 and not (tmp_path / "new").exists()


def test_absurd_timestamps_stop_train_before_any_model_is_written(tmp_path, tiny_model):
    _, events, config = tiny_model
    log = pd.read_csv(events)
    log["timestamp"] = log["timestamp"].astype(float)
    log.loc[3, "timestamp"] = 1e20
    log.to_csv(tmp_path / "bad.csv", index=False)
    result = train(tmp_path / "bad.csv", tmp_path / "m", config)
    assert result.exit_code == 2 and "line 5" in result.output and "1900 and 2200" in result.output
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("scale,unit", [(1_000, "ms"), (1_000_000, "us")])
def test_milliseconds_and_microseconds_are_read_as_such(tmp_path, tiny_model, scale, unit):
    from twotower.config import Config
    from twotower.data.schema import read_events

    _, events, _ = tiny_model
    log = pd.read_csv(events)
    (log.assign(timestamp=log["timestamp"] * scale)).to_csv(tmp_path / "scaled.csv", index=False)
    got = read_events(tmp_path / "scaled.csv", Config().data)["timestamp"]
    assert got.tolist() == pytest.approx(log["timestamp"].astype(float).tolist())
    assert got.max() < 2e9            # "now" is this century, not the year 55,800


def test_paths_with_brackets_quotes_and_spaces_train_and_serve(tiny_model, tmp_path):
    _, events, config = tiny_model
    folder = tmp_path / "[shop] it's *new*"
    folder.mkdir()
    (folder / "e [1].csv").write_bytes(events.read_bytes())
    out = folder / "m[1]"
    result = train(folder / "e [1].csv", out, config)
    assert result.exit_code == 0, result.output
    assert str(out / "index") in result.output                  # the path printed as it is, brackets included
    result = runner.invoke(app, ["recommend", "-m", str(out), "-o", str(folder / "r [1].csv"), "-q"])
    assert result.exit_code == 0 and "retrieved and ranked" in result.output, result.output
    assert len(pd.read_csv(folder / "r [1].csv")) > 0


def test_a_short_log_trains_its_ranker_with_the_default_slice(tmp_path):
    """rank.slice_events (10) exceeds most users' positives here: the slice keeps two for the retriever."""
    from tests.conftest import TINY_TOML, synthetic_log

    synthetic_log(users=40, items=30, per_user=6).to_csv(tmp_path / "events.csv", index=False)
    (tmp_path / "c.toml").write_text(TINY_TOML.replace("slice_events = 3\n", ""))
    result = train(tmp_path / "events.csv", tmp_path / "m", tmp_path / "c.toml")
    assert result.exit_code == 0 and "ranker trained" in result.output, result.output


def test_a_kill_after_the_towers_keeps_their_checkpoint_and_the_rerun_resumes(tiny_model, tmp_path, monkeypatch):
    from twotower import pipeline
    from twotower.config import load_config

    _, events, config = tiny_model
    cfg = load_config(config)
    data = pipeline.load_inputs(events, None, None, cfg)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "build_model_index", killed)
        with pytest.raises(KeyboardInterrupt):
            pipeline.train_and_save(data, cfg, tmp_path / "m", {}, show_progress=False)
    assert (tmp_path / "m" / BUILD_DIR / "checkpoint.pt").is_file() and not (tmp_path / "m" / "model.json").exists()
    result = pipeline.train_and_save(data, cfg, tmp_path / "m", {}, show_progress=False)
    assert result.report.resumed_from == len(result.report.epochs) > 0       # no epoch trained twice
    assert not (tmp_path / "m" / BUILD_DIR).exists() and not (tmp_path / "m" / "checkpoint.pt").exists()
