"""The verbs as a user calls them: train, recommend, evaluate, and their errors."""

import pandas as pd
import pytest
from typer.testing import CliRunner

from twotower.cli import app

runner = CliRunner()
TINY = """
[model]
dim = 16
max_history = 20
layers = 1
heads = 1
[train]
epochs = 3
batch_size = 64
threads = 1
[rank]
candidates = 50
slice_events = 3
"""


@pytest.fixture()
def config(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


@pytest.fixture()
def trained(small_files, config, tmp_path):
    out = tmp_path / "model"
    result = runner.invoke(app, ["train", "--events", str(small_files["events"]), "--items", str(small_files["items"]),
                                 "--users", str(small_files["users"]), "--out", str(out), "--config", str(config), "-q"])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("verb", ["train", "recommend", "evaluate", "demo", "index", "materialize", "report", "search",
                                  "serve", "models list",
                                  "models show", "models promote", "models rollback"])
def test_every_verb_has_help(verb):
    result = runner.invoke(app, [*verb.split(), "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_train_writes_a_complete_model_folder_without_leftovers(trained):
    names = {p.name for p in trained.iterdir()}
    assert {"model.json", "weights.pt", "features.npz", "items.parquet", "users.parquet", "history.parquet",
            "item_vectors.npy", "index", "ranker", "features"} <= names
    assert "checkpoint.pt" not in names
    assert not [p for p in trained.parent.iterdir() if p.name.startswith(".model.")]


def test_recommend_excludes_seen_items_keeps_user_ids_and_falls_back_for_strangers(trained, small_ml, tmp_path):
    events, _, _ = small_ml
    users = tmp_path / "who.txt"
    users.write_text("1\n7\nnobody-knows-me\n")
    out = tmp_path / "recs.csv"
    result = runner.invoke(app, ["recommend", "--model", str(trained), "--users", str(users), "--k", "25",
                                 "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert "1 popularity fallback" in result.output
    recs = pd.read_csv(out, dtype={"user_id": str, "item_id": str})
    assert list(recs.columns) == ["user_id", "item_id", "rank", "score"]
    assert recs.groupby("user_id").size().to_dict() == {"1": 25, "7": 25, "nobody-knows-me": 25}
    seen = set(zip(events["user_id"].astype(str), events["item_id"].astype(str)))
    assert not any((u, i) in seen for u, i in zip(recs["user_id"], recs["item_id"]))
    for _, g in recs.groupby("user_id"):
        assert g["rank"].tolist() == list(range(1, 26))
        assert g["score"].is_monotonic_decreasing
    assert set(recs.loc[recs.user_id == "nobody-knows-me", "item_id"]) <= set(events["item_id"].astype(str))


def test_no_ranker_trains_towers_only_and_materialize_rebuilds_the_online_store(trained, small_files, config,
                                                                                tmp_path):
    out = tmp_path / "towers-only"
    result = runner.invoke(app, ["train", "--events", str(small_files["events"]), "--out", str(out),
                                 "--config", str(config), "--no-ranker", "-q"])
    assert result.exit_code == 0 and "ranker trained" not in result.output
    assert not (out / "ranker").exists() and not (out / "features").exists()
    result = runner.invoke(app, ["materialize", "--model", str(out), "-q"])
    assert result.exit_code == 2 and "no offline feature store" in result.output

    result = runner.invoke(app, ["materialize", "--model", str(trained), "-q"])
    assert result.exit_code == 0 and "events loaded" in result.output, result.output
    result = runner.invoke(app, ["materialize", "--model", str(trained), "--store", "redis", "-q"])
    assert result.exit_code == 2 and "redis_url" in result.output


def test_recommend_all_users(trained, small_ml, tmp_path):
    out = tmp_path / "all.csv"
    result = runner.invoke(app, ["recommend", "--model", str(trained), "--users", "all", "--k", "5", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert pd.read_csv(out)["user_id"].nunique() == small_ml[0]["user_id"].nunique()


def test_bad_input_exits_non_zero_with_one_clear_message_and_no_output(tmp_path, config):
    events = tmp_path / "events.csv"
    events.write_text("user_id,item_id,timestamp,action\n1,2,100,click\n1,3,not-a-time,click\n")
    out = tmp_path / "model"
    result = runner.invoke(app, ["train", "--events", str(events), "--out", str(out), "--config", str(config)])
    assert result.exit_code == 2
    assert "cannot parse timestamp 'not-a-time' at line 3" in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_bad_config_key_is_named(tmp_path, small_files):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[model]\ndimension = 8\n")
    result = runner.invoke(app, ["train", "--events", str(small_files["events"]), "--out", str(tmp_path / "m"),
                                 "--config", str(cfg)])
    assert result.exit_code == 2 and "model.dimension" in result.output


def test_recommend_refuses_a_folder_that_is_not_a_model(tmp_path):
    result = runner.invoke(app, ["recommend", "--model", str(tmp_path), "--out", str(tmp_path / "r.csv")])
    assert result.exit_code == 2 and "not a twotower model folder" in result.output


def test_evaluate_prints_one_table(small_files, config, tmp_path):
    out = tmp_path / "table.csv"
    result = runner.invoke(app, ["evaluate", "--events", str(small_files["events"]), "--items", str(small_files["items"]),
                                 "--config", str(config), "--no-baselines", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert "NDCG@10" in result.output
    table = pd.read_csv(out)
    assert table["model"].tolist() == ["TwoTower (ranked)", "TwoTower (retrieval)", "source: covisit", "source: ease",
                                       "source: trending"]
    # NDCG@k grows with k, and one target per request puts HR@10 at or above NDCG@10; the towers learned something
    assert ((table["NDCG@5"] <= table["NDCG@10"]) & (table["NDCG@10"] <= table["NDCG@20"])).all()
    assert (table["HR@10"] >= table["NDCG@10"]).all()
    assert table.set_index("model").loc["TwoTower (retrieval)", "NDCG@10"] > 0
    # the table is logged to MLflow too, one metric per model and column
    from mlflow import MlflowClient

    run_id = result.output.split("MLflow run ")[1].split()[0]
    logged = MlflowClient().get_run(run_id).data.metrics
    ranked = table.set_index("model").loc["TwoTower (ranked)", "NDCG@10"]
    assert abs(logged["TwoTower_ranked/NDCG_at_10"] - ranked) < 1e-5


def test_a_log_too_short_to_learn_from_is_a_clear_error(tmp_path, config):
    events = tmp_path / "events.csv"
    events.write_text("user_id,item_id,timestamp\n1,2,100\n2,3,101\n")
    for verb in ("train", "evaluate"):
        args = [verb, "--events", str(events), "--config", str(config)] + (["--out", str(tmp_path / "m")] if verb == "train" else [])
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "positive events" in result.output, result.output


def test_train_never_replaces_a_folder_of_other_files(small_files, config, tmp_path):
    precious = tmp_path / "docs"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    result = runner.invoke(app, ["train", "--events", str(small_files["events"]), "--out", str(precious), "--config", str(config)])
    assert result.exit_code == 2 and "other files" in result.output
    assert (precious / "notes.txt").read_text() == "keep me"


def test_demo_runs_the_whole_job(config, tmp_path):
    """The README's main command, with a tiny config: table, model, recommendations, report."""
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--out", str(out), "--config", str(config), "-q"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "evaluation.csv")
    assert table["model"].tolist() == ["TwoTower (ranked)", "TwoTower (retrieval)", "source: covisit", "source: ease",
                                       "source: trending", "SASRec (id-only)", "Popularity", "ItemKNN", "EASE",
                                       "iALS", "BPR"]
    assert table["NDCG@10 vs best baseline"].iloc[:2].str.contains(r"^[+-]\d\.\d{4} \[[+-]\d\.\d{4}, [+-]\d\.\d{4}\] vs ").all()
    assert (out / "evaluation.png").stat().st_size > 10_000 and (out / "model" / "model.json").is_file()
    recs = pd.read_csv(out / "recs.csv")
    assert recs["user_id"].nunique() == 943 and recs.groupby("user_id").size().eq(100).all()


def test_inconsistent_model_settings_are_named(tmp_path, small_files):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[model]\ndim = 30\nheads = 4\n")
    result = runner.invoke(app, ["train", "--events", str(small_files["events"]), "--out", str(tmp_path / "m"), "--config", str(cfg)])
    assert result.exit_code == 2 and "multiple of heads" in result.output
