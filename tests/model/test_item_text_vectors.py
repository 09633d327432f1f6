"""`model.text_vectors`: the item tower reads each item's text through the frozen sentence encoder, and an
item added later is placed by its own text."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import tiny_config
from twotower.data.item_text import TEXT_VECTOR
from twotower.model.recommender import build_model
from twotower.model.text_encoder import PretrainedEncoder
from twotower.pipeline import dataset_from_frames


@pytest.fixture(scope="module")
def with_text(small_ml):
    events, items, users = small_ml
    cfg = tiny_config(model={"text_vectors": True}, search={"encoder": "none"})
    return dataset_from_frames(events, items, users, cfg), cfg


def test_each_item_carries_the_encoders_vector_of_its_text(with_text):
    data, _ = with_text
    (spec,) = [s for s in data.item_specs if s.name == TEXT_VECTOR]
    vectors = data.item_features[TEXT_VECTOR]
    assert spec.kind == "vector" and vectors.shape == (data.n_items + 1, spec.width) and not vectors[0].any()
    toy = int(data.items.encode(["1"])[0])
    expected = PretrainedEncoder().encode([data.item_texts[toy]])[0]
    assert "Toy Story" in data.item_texts[toy] and np.allclose(vectors[toy], expected, atol=1e-5)


def test_the_item_tower_reads_the_text_vector(with_text):
    data, cfg = with_text
    model = build_model(data, cfg).eval()
    codes = torch.arange(1, 6)
    values = {k: torch.as_tensor(v[1:6]) for k, v in data.item_features.items()}
    with torch.no_grad():
        same = model.index_vectors(codes, values)
        values[TEXT_VECTOR] = torch.zeros_like(values[TEXT_VECTOR])
        without = model.index_vectors(codes, values)
    assert not torch.allclose(same, without)


def test_without_the_setting_no_text_vector_is_made(small_ml):
    events, items, users = small_ml
    data = dataset_from_frames(events, items, users, tiny_config(search={"encoder": "none"}))
    assert TEXT_VECTOR not in data.item_features and all(s.kind != "vector" for s in data.item_specs)
