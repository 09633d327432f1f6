"""More than two towers: an extra tower reads an item's text vector and learns, from the catalog itself, to
land on that item's vector; bad tower and pair settings are one clear error."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import tiny_config
from twotower.errors import InputError
from twotower.evaluate.towers import TowerRecommender
from twotower.model.extra_towers import pair_names
from twotower.model.recommender import build_model
from twotower.pipeline import dataset_from_frames, early_stopping_split


@pytest.fixture(scope="module")
def three(small_ml):
    events, items, users = small_ml
    cfg = tiny_config(model={"text_vectors": True, "towers": {"text": "text_vector"}},
                      train={"epochs": 6, "threads": 1, "pairs": {"text-item": 1.0}}, search={"encoder": "none"})
    data = dataset_from_frames(events, items, users, cfg)
    untrained = build_model(data, cfg).eval()
    towers = TowerRecommender(cfg, show_progress=False)
    towers.fit(*early_stopping_split(data, cfg))
    return data, untrained, towers.model


def _self_found(model, data) -> float:
    """Share of items whose text, through the text tower, has that item among its 10 nearest item vectors."""
    with torch.no_grad():
        items = torch.arange(1, data.n_items + 1)
        by_text = torch.nn.functional.normalize(model.tower_vectors("text", items), dim=-1)
        catalog = torch.nn.functional.normalize(model.tower_vectors("item", items), dim=-1)
        top = (by_text @ catalog.T).topk(10, dim=1).indices
    return float((top == torch.arange(len(items)).unsqueeze(1)).any(1).float().mean())


def test_the_text_tower_learns_to_land_on_its_items_vector(three):
    data, untrained, trained = three
    before, after = _self_found(untrained, data), _self_found(trained, data)
    assert after > 0.3 and after > 3 * before, (before, after)


def test_the_third_tower_travels_in_the_models_weights(three):
    data, untrained, trained = three
    assert any(k.startswith("extra.text.") for k in trained.state_dict())
    untrained.load_state_dict(trained.state_dict())               # strict: every tower's weights, no more
    items = torch.arange(1, 20)
    with torch.no_grad():
        assert torch.allclose(untrained.tower_vectors("text", items), trained.tower_vectors("text", items))


def test_bad_towers_and_pairs_are_one_clear_error(small_ml):
    with pytest.raises(InputError, match="train.pairs"):
        pair_names({"text-nothing": 1.0}, {"text": "text_vector"})
    with pytest.raises(InputError, match="in no pair"):
        pair_names({}, {"text": "text_vector"})
    events, items, users = small_ml
    cfg = tiny_config(model={"towers": {"image": "genres"}}, train={"pairs": {"image-item": 1.0}},
                      search={"encoder": "none"})
    with pytest.raises(InputError, match="not a vector feature"):
        build_model(dataset_from_frames(events, items, users, cfg), cfg)
