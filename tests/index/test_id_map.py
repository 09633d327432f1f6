"""The id map behind the FAISS index: the same answers as a dict through adds, removes, re-adds, sorts and a
save and load, with ids kept exactly as given."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twotower.index import id_map
from twotower.index.id_map import IdMap

IDS = st.sampled_from(["007", "7", "7.0", "a", "ä-ß", "商品-1", "x" * 40, "b", "0", "-1", "1e3", " a"])
STEPS = st.lists(st.tuples(st.sampled_from(["add", "remove", "save"]), st.lists(IDS, max_size=5, unique=True)),
                 max_size=25)


def check_same(ids: IdMap, truth: dict[str, int]) -> None:
    assert len(ids) == len(truth)
    assert sorted(ids.ids()) == sorted(truth)
    probe = sorted(truth) + ["absent", "07", "a\x00", ""]
    assert ids.labels(probe).tolist() == [truth.get(i, -1) for i in probe]
    assert [ids.label(i) for i in probe] == [truth.get(i) for i in probe]
    by_label = ids.id_array()
    assert all(IdMap.decode(by_label[[label]]) == [item_id] for item_id, label in truth.items())
    assert (by_label != b"").sum() == len(truth), "a removed id's label is free"
    assert (ids.first() in truth) if truth else ids.first() is None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS, merge_at=st.sampled_from([1, 3, 50_000]))
def test_the_map_answers_as_a_dict_does(steps, merge_at, tmp_path, monkeypatch):
    monkeypatch.setattr(id_map, "MERGE_AT", merge_at)       # sorted again after every change, or seldom
    ids, truth, next_label = IdMap(), {}, 0
    for op, batch in steps:
        if op == "add":
            new = [i for i in batch if i not in truth]
            ids.add(new, np.arange(next_label, next_label + len(new)))
            truth.update(zip(new, range(next_label, next_label + len(new))))
            next_label += len(new)
        elif op == "remove":
            taken = ids.remove(batch + ["absent"])
            assert sorted(taken) == sorted(truth.pop(i) for i in batch if i in truth)
        else:
            ids.save(tmp_path)
            ids = IdMap.load(tmp_path)
        check_same(ids, truth)


def test_adding_an_id_already_there_is_refused():
    ids = IdMap.from_pairs(["a", "b"], [0, 1])
    try:
        ids.add(["b"], np.array([2]))
    except ValueError:
        pass
    else:
        raise AssertionError("a second label for one id was accepted")
    assert ids.label("b") == 1


def test_ids_the_arrays_cannot_hold_are_refused_and_never_match_another():
    """numpy's byte strings drop trailing NULs and b'' marks a free label: an empty id or one ending in NUL
    is refused with an error naming it, and looking one up never finds the id it would be stripped to."""
    import pytest

    from twotower.errors import InputError

    ids = IdMap.from_pairs(["a", "b"], [0, 1])
    for bad in ["", "a\x00", "c\x00"]:
        with pytest.raises(InputError, match="item id"):
            ids.add(["ok", bad], np.array([2, 3]))
    assert len(ids) == 2 and ids.label("ok") is None
    assert ids.label("a\x00") is None and ids.labels(["a\x00", "a"]).tolist() == [-1, 0]
    assert ids.remove(["a\x00"]) == [] and ids.label("a") == 0


def test_a_reader_keeps_the_array_it_holds_while_the_map_changes():
    ids = IdMap.from_pairs(["a", "b"], [0, 1])
    held = ids.id_array()
    ids.remove(["a"])
    ids.add(["c"], np.array([2]))
    assert IdMap.decode(held) == ["a", "b"]
    assert IdMap.decode(ids.id_array()) == ["", "b", "c"]
