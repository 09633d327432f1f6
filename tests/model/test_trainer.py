import numpy as np
import pytest
import torch

from tests.conftest import tiny_config
from twotower.data.split import holdout_last
from twotower.evaluate.protocol import EvalSet, ndcg10
from twotower.model.recommender import build_model, tower_scorer
from twotower.model.trainer import CHECKPOINT, train_towers
from twotower.pipeline import dataset_from_frames


@pytest.fixture(scope="module")
def data(small_ml):
    return dataset_from_frames(*small_ml, tiny_config())


def states_equal(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_gives_the_same_model(data):
    cfg = tiny_config(train={"epochs": 2})
    runs = []
    for _ in range(2):
        m = build_model(data, cfg)
        train_towers(m, data, cfg.train, show_progress=False)
        runs.append(m.state_dict())
    assert states_equal(*runs)


def test_a_killed_run_resumes_from_its_checkpoint_to_the_same_result(data, tmp_path):
    cfg4 = tiny_config(train={"epochs": 4})
    straight = build_model(data, cfg4)
    train_towers(straight, data, cfg4.train, show_progress=False)

    cfg2 = tiny_config(train={"epochs": 2})   # "killed" after epoch 2: its checkpoint stays behind
    first = build_model(data, cfg2)
    train_towers(first, data, cfg2.train, checkpoint_dir=tmp_path, show_progress=False)
    assert (tmp_path / CHECKPOINT).is_file()
    resumed = build_model(data, cfg4)
    report = train_towers(resumed, data, cfg4.train, checkpoint_dir=tmp_path, show_progress=False)
    assert report.resumed_from == 2 and len(report.epochs) == 4
    assert states_equal(straight.state_dict(), resumed.state_dict())


def test_early_stopping_restores_the_best_epoch(data):
    cfg = tiny_config(train={"epochs": 10, "patience": 2})
    scores, snapshots = iter([0.1, 0.3, 0.2, 0.25, 0.9]), []

    def validate(model):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scores)

    m = build_model(data, cfg)
    report = train_towers(m, data, cfg.train, validate=validate, show_progress=False)
    assert report.best_epoch == 2 and len(report.epochs) == 4
    assert states_equal(m.state_dict(), snapshots[1])


@pytest.mark.parametrize("mode", [{"full_softmax_max_items": 0}, {}], ids=["sampled", "full"])
def test_training_beats_popularity_on_held_out_events(data, mode):
    from twotower.evaluate.baselines import Popularity

    history, targets = holdout_last(data)
    val = EvalSet.make(history, targets)
    cfg = tiny_config(train={"epochs": 12, **mode})
    m = build_model(history, cfg)
    report = train_towers(m, history, cfg.train, validate=lambda mod: ndcg10(tower_scorer(mod, history), val),
                          show_progress=False)
    assert report.epochs[-1]["loss"] < report.epochs[0]["loss"]
    pop = Popularity()
    pop.fit(history, val)
    assert report.best_score > ndcg10(pop.scorer(history), val)


@pytest.mark.parametrize("kind", ["cosine", "euclidean", "hadamard"])
def test_every_similarity_trains(data, kind):
    cfg = tiny_config(model={"similarity": kind, "temperature": 0.1 if kind == "cosine" else 1.0}, train={"epochs": 2})
    m = build_model(data, cfg)
    report = train_towers(m, data, cfg.train, show_progress=False)
    assert np.isfinite(report.epochs[-1]["loss"]) and report.epochs[-1]["loss"] < report.epochs[0]["loss"]


def test_a_checkpoint_from_other_data_or_settings_is_not_resumed(data, tmp_path):
    cfg = tiny_config(train={"epochs": 2})
    train_towers(build_model(data, cfg), data, cfg.train, checkpoint_dir=tmp_path, show_progress=False, resume_key="a")
    report = train_towers(build_model(data, cfg), data, cfg.train, checkpoint_dir=tmp_path, show_progress=False,
                          resume_key="b")
    assert report.resumed_from == 0 and len(report.epochs) == 2


def test_a_batch_cut_to_its_longest_history_gives_the_queries_of_the_full_window(data):
    """Cutting the all-padding columns off a batch (what length-sorted batches save) changes no query."""
    from twotower.model.examples import build_windows

    cfg = tiny_config()
    model = build_model(data, cfg)
    model.eval()                                   # no dropout: the same function both ways
    w = build_windows(data, cfg.model.max_history, 0)
    lengths = (w.targets > 0).sum(1)
    short = np.flatnonzero(lengths <= 3)[:8]
    assert len(short) and (w.inputs[short, :-3] == 0).all(), "these windows are padding before their last 3"
    users = torch.as_tensor(w.users[short])
    with torch.no_grad():
        whole = model.queries(torch.as_tensor(w.inputs[short]), users)
        cut = model.queries(torch.as_tensor(w.inputs[short, -3:]), users)
    torch.testing.assert_close(whole[:, -3:], cut, rtol=1e-5, atol=1e-5)


def test_length_sorted_batches_cover_every_window_once():
    from twotower.model.trainer import length_batches

    lengths = np.random.default_rng(0).integers(1, 50, 1000)
    order = length_batches(torch.randperm(1000, generator=torch.Generator().manual_seed(0)), lengths, 32).numpy()
    assert sorted(order.tolist()) == list(range(1000))
    spread = [np.ptp(lengths[order[i:i + 32]]) for i in range(0, 1000, 32)]
    assert np.median(spread) < np.ptp(lengths) / 4, "a batch holds windows of similar length"


@pytest.mark.parametrize("full", [True, False])
def test_an_item_no_event_mentions_is_never_trained_as_a_negative(data, full):
    """Items in the items table only keep their untrained id embedding: nothing pushed them below every query."""
    from twotower.model.trainer import trained_items

    cfg = tiny_config(train={"epochs": 1, "full_softmax_max_items": 100_000 if full else 0,
                             "uniform_negatives": 64})
    mentioned = np.zeros(data.n_items + 1, bool)
    mentioned[trained_items(data).numpy()] = True
    unmentioned = np.flatnonzero(~mentioned[1:]) + 1
    assert len(unmentioned), "the small slice has items no event mentions"
    model = build_model(data, cfg)
    before = model.item_tower.id_embedding.weight.detach().clone()
    train_towers(model, data, cfg.train, show_progress=False)
    after = model.item_tower.id_embedding.weight.detach()
    assert torch.equal(after[unmentioned], before[unmentioned])
    assert not torch.equal(after[mentioned], before[mentioned])
