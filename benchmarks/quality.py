"""Quality benchmark: the evaluation protocol (leave-one-out by time, full ranking, seen items excluded) on
MovieLens-100K, MovieLens-1M and Amazon Toys, the served two-tower model against tuned baselines, one table
per dataset.

    .venv/bin/python benchmarks/quality.py [--datasets ml-100k ml-1m toys] [--config C.toml] [--out benchmarks/results]

ML-1M in ../shared/data has no timestamps: its file order is the clock (see the data README). Toys (the
S3-Rec files) has none either: position in each user's line is the clock.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# development data beside the checkout, unless $TWOTOWER_DATA points elsewhere
os.environ.setdefault("TWOTOWER_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))

import torch
from rich.console import Console

from twotower.config import load_config
from twotower.data.movielens import load_ml100k, load_ml1m, locate
from twotower.data.s3rec import load_toys, locate_toys
from twotower.pipeline import dataset_from_frames, evaluate
from twotower.report import plot_metrics, print_metrics, save_metrics

LOADERS = {"ml-100k": load_ml100k, "ml-1m": load_ml1m, "toys": load_toys}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["ml-100k", "ml-1m"], choices=sorted(LOADERS))
    ap.add_argument("--config", type=Path, default=None, help="TOML config for the towers (default: built-in)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args()
    console = Console()
    cfg = load_config(args.config)
    console.print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                  f"torch {torch.__version__} threads {torch.get_num_threads()}")
    for name in args.datasets:
        t0 = time.perf_counter()
        folder = locate_toys() if name == "toys" else locate(name)
        data = dataset_from_frames(*LOADERS[name](folder), cfg, source=str(folder))
        console.print(f"[bold]{name}[/bold]: {len(data.events):,} events, {data.n_users:,} users, {data.n_items:,} items")
        evaluation = evaluate(data, cfg, baselines=True, log=console.print, show_progress=not args.quiet)
        table = evaluation.table
        print_metrics(table, f"{name}: test metrics (leave-one-out by time, full ranking, seen items excluded)", console)
        args.out.mkdir(parents=True, exist_ok=True)
        save_metrics(table, args.out / f"quality-{name}.csv")
        plot_metrics(table, args.out / f"quality-{name}.png", name, evaluation.model.meta["training"]["epochs"])
        console.print(f"{name} done in {time.perf_counter() - t0:.0f}s; table in {args.out / f'quality-{name}.csv'}")


if __name__ == "__main__":
    main()
