"""One tower training on MovieLens-100K (a slice), as `tests/model/test_distributed.py` runs it: in the test's
own process, or as each of the processes torchrun starts. Rank 0 writes what the run reached as JSON.

    python -m torch.distributed.run --nproc-per-node 2 --master-addr 127.0.0.1 ... tests/model/ddp_worker.py OUT [step]

`step`: one training step's gradients instead (no dropout): every rank's share of the first global batch,
synced by DDP, against the same batch in one process.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))      # the checkout: tests.conftest
os.environ.setdefault("TWOTOWER_QUIET", "1")

USERS = 400          # MovieLens-100K users kept: ~40k events, a few seconds an epoch on one core
SETTINGS = {"train": {"epochs": 4, "batch_size": 64, "full_softmax_max_items": 0, "uniform_negatives": 0,
                      "max_explicit_negatives": 0, "patience": 10}}


def step_gradients(out: Path) -> dict:
    """{parameter: gradient} of one step on the first 64 windows, as a list; rank 0 writes them."""
    import numpy as np
    import torch

    from tests.conftest import tiny_config
    from twotower.distributed import process_group
    from twotower.model import ddp
    from twotower.model.examples import build_windows
    from twotower.model.recommender import build_model
    from twotower.model.sampler import FrequencyEstimator
    from twotower.model.trainer import _batch_loss

    cfg = tiny_config(model={"dropout": 0.0}, train={**SETTINGS["train"], "uniform_negatives": 8})
    data = dataset(cfg)
    with process_group() as group:
        model = build_model(data, cfg)
        w = build_windows(data, cfg.model.max_history, 0)
        idx = np.arange(64)
        args = (w, ddp.rank_share(idx, group.rank, group.world), {}, False,
                FrequencyEstimator(model.n_items), cfg.train, torch.Generator().manual_seed(0), group.world)
        step = ddp.data_parallel(model) if group.world > 1 else None
        loss, n, _ = step(_batch_loss, *args) if step is not None else _batch_loss(model, *args)
        (loss * n * group.world).backward()          # as the trainer scales it, up to the common 1 / per_batch
        grads = {k: p.grad.tolist() for k, p in model.named_parameters() if p.grad is not None}
        if group.leader:
            out.write_text(json.dumps(grads))
    return grads


def dataset(cfg):
    """The first USERS users of MovieLens-100K with their item and user tables."""
    from twotower.data.movielens import load_ml100k, locate
    from twotower.pipeline import dataset_from_frames

    events, items, users = load_ml100k(locate("ml-100k", download=False))
    keep = events["user_id"].astype(int) <= USERS
    return dataset_from_frames(events[keep].reset_index(drop=True), items, users, cfg)


def run(out: Path) -> dict:
    """Train with early-stopping validation on each user's last event; rank 0 writes and returns the report."""
    from tests.conftest import tiny_config
    from twotower.distributed import process_group
    from twotower.evaluate.towers import TowerRecommender
    from twotower.pipeline import early_stopping_split

    cfg = tiny_config(**SETTINGS)
    data = dataset(cfg)
    with process_group() as group:
        towers = TowerRecommender(cfg, show_progress=False)
        towers.fit(*early_stopping_split(data, cfg))
        r = towers.report
        result = {"rank": group.rank, "processes": r.processes, "best_score": r.best_score,
                  "epochs": r.epochs, "in_batch": r.in_batch,
                  "weights_sum": float(sum(p.double().sum() for p in towers.model.state_dict().values()))}
        if group.leader:
            out.write_text(json.dumps(result))
    return result


if __name__ == "__main__":
    (step_gradients if sys.argv[2:] == ["step"] else run)(Path(sys.argv[1]))
