"""Search benchmark, one command, three tables:

1. Best Buy search clicks (real queries, clicked SKUs; `../shared/data/bestbuy-search-clicks-sample`): the
   last fifth of the clicks (by time) are the test; twotower trains on the rest (items: SKU and category;
   an item's text is the queries that led to clicks on it; its query tower reads each click's query). Click
   recall@10 and MRR@10 for BM25 alone, the text encoder alone, the towers alone (the query's text through
   the query tower), BM25 + text fused, the three fused (no user, then the user's history), and popularity.
2. Known-item search on MovieLens-100K: a title's first words (2 or 3, year removed) as the query must find
   that title. success@1 and @10 per list.
3. Latency on one core over a catalog of N synthetic items (titles recombined from MovieLens words): the
   encoding rate, and p50/p95/p99 of one query through `search` (BM25, text vectors, fusion); then through
   the whole model (a MovieLens model trained with queries, its catalog grown to N: the towers' list too),
   in-process (`Model.search`) and over HTTP (`POST /search` to `twotower serve --threads 1`).

    .venv/bin/python benchmarks/search.py [--catalog 100000] [--queries 500]
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TWOTOWER_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from rich.table import Table  # noqa: E402

from benchmarks.lib.report import console as report_console  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
console = report_console()


def read_bestbuy(path: Path) -> pd.DataFrame:
    """The sample's quirky CSV: every line wrapped in one pair of quotes, inner quotes doubled."""
    lines = path.read_text(encoding="utf-8").splitlines()
    text = "\n".join(line[1:-1].replace('""', '"') if line.startswith('"') and line.endswith('"') else line
                     for line in lines)
    return pd.DataFrame(list(csv.DictReader(io.StringIO(text))), dtype=str)


def metrics(ranked: list[list[str]], targets: list[str]) -> dict[str, float]:
    hits = [t in r[:10] for r, t in zip(ranked, targets)]
    rr = [1.0 / (r[:10].index(t) + 1) if t in r[:10] else 0.0 for r, t in zip(ranked, targets)]
    return {"recall@10": float(np.mean(hits)), "MRR@10": float(np.mean(rr)), "_rr": np.array(rr),
            "_hits": np.array(hits, np.float64)}


def interval(values: np.ndarray) -> str:
    from twotower.evaluate.metrics import mean_interval

    _, low, high = mean_interval(values, draws=1000)
    return f"[{low:.3f}, {high:.3f}]"


SMALL = "BM25 + towers, nothing pretrained (n-gram towers, search.encoder = lexical)"


