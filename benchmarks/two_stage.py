"""Two-stage benchmark: the towers' top-N, then the LambdaRank ranker, on MovieLens-100K (and -1M).

    .venv/bin/python benchmarks/two_stage.py [--datasets ml-100k ml-1m] [--n 200] [--config C.toml]

Prints recall@N of the candidates and HR/NDCG@10 of retrieval order and ranked order in one table.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import pandas as pd
from rich.console import Console

from twotower.config import load_config
from twotower.data.movielens import load_ml100k, load_ml1m, locate
from twotower.evaluate.protocol import split_for_protocol
from twotower.model.recommender import TowerRecommender, tower_scorer
from twotower.pipeline import dataset_from_frames
from twotower.rank.two_stage import evaluate_two_stage
from twotower.report import frame_table, print_table, save_metrics

LOADERS = {"ml-100k": load_ml100k, "ml-1m": load_ml1m}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["ml-100k"], choices=sorted(LOADERS))
    parser.add_argument("--n", type=int, default=200, help="candidates per request")
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    console = Console()
    cfg = load_config(args.config)
    tables = []
    for name in args.datasets:
        t0 = time.perf_counter()
        folder = locate(name)
        data = dataset_from_frames(*LOADERS[name](folder), cfg, source=str(folder))
        val, test = split_for_protocol(data)
        towers = TowerRecommender(cfg)
        towers.fit(val.history, val)
        result = evaluate_two_stage(data, val, test, tower_scorer(towers.model, val.history),
                                    tower_scorer(towers.model, test.history), n=args.n)
        table = result.table.assign(dataset=name, N=args.n)
        console.print(f"{name}: ranker {result.ranker.report}; {time.perf_counter() - t0:.0f}s")
        console.print("feature importance (gain share): " + ", ".join(
            f"{k} {v:.2f}" for k, v in result.ranker.importance().head(8).items()))
        tables.append(table)
    df = pd.concat(tables, ignore_index=True)[["dataset", "N", "order", "recall@N", "HR@10", "NDCG@10"]]
    print_table(frame_table(df, "two stages: retrieval, then ranking (test requests, leave-one-out by time)",
                            {"recall@N": ".4f", "HR@10": ".4f", "NDCG@10": ".4f"}), console)
    save_metrics(df, args.out / "two_stage.csv")


if __name__ == "__main__":
    main()
