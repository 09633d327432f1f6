"""Cold items: a share of MovieLens items held out of training entirely (`twotower evaluate --cold-items`),
scored apart from the others, for the default content towers and with each cold-start setting. Prints one
table per setting and writes benchmarks/results/cold-<data>-<fraction>.csv.

    .venv/bin/python benchmarks/cold.py [--data ml-100k] [--fraction 0.1] [--settings default,dropout,text]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TWOTOWER_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))

import pandas as pd  # noqa: E402

from benchmarks.lib.report import console as report_console  # noqa: E402
from twotower.config import config_from_dict  # noqa: E402
from twotower.data.movielens import load_ml100k, load_ml1m, locate  # noqa: E402
from twotower.pipeline import dataset_from_frames, evaluate_cold  # noqa: E402
from twotower.report import frame_table, print_table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = {                                   # name -> config sections over the defaults
    "default": {},
    "dropout": {"model": {"item_id_dropout": 0.3}},
    "text": {"model": {"text_vectors": True}},
    "dropout+text": {"model": {"item_id_dropout": 0.3, "text_vectors": True}},
    "new items at place 1": {"index": {"new_item_place": 1}},
    "new items at place 5": {"index": {"new_item_place": 5}},
    "new items at place 10": {"index": {"new_item_place": 10}},
}
console = report_console()


def commit() -> str:
    """The checkout's commit, so rows kept from earlier runs say which code made them."""
    import subprocess

    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent)
    return done.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="ml-100k", choices=["ml-100k", "ml-1m"])
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--settings", default=",".join(SETTINGS))
    args = parser.parse_args()
    events, items, users = (load_ml100k if args.data == "ml-100k" else load_ml1m)(locate(args.data))
    tables = []
    for name in args.settings.split(","):
        cfg = config_from_dict({**SETTINGS[name], "search": {"encoder": "none"}})
        data = dataset_from_frames(events, items, users, cfg)
        t0 = time.perf_counter()
        table = evaluate_cold(data, cfg, args.fraction, log=console.print, show_progress=False)
        console.print(f"{name}: {time.perf_counter() - t0:.0f}s")
        tables.append(table.assign(setting=name, commit=commit()))
        print_table(frame_table(table, f"{args.data}, {args.fraction:.0%} of the items cold, setting {name!r}",
                                {"Recall@10": ".4f", "Recall@20": ".4f", "NDCG@10": ".4f", "seconds": ".0f"}))
    out = pd.concat(tables, ignore_index=True)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"cold-{args.data}-{args.fraction:g}.csv"
    if path.is_file():                         # other settings' rows from earlier runs stay (with their commit)
        earlier = pd.read_csv(path)
        out = pd.concat([earlier[~earlier["setting"].isin(out["setting"])], out], ignore_index=True)
    out.to_csv(path, index=False, float_format="%.5f")
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