def bestbuy(work: Path) -> pd.DataFrame:
    import twotower

    folder = Path(os.environ["TWOTOWER_DATA"]) / "bestbuy-search-clicks-sample"
    log = read_bestbuy(folder / "train.csv")
    log["timestamp"] = pd.to_datetime(log["click_time"]).astype("int64") / 1e9
    log = log.sort_values("timestamp", kind="stable").reset_index(drop=True)
    cut = int(len(log) * 0.8)
    train, test = log.iloc[:cut], log.iloc[cut:]
    events = pd.DataFrame({"user_id": train["user"], "item_id": train["sku"], "timestamp": train["timestamp"],
                           "action": "click", "query": train["query"]})
    items = log[["sku", "category"]].drop_duplicates("sku").rename(columns={"sku": "item_id"})
    out = work / "bestbuy-model"
    cfg = {"train": {"epochs": 20, "threads": 1}, "registry": {"track": False}}
    with twotower.train(events, items, config=cfg, out=out, ranker=False) as model:
        index = model.search_index()
        popular = train["sku"].value_counts().index.tolist()
        lists = {"BM25 alone": [], "text encoder alone": [], "towers alone (query text in the query tower)": [],
                 "hybrid (BM25 + text encoder)": [], "hybrid + towers (anonymous)": [],
                 "hybrid + towers with the user's history": [], SMALL: [], "popularity": []}
        for q, u in zip(test["query"], test["user"]):
            bm25 = index.lexical.search(q, 100)
            dense = index.text_hits(index.encoder.encode([q])[0], 100)
            lists["BM25 alone"].append(bm25[0].tolist())
            lists["text encoder alone"].append(dense[0].tolist())
            fused = index.fuse({"text": dense, "bm25": bm25}, model.config.search)
            lists["hybrid (BM25 + text encoder)"].append(fused["item_id"].tolist())
            towers = model._server.query_hits(0, q, 100, float("nan"), None)
            lists["towers alone (query text in the query tower)"].append(towers[0].tolist())
            lists["hybrid + towers (anonymous)"].append(model.search(q, k=10)["item_id"].tolist())
            lists["hybrid + towers with the user's history"].append(model.search(q, user_id=u, k=10)["item_id"].tolist())
            lists["popularity"].append(popular[:10])
        known = int(model.knows(test["user"].tolist()).sum())
        learned = " and ".join(" + ".join(f.lists) for f in index.fusions) or "nothing (fixed weights)"
    small = {"model": {"text_encoder": "ngram", "text_vectors": True}, "search": {"encoder": "lexical"}}
    with twotower.train(events, items, config=cfg | small, out=work / "bestbuy-lexical", ranker=False) as model:
        lists[SMALL] = [model.search(q, k=10)["item_id"].tolist() for q in test["query"]]
    targets = test["sku"].tolist()
    seen = set(train["sku"])
    rows, scored = [], {}
    for name, ranked in lists.items():
        m = scored[name] = metrics(ranked, targets)
        rows.append({"method": name, "recall@10": m["recall@10"], "MRR@10": m["MRR@10"],
                     "MRR@10 95% interval": interval(m["_rr"])})
    best = scored["hybrid + towers (anonymous)"]["_hits"]
    for other in ("BM25 alone", "text encoder alone", "towers alone (query text in the query tower)"):
        console.print(f"hybrid + towers minus {other}: recall@10 {best.mean() - scored[other]['_hits'].mean():+.3f}, "
                      f"paired 95% interval {interval(best - scored[other]['_hits'])}")
    console.print(f"Best Buy: trained on {len(train)} clicks, tested on {len(test)} later clicks "
                  f"({sum(t in seen for t in targets)} of their SKUs were clicked in training; {known} of the "
                  f"test users have training history); fusion learned at training: {learned}")
    return pd.DataFrame(rows)


def known_items(n: int = 500) -> pd.DataFrame:
    from twotower.config import Config, SearchConfig
    from twotower.data.movielens import load_ml100k, locate
    from twotower.pipeline import dataset_from_frames
    from twotower.search import SearchIndex, fuse
    from twotower.model.text_encoder import text_encoder

    events, items, users = load_ml100k(locate("ml-100k"))
    data = dataset_from_frames(events, items, users, Config())
    index = SearchIndex.build(data.items.ids, data.item_texts[1:], text_encoder("minilm"))
    rng = np.random.default_rng(0)
    asked = items.sample(n, random_state=0)
    ranked = {"BM25 alone": [], "text encoder alone": [], "hybrid (fused)": []}
    for title in asked["title"]:
        words = re.sub(r"\(\d{4}\)\s*$", "", str(title)).split()
        q = " ".join(words[:int(rng.integers(2, 4))])
        bm25 = index.lexical.search(q, 100)
        dense = index.text_hits(index.encoder.encode([q])[0], 100)
        ranked["BM25 alone"].append(bm25[0].tolist())
        ranked["text encoder alone"].append(dense[0].tolist())
        ranked["hybrid (fused)"].append(fuse({"text": dense, "bm25": bm25}, {}, SearchConfig())["item_id"].tolist())
    targets = asked["item_id"].astype(str).tolist()
    return pd.DataFrame([{"method": name, "success@1": float(np.mean([r[:1] == [t] for r, t in zip(lists, targets)])),
                          "success@10": float(np.mean([t in r[:10] for r, t in zip(lists, targets)]))}
                         for name, lists in ranked.items()])


def synthetic_texts(words: list[str], genres: list[str], n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(words, int(rng.integers(2, 6)))) + " . " + " ".join(rng.choice(genres, 2))
            for _ in range(n)]


