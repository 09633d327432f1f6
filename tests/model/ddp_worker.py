"""Tower training on a slice of MovieLens-100K as `tests/model/test_distributed.py` runs it: in the test's own
process, or as each of the processes torchrun starts. Each rank writes what it reached to OUT/rank<r>.json.

    python -m torch.distributed.run --nproc-per-node 2 --master-addr 127.0.0.1 ... tests/model/ddp_worker.py \\
        OUT {train,step,resume}

train: early-stopped training, its report. step: one step's gradients without dropout (every rank's share of
the first global batch, synced by DDP). resume: 2 epochs with a checkpoint, then the same run asked for 4.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))      # the checkout: tests.conftest
os.environ.setdefault("TWOTOWER_QUIET", "1")

USERS = 400          # MovieLens-100K users kept: ~40k events, a few seconds an epoch on one core
TRAIN = {"epochs": 4, "batch_size": 64, "full_softmax_max_items": 0, "uniform_negatives": 0,
         "max_explicit_negatives": 0, "patience": 10}


def dataset(cfg, users: int = USERS):
    """The first `users` users of MovieLens-100K with their item and user tables."""
    from twotower.data.movielens import load_ml100k, locate
    from twotower.pipeline import dataset_from_frames

    events, items, table = load_ml100k(locate("ml-100k", download=False))
    keep = events["user_id"].astype(int) <= users
    return dataset_from_frames(events[keep].reset_index(drop=True), items, table, cfg)


def train(out: Path, rank: int) -> dict:
    """Early-stopped training on each user's last event: the report and a checksum of the weights."""
    from tests.conftest import tiny_config
    from twotower.evaluate.towers import TowerRecommender
    from twotower.pipeline import early_stopping_split

    cfg = tiny_config(train=TRAIN)
    towers = TowerRecommender(cfg, show_progress=False)
    towers.fit(*early_stopping_split(dataset(cfg), cfg))
    r = towers.report
    return {"processes": r.processes, "best_score": r.best_score, "best_epoch": r.best_epoch, "epochs": r.epochs,
            "in_batch": r.in_batch, "weights": checksum(towers.model)}


def step(out: Path, rank: int) -> dict:
    """{parameter: gradient as nested lists} of one step on the first 64 windows, with 8 shared uniform
    negatives and logQ correction, scaled as the trainer scales a step (up to the common 1 / per_batch)."""
    import numpy as np
    import torch

    from tests.conftest import tiny_config
    from twotower.distributed import current
    from twotower.model import ddp
    from twotower.model.examples import build_windows
    from twotower.model.recommender import build_model
    from twotower.model.sampler import FrequencyEstimator
    from twotower.model.trainer import _batch_loss

    group = current()
    cfg = tiny_config(model={"dropout": 0.0}, train={**TRAIN, "uniform_negatives": 8})
    data = dataset(cfg)
    model = build_model(data, cfg)
    w = build_windows(data, cfg.model.max_history, 0)
    args = (w, ddp.rank_share(np.arange(64), group.rank, group.world), {}, False, FrequencyEstimator(model.n_items),
            cfg.train, torch.Generator().manual_seed(0), group.world)
    wrapped = ddp.data_parallel(model) if group.world > 1 else None
    loss, n, _ = wrapped(_batch_loss, *args) if wrapped is not None else _batch_loss(model, *args)
    (loss * n * group.world).backward()
    return {k: p.grad.tolist() for k, p in model.named_parameters() if p.grad is not None}


def resume(out: Path, rank: int) -> dict:
    """Train 2 epochs with a checkpoint in OUT (as a killed run leaves it), then the same run with 4 epochs."""
    from tests.conftest import tiny_config
    from twotower.model.recommender import build_model
    from twotower.model.trainer import train_towers

    reports = []
    for epochs in (2, 4):
        cfg = tiny_config(train={**TRAIN, "epochs": epochs})
        data = dataset(cfg, users=150)
        model = build_model(data, cfg)
        reports.append(train_towers(model, data, cfg.train, checkpoint_dir=out, show_progress=False))
    return {"resumed_from": reports[1].resumed_from, "epochs": len(reports[1].epochs), "weights": checksum(model)}


def checksum(model) -> float:
    return float(sum(p.double().sum() for p in model.state_dict().values()))


if __name__ == "__main__":
    from twotower.distributed import process_group

    folder, mode = Path(sys.argv[1]), sys.argv[2]
    with process_group() as group:
        result = {"train": train, "step": step, "resume": resume}[mode](folder, group.rank)
    (folder / f"rank{group.rank}.json").write_text(json.dumps(result))
