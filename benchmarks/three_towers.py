"""Three towers in one space on MovieLens-100K (issue 14's N towers): the query and item towers, and a text
tower reading each film's title and genres through the frozen sentence encoder, trained to land on its
film's item vector (train.pairs "text-item"). One table: the towers' test quality under the protocol
(retrieval order, full ranking, seen items excluded) with two towers and with three, and what the third
tower adds: a title's first words, through the sentence encoder and the text tower, find that film among
the item vectors (known-item success@10), and each film's own text lands on it (self-retrieval@10).

    .venv/bin/python benchmarks/three_towers.py [--pair-weight 0.5] [--queries 500]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TWOTOWER_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from benchmarks.lib.report import console as report_console  # noqa: E402
from twotower.config import config_from_dict  # noqa: E402
from twotower.data.movielens import load_ml100k, locate  # noqa: E402
from twotower.evaluate.metrics import ndcg_at  # noqa: E402
from twotower.evaluate.protocol import protocol_split, rank_targets  # noqa: E402
from twotower.evaluate.towers import TowerRecommender  # noqa: E402
from twotower.model.recommender import tower_scorer  # noqa: E402
from twotower.model.text_encoder import text_encoder  # noqa: E402
from twotower.pipeline import dataset_from_frames  # noqa: E402
from twotower.report import frame_table, print_table  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
console = report_console()


def nearest(queries: torch.Tensor, catalog: torch.Tensor, k: int = 10) -> np.ndarray:
    """[n, k] 0-based rows of the catalog nearest each query by cosine."""
    q, c = torch.nn.functional.normalize(queries, dim=-1), torch.nn.functional.normalize(catalog, dim=-1)
    return (q @ c.T).topk(k, dim=1).indices.numpy()


def run(events, items, users, settings: dict, queries: pd.DataFrame) -> dict:
    cfg = config_from_dict(settings)
    data = dataset_from_frames(events, items, users, cfg)
    val, test = protocol_split(data, log=lambda _: None)
    t0 = time.perf_counter()
    towers = TowerRecommender(cfg, show_progress=False)
    towers.fit(val.history, val)
    ranks, _ = rank_targets(tower_scorer(towers.model, test.history), test)
    row = {"towers": "query, item, text" if cfg.model.towers else "query, item",
           "HR@10": float((ranks < 10).mean()), "NDCG@10": float(ndcg_at(ranks, 10).mean()),
           "train_s": round(time.perf_counter() - t0, 1)}
    model = towers.model.eval()
    if cfg.model.towers:
        with torch.no_grad():
            codes = torch.arange(1, data.n_items + 1)
            catalog = model.tower_vectors("item", codes)
            own = nearest(model.tower_vectors("text", codes), catalog)
            row["text -> its film @10"] = float((own == np.arange(len(codes))[:, None]).any(1).mean())
            vectors = torch.as_tensor(text_encoder("minilm").encode(queries["query"].tolist()))
            found = nearest(model.extra["text"](vectors), catalog)
            wanted = data.items.encode(queries["item_id"].astype(str).to_numpy()) - 1
            row["title words -> film @10"] = float((found == wanted[:, None]).any(1).mean())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair-weight", type=float, default=0.5)
    parser.add_argument("--queries", type=int, default=500)
    args = parser.parse_args()
    events, items, users = load_ml100k(locate("ml-100k"))
    rng = np.random.default_rng(0)
    asked = items.sample(args.queries, random_state=0)
    queries = pd.DataFrame({"item_id": asked["item_id"].astype(str), "query": [
        " ".join(re.sub(r"\(\d{4}\)\s*$", "", str(t)).split()[:int(rng.integers(2, 4))]) for t in asked["title"]]})
    base = {"model": {"text_vectors": True}, "search": {"encoder": "none"}}
    rows = [run(events, items, users, base, queries),
            run(events, items, users, {"model": {**base["model"], "towers": {"text": "text_vector"}},
                                       "train": {"pairs": {"text-item": args.pair_weight}},
                                       "search": base["search"]}, queries)]
    table = pd.DataFrame(rows)
    print_table(frame_table(table, "MovieLens-100K: two towers and three (test, retrieval order)",
                            {"HR@10": ".4f", "NDCG@10": ".4f", "text -> its film @10": ".3f",
                             "title words -> film @10": ".3f"}))
    RESULTS.mkdir(exist_ok=True)
    table.to_csv(RESULTS / "three-towers-ml-100k.csv", index=False, float_format="%.4f")


if __name__ == "__main__":
    main()