def latency(catalog: int, queries: int, work: Path) -> tuple[pd.DataFrame, float]:
    import torch

    from twotower.config import SearchConfig
    from twotower.data.movielens import load_ml100k, locate
    from twotower.model.text_encoder import text_encoder, text_key
    from twotower.search import SearchIndex, search

    torch.set_num_threads(1)
    _, items, _ = load_ml100k(locate("ml-100k"))
    words = sorted({w for t in items["title"] for w in re.findall(r"[A-Za-z]{3,}", str(t))})
    genres = sorted({g for t in items["genres"] for g in str(t).split("|")})
    texts = synthetic_texts(words, genres, catalog, seed=1)
    encoder = text_encoder("minilm")
    fresh = synthetic_texts(words, genres, 5_000, seed=2)          # the rate, on texts never encoded here
    t0 = time.perf_counter()
    encoder.encode(fresh, show_progress=True)
    rate = len(fresh) / (time.perf_counter() - t0)
    cached = work / f"synthetic-{catalog}.npy"                    # the catalog's vectors, from an earlier run
    if cached.is_file():
        encoder.cache.update(zip((text_key(t) for t in texts), np.load(cached)))
    t0 = time.perf_counter()
    index = SearchIndex.build([f"s{i}" for i in range(catalog)], texts, encoder, show_progress=True)
    console.print(f"index of {catalog:,} items built in {time.perf_counter() - t0:.0f}s"
                  + (" (vectors from an earlier run)" if cached.is_file() else ""))
    work.mkdir(parents=True, exist_ok=True)
    np.save(cached, index.vectors)
    rng = np.random.default_rng(1)
    cfg = SearchConfig()
    asked = [" ".join(rng.choice(words, int(rng.integers(1, 4)))) for _ in range(queries)]
    for q in asked[:20]:                                          # warm up
        search(index, q, 10, cfg)
    took = []
    for q in asked:
        t0 = time.perf_counter()
        search(index, q, 10, cfg)
        took.append((time.perf_counter() - t0) * 1000)
    took = np.array(took)
    return pd.DataFrame([{"catalog": f"{catalog:,}", "queries": queries,
                          "p50_ms": round(float(np.percentile(took, 50)), 1),
                          "p95_ms": round(float(np.percentile(took, 95)), 1),
                          "p99_ms": round(float(np.percentile(took, 99)), 1)}]), rate


def query_log(events: pd.DataFrame, items: pd.DataFrame, share: float = 0.3, seed: int = 0) -> pd.DataFrame:
    """MovieLens events, a share of them given a searcher's query: the first 2 or 3 words of the item's title
    (MovieLens has no search log; the queries give the model a towers' list and a learned fusion to time)."""
    rng = np.random.default_rng(seed)
    titles = items.set_index("item_id")["title"].astype(str).str.replace(r"\(\d{4}\)\s*$", "", regex=True)
    words = titles.str.split()
    first = {i: " ".join(w[:int(rng.integers(2, 4))]) for i, w in words.items()}
    asked = rng.random(len(events)) < share
    return events.assign(query=np.where(asked, events["item_id"].map(first), None))


def grown_search_model(catalog: int, work: Path) -> Path:
    """A model trained on MovieLens-100K with queries (`query_log`), its catalog grown to `catalog` items by
    synthetic ones (titles recombined from MovieLens words, other columns drawn from the real items), every
    one searchable. Kept in `work` between runs: encoding the new titles takes minutes."""
    import twotower
    from benchmarks.serve import synthetic_items
    from twotower.data.movielens import load_ml100k, locate

    out = work / f"search-model-{catalog}"
    if (out / "grown").is_file():
        return out
    events, items, users = load_ml100k(locate("ml-100k"))
    cfg = {"train": {"epochs": 3, "threads": 1}, "registry": {"track": False}}
    shutil.rmtree(out, ignore_errors=True)
    with twotower.train(query_log(events, items), items, users, config=cfg, out=out, ranker=False) as model:
        words = sorted({w for t in items["title"] for w in re.findall(r"[A-Za-z]{3,}", str(t))})
        added = synthetic_items(items, max(catalog - len(items), 0))
        rng = np.random.default_rng(3)
        added["title"] = [" ".join(rng.choice(words, int(rng.integers(2, 6)))) for _ in range(len(added))]
        model.update_catalog(added, show_progress=True)
    (out / "grown").write_text(str(catalog))
    return out


