"""Two-stage benchmark: the towers' top-N, then the LambdaRank ranker, on MovieLens-100K (and -1M).

    .venv/bin/python benchmarks/two_stage.py [--datasets ml-100k ml-1m] [--n 200] [--slice-events 10]

The ranker learns from each user's latest `slice-events` positives before validation, with candidates from
towers trained on the events before those; the test requests get candidates from the protocol's towers.
Prints recall@N of the candidates and HR/NDCG@10 of retrieval order and ranked order in one table, with the
ranked order's NDCG@10 gain and its 95% paired-bootstrap interval over the test requests.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# development data beside the checkout, unless $TWOTOWER_DATA points elsewhere
os.environ.setdefault("TWOTOWER_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))      # the checkout: benchmarks.lib

import pandas as pd  # noqa: E402
from rich.console import Console  # noqa: E402

from benchmarks.lib.two_stage_eval import evaluate_two_stage  # noqa: E402
from twotower.config import load_config
from twotower.data.movielens import load_ml100k, load_ml1m, locate
from twotower.evaluate.protocol import split_for_protocol
from twotower.evaluate.towers import TowerRecommender
from twotower.model.recommender import tower_scorer
from twotower.pipeline import dataset_from_frames
from twotower.report import frame_table, print_table, save_metrics

LOADERS = {"ml-100k": load_ml100k, "ml-1m": load_ml1m}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["ml-100k"], choices=sorted(LOADERS))
    parser.add_argument("--n", type=int, default=None, help="candidates per request (default: config)")
    parser.add_argument("--slice-events", type=int, default=None, help="per user (default: config)")
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/two_stage.csv"))
    args = parser.parse_args()
    console = Console()
    cfg = load_config(args.config)
    changes = {k: v for k, v in (("candidates", args.n), ("slice_events", args.slice_events)) if v is not None}
    rank = cfg.rank.model_copy(update=changes)

    def fit_retriever(history, early_stopping):
        towers = TowerRecommender(cfg, show_progress=False)
        towers.fit(history, early_stopping)
        console.print(f"  towers on {int((history.events['weight'] > 0).sum()):,} events: best validation "
                      f"NDCG@10 {towers.report.best_score:.4f} at epoch {towers.report.best_epoch}")
        return lambda h: tower_scorer(towers.model, h)

    tables = []
    for name in args.datasets:
        t0 = time.perf_counter()
        folder = locate(name)
        data = dataset_from_frames(*LOADERS[name](folder), cfg, source=str(folder))
        val, test = split_for_protocol(data)
        result = evaluate_two_stage(data, val, test, fit_retriever, rank, log=console.print)
        ranker = result.reranker.ranker
        console.print(f"{name}: ranker {ranker.report}; {time.perf_counter() - t0:.0f}s")
        console.print("feature importance (gain share): " + ", ".join(
            f"{k} {v:.2f}" for k, v in ranker.importance().head(8).items()))
        tables.append(result.table.assign(dataset=name, N=rank.candidates, slice_events=rank.slice_events,
                                          seconds=time.perf_counter() - t0))
    df = pd.concat(tables, ignore_index=True)[["dataset", "N", "slice_events", "order", "recall@N", "HR@10",
                                               "NDCG@10", "gain", "seconds"]]
    print_table(frame_table(df, "two stages: retrieval, then ranking (test requests, leave-one-out by time)",
                            {"recall@N": ".4f", "HR@10": ".4f", "NDCG@10": ".4f", "seconds": ".0f"}), console)
    save_metrics(df, args.out)


if __name__ == "__main__":
    main()
