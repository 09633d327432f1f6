"""Item text in the item tower, off and on, over several training seeds: does it make warm quality worse?

The evaluation protocol on MovieLens-100K with `model.text_vectors` off and on for each seed (one seed's noise
is as large as the difference), and the paired difference of the served NDCG@10 with its 95% t-interval.

    .venv/bin/python benchmarks/item_text_seeds.py [--seeds 1 2 3 4 5 6 7 8] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TWOTOWER_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table
from scipy import stats

from twotower.config import config_from_dict
from twotower.data.movielens import load_ml100k, locate
from twotower.pipeline import dataset_from_frames, evaluate

SERVED = ("TwoTower (ranked)", "TwoTower (retrieval)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6, 7, 8])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args()
    console = Console()
    frames = load_ml100k(locate("ml-100k"))
    rows = []
    for seed in args.seeds:
        for text in (False, True):
            cfg = config_from_dict({"train": {"seed": seed}, "model": {"text_vectors": text}})
            t0 = time.perf_counter()
            table = evaluate(dataset_from_frames(*frames, cfg, source="ml-100k"), cfg, baselines=False,
                             log=lambda *_: None, show_progress=False).table
            for _, r in table[table["model"].isin(SERVED)].iterrows():
                rows.append({"seed": seed, "text_vectors": text, "model": r["model"], "HR@10": r["HR@10"],
                             "NDCG@10": r["NDCG@10"]})
            console.print(f"seed {seed}, text_vectors {text}: {time.perf_counter() - t0:.0f}s")
    results = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    results.to_csv(args.out / "quality-ml-100k-item-text-seeds.csv", index=False)

    show = Table(title=f"MovieLens-100K, item text in the item tower, {len(args.seeds)} seeds (served, full ranking)")
    for c in ("model", "NDCG@10 off", "NDCG@10 on", "on - off (mean, 95% t-interval)", "seeds on better"):
        show.add_column(c)
    for model in SERVED:
        wide = results[results["model"] == model].pivot(index="seed", columns="text_vectors", values="NDCG@10")
        diff = (wide[True] - wide[False]).to_numpy()
        half = stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else np.nan
        show.add_row(model, f"{wide[False].mean():.4f} ± {wide[False].std(ddof=1):.4f}",
                     f"{wide[True].mean():.4f} ± {wide[True].std(ddof=1):.4f}",
                     f"{diff.mean():+.4f} [{diff.mean() - half:+.4f}, {diff.mean() + half:+.4f}]",
                     f"{int((diff > 0).sum())} of {len(diff)}")
    console.print(show)
    console.print(f"table in {args.out / 'quality-ml-100k-item-text-seeds.csv'}")


if __name__ == "__main__":
    main()