def served_latency(catalog: int, queries: int, work: Path) -> pd.DataFrame:
    """`Model.search` in-process (torch on one thread) and `POST /search` from a client process against
    `twotower serve --threads 1`, on the grown model: every list (BM25, text vectors, the towers' list of a
    model trained with queries) and the learned fusion, half the queries with a known user."""
    import httpx
    import torch

    import twotower
    from benchmarks.lib.service_harness import Service

    folder = grown_search_model(catalog, work)
    torch.set_num_threads(1)
    rng = np.random.default_rng(4)
    with twotower.Model(folder) as model:
        users = model.user_ids()
        titles = model.search_index().texts
        asked = [" ".join(str(titles[i]).split()[:int(rng.integers(1, 4))]) for i in rng.integers(0, len(titles),
                                                                                                   queries)]
        who = [str(rng.choice(users)) if rng.random() < 0.5 else None for _ in range(queries)]
        size = len(model.item_ids())
        for q, u in zip(asked[:20], who[:20]):                       # warm up
            model.search(q, user_id=u, k=10)
        took = []
        for q, u in zip(asked, who):
            t0 = time.perf_counter()
            model.search(q, user_id=u, k=10)
            took.append((time.perf_counter() - t0) * 1000)
    rows = [("Model.search, in-process", np.array(took))]
    service = Service(folder, work / "search-service-state").start()
    try:
        service.wait_ready()
        with httpx.Client(base_url=service.base, timeout=10) as client:
            took, failed = [], 0
            for n, (q, u) in enumerate(zip(asked[:20] + asked, who[:20] + who)):
                t0 = time.perf_counter()
                answer = client.post("/search", json={"query": q, "user_id": u, "k": 10})
                if n >= 20:
                    took.append((time.perf_counter() - t0) * 1000)
                    failed += answer.status_code != 200
    finally:
        service.stop()
    rows.append((f"POST /search, one at a time ({failed} failed)", np.array(took)))
    return pd.DataFrame([{"path": name, "catalog": f"{size:,}", "queries": len(t),
                          **{f"p{q}_ms": round(float(np.percentile(t, q)), 1) for q in (50, 95, 99)}}
                         for name, t in rows])


def show(title: str, table: pd.DataFrame) -> None:
    out = Table(title=title)
    for c in table.columns:
        out.add_column(c)
    for r in table.itertuples(index=False):
        out.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in r])
    console.print(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", type=int, default=100_000, help="synthetic items for the latency table")
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--work", type=Path, default=Path("/tmp/twotower-search-bench"),
                    help="keeps the synthetic catalog's vectors between runs")
    ap.add_argument("--only-latency", action="store_true")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.only_latency:
        with tempfile.TemporaryDirectory(prefix="twotower-search-") as tmp:
            os.environ.setdefault("TWOTOWER_HOME", str(Path(tmp) / "home"))
            clicks = bestbuy(Path(tmp))
        show("Best Buy search clicks: the clicked SKU among the top 10", clicks)
        titles = known_items()
        show("MovieLens-100K known-item search: a title's first words", titles)
        clicks.to_csv(args.out / "search-bestbuy.csv", index=False)
        titles.to_csv(args.out / "search-known-item.csv", index=False)
    speed, rate = latency(args.catalog, args.queries, args.work)
    show(f"one query on one core, the search index alone (encoding ran at {rate:,.0f} items/s)", speed)
    speed.assign(encoding_items_per_s=round(rate)).to_csv(args.out / "search-latency.csv", index=False)
    served = served_latency(args.catalog, args.queries, args.work)
    show("one query on one core, the whole model (towers' list, fusion; half with a user)", served)
    served.to_csv(args.out / "search-latency-served.csv", index=False)
    console.print(f"tables in {args.out}/search-*.csv")


if __name__ == "__main__":
    main()
