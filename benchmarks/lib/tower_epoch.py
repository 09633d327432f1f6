"""One epoch of tower training on MovieLens-1M, timed: run plain (one process) or by torchrun (each rank).
Rank 0 writes {examples, seconds, examples_per_s, processes, threads} to OUT as JSON.

    python benchmarks/lib/tower_epoch.py OUT [--users N]

--users N keeps the first N users of MovieLens-1M (all of their events), for a shorter epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TWOTOWER_QUIET", "1")
os.environ.setdefault("TWOTOWER_DATA", str(Path(__file__).resolve().parents[3] / "shared" / "data"))

# the default towers (d=64, a 2-layer causal transformer over 50 items), sampled softmax with in-batch and
# 512 uniform negatives as a catalog too large for the full softmax trains, one epoch, no validation
SETTINGS = {"train": {"epochs": 1, "full_softmax_max_items": 0, "early_stopping": False}}


def main() -> None:
    import torch

    from twotower.config import config_from_dict
    from twotower.data.movielens import load_ml1m, locate
    from twotower.distributed import process_group
    from twotower.model.recommender import build_model
    from twotower.model.trainer import train_towers
    from twotower.pipeline import dataset_from_frames

    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--users", type=int, default=0, help="the first N users only (0: all)")
    args = parser.parse_args()
    cfg = config_from_dict(SETTINGS)
    events, items, users = load_ml1m(locate("ml-1m", download=False))
    if args.users:
        keep = users["user_id"].iloc[:args.users]
        events, users = events[events["user_id"].isin(keep)], users[users["user_id"].isin(keep)]
    data = dataset_from_frames(events.reset_index(drop=True), items, users, cfg)
    with process_group() as group:
        model = build_model(data, cfg)
        report = train_towers(model, data, cfg.train, show_progress=False)
        epoch = report.epochs[0]
        if group.leader:
            args.out.write_text(json.dumps({
                "processes": group.world, "threads": torch.get_num_threads(),
                "examples": int(report.in_batch["global_examples"]),
                "examples_per_s": epoch["examples_per_s"], "seconds": round(report.seconds, 1),
                "load_1min": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    sys.exit(main())
