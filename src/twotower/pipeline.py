"""The jobs the CLI runs, each one call: load inputs, train and save a model, evaluate, run the demo."""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from . import distributed
from .catalog import IndexBuild, build_model_index
from .config import Config
from .data.dataset import Dataset, build_dataset, last_positive_times, request_context
from .data.schema import read_events, read_items, read_table, validate_events, validate_table
from .data.split import holdout_last
from .errors import InputError
from .evaluate.baselines import Popularity, classic_baselines
from .evaluate.cold import cold_rows, cold_split, cold_table
from .evaluate.metrics import ndcg_at, paired_interval, top_k
from .evaluate.protocol import EvalSet, protocol_rows, protocol_split, rank_targets
from .evaluate.served import served_metrics
from .folder import check_model_folder, model_build
from .features.materialize import Materialized, materialize, offline_store
from .model.artifact import SavedModel, load_model, model_id_of, save_model, update_meta
from .evaluate.towers import TowerRecommender, id_only
from .model.recommender import tower_scorer
from .model.trainer import TrainReport
from .tuning import choose_settings
from .rank.reranker import Reranker
from .report import METRIC_COLUMNS, PAIRED_COLUMN
from .rank.two_stage import NoRankerData, event_log, train_reranker
from .data.item_text import with_click_queries
from .search import SearchBuild, TowersBefore, build_search_index
from .data.query_text import QUERY_TEXT
from .timing import Stopwatch

logger = logging.getLogger(__name__)
SHORT_PATIENCE = 2


def load_inputs(events: str | Path, items: str | Path | None, users: str | Path | None, cfg: Config) -> Dataset:
    """Read and validate the user's files into a `Dataset`."""
    ev = read_events(events, cfg.data)
    it = read_items(items) if items else None
    us = read_table(users, id_column="user_id") if users else None
    return build_dataset(ev, it, us, cfg)


def dataset_from_frames(events: pd.DataFrame, items: pd.DataFrame | None, users: pd.DataFrame | None,
                        cfg: Config, source: str = "events") -> Dataset:
    """The same validation for tables already in memory (e.g. from a MovieLens loader)."""
    ev = validate_events(events, cfg.data, Path(source))
    it = validate_table(items, "item_id", Path(f"{source} (items)")) if items is not None else None
    us = validate_table(users, "user_id", Path(f"{source} (users)")) if users is not None else None
    return build_dataset(ev, it, us, cfg)


def fingerprint(*paths: str | Path | None) -> dict:
    """sha256 and size of each input file (by absolute path), so a model records exactly what it was trained
    on, and later outputs never overwrite it."""
    out = {}
    for p in paths:
        if p:
            h = hashlib.sha256()
            with open(p, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            out[str(Path(p).resolve())] = {"sha256": h.hexdigest(), "bytes": Path(p).stat().st_size}
    return out


@dataclass
class TrainOutcome:
    out: Path
    report: TrainReport
    n_users: int
    n_items: int
    n_events: int
    index: IndexBuild
    ranker: "RankerBuild | None" = None
    stages: dict[str, float] = field(default_factory=dict)     # seconds per stage, in order
    search: SearchBuild | None = None                           # None: no item text, or search.encoder none


@dataclass
class RankerBuild:
    reranker: Reranker
    store: Materialized
    seconds: float


def train_and_save(data: Dataset, cfg: Config, out: str | Path, data_fingerprint: dict,
                   show_progress: bool = True, ranker: bool = True,
                   log: Callable[[str], None] = lambda _: None) -> TrainOutcome | None:
    """Train and save a model folder: unless `ranker` is off (or `rank.enabled` is false) the ranker first,
    on a later slice than its own towers; then the model's towers (early-stopped on each user's last event
    unless disabled), started from the ranker's towers and fine-tuned on every event, so the two share most
    of their training; the model is saved with the full history, so recommendations use every event; then
    its index, and the ranker with its online feature store.

    Under torchrun (`twotower.distributed`) every rank calls it: rank 0 does all of the above and returns the
    outcome; the others join each tower training (collective) and return None after the last one."""
    out = Path(out)
    group = distributed.current()
    if group.world > 1 and cfg.train.tune_seconds > 0 and cfg.train.early_stopping:
        raise InputError("train.tune_seconds", "tuning runs in one process, not under torchrun",
                         "tune with one process, put the chosen settings in the config and set tune_seconds = 0")
    if not group.leader:
        follow_training(data, cfg, ranker)
        return None
    watch = Stopwatch()
    tuning = None
    if cfg.train.tune_seconds > 0 and cfg.train.early_stopping:
        with watch.stage("tuning"):
            cfg, tuning = choose_settings(*early_stopping_split(data, cfg), cfg, cfg.train.tune_seconds,
                                          cfg.train.tune_epochs)
        log(f"tuning: {len(tuning.trials)} trials in {tuning.seconds:.0f}s, chosen "
            f"{tuning.chosen or 'the configured settings'}")
    key = hashlib.sha256(json.dumps([cfg.model_dump(), data_fingerprint], sort_keys=True).encode()).hexdigest()
    with model_build(out) as build:
        learned = learn_ranker(build, data, cfg, ranker, show_progress, log, watch)
        # fine-tuning a trained model settles in a few epochs
        recommender = TowerRecommender(cfg if learned.retriever is None else short_patience(cfg),
                                       checkpoint_dir=build, show_progress=show_progress, resume_key=key)
        with watch.stage("towers" if learned.retriever is None else "towers (fine-tuned from the ranker's)"):
            if cfg.train.early_stopping:
                recommender.fit(*early_stopping_split(data, cfg), warm_start=learned.retriever)
            else:
                recommender.fit(data, None, warm_start=learned.retriever)
        report = recommender.report
        save_model(build, recommender.model, data, cfg, report, data_fingerprint,
                   {"val_ndcg@10": report.best_score} if cfg.train.early_stopping else {})
        with watch.stage("vector index"):
            index = build_model_index(build, cfg.index, show_progress=show_progress)
        searchable = None
        texts = with_click_queries(data.item_texts, data.events, cfg.search) \
            if cfg.search.encoder != "none" and data.item_texts is not None else None
        if texts is not None and any(t for t in texts[1:]):
            with watch.stage("search index"):
                learn = cfg.search.fusion == "learned"           # fixed weights learn nothing
                searchable = build_search_index(
                    build, data.items.ids, texts[1:], cfg.search, show_progress,
                    learn_from=(data.item_texts, data.events) if learn else None,
                    towers_before=fusion_towers(data, cfg, show_progress) if learn and cfg.search.personal_weight > 0
                    else None)
            fusions = [" + ".join(f.lists) for f in searchable.fusions]
            log(f"search index: {searchable.items:,} items with text, encoded at "
                f"{searchable.texts_per_second:,.0f} texts/s; "
                + (f"fusion of {' and of '.join(fusions)} learned on the log's latest "
                   f"{searchable.fusion['held_out']} searches" if fusions else "lists fused by fixed weights"))
        built = save_ranker(build, learned, cfg, show_progress, watch)
        update_meta(build, stages_s={k: round(v, 1) for k, v in watch.seconds.items()},
                    tuning=asdict(tuning) if tuning else None,
                    towers_warm_start=learned.retriever is not None)
    index.folder = out / index.folder.name
    if built is not None:
        built.store.where = built.store.where.replace(str(build), str(out))
    return TrainOutcome(out, report, data.n_users, data.n_items, int((data.events["weight"] > 0).sum()), index,
                        built, watch.seconds, searchable)


def fusion_towers(data: Dataset, cfg: Config, show_progress: bool) -> TowersBefore | None:
    """For a model whose query tower reads search text, what `learn_fusion` needs to weigh the towers' list:
    towers trained on the events before a cut (its held-out searches) as the model's are (towers stopped
    early by a short patience rank far worse, and would teach the fusion to distrust them), each search
    answered from the history before the cut. None for other models (their towers only reorder the text matches), and under torchrun,
    where tower training is collective and the other ranks have left."""
    if QUERY_TEXT not in data.context_features:
        return None
    if distributed.current().world > 1:
        logger.warning("search fusion: under torchrun the towers' list joins the text lists' learned fusion by "
                       "a convex fusion (a fusion with it is learned in one process)")
        return None

    def before(cut: float):
        earlier = data.subset(data.events["timestamp"].to_numpy(np.float64) < cut)
        towers = TowerRecommender(cfg, name="search fusion's towers", show_progress=show_progress)
        try:
            towers.fit(*early_stopping_split(earlier, cfg))
        except InputError as exc:
            logger.warning("search fusion: the towers' list is not learned with the text lists: %s", exc.problem)
            return None
        score, last = tower_scorer(towers.model, earlier), last_positive_times(earlier)

        def hits(queries: list[str], users: np.ndarray, times: np.ndarray, n: int) -> list:
            out = []
            for lo in range(0, len(queries), FUSION_BATCH):       # [batch, items] at a time, not [all, items]
                at = slice(lo, lo + FUSION_BATCH)
                context = request_context(earlier.context_specs, times[at], last[users[at]], query=queries[at])
                rows = score(users[at], context)                    # column 0 (padding) is -inf
                for row, codes in zip(rows, top_k(rows, n)):
                    codes = codes[np.isfinite(row[codes])]
                    out.append((earlier.items.decode(codes), row[codes]))
            return out
        return hits
    return before


FUSION_BATCH = 256


class _RetrieverTrained(Exception):
    """A follower rank has joined the ranker's retriever training: the rest of the ranker is rank 0's."""


def follow_training(data: Dataset, cfg: Config, ranker: bool) -> None:
    """A rank other than 0 in `train_and_save`: the same tower trainings as rank 0, in the same order and on
    the same data (the ranker's retriever on the same slice, then the model's towers from its weights), each
    collective; nothing written."""
    retriever: dict = {}
    if ranker and cfg.rank.enabled:
        def fit_retriever(history: Dataset, early_stopping: EvalSet):
            towers = TowerRecommender(short_patience(cfg), show_progress=False)
            towers.fit(history, early_stopping)
            retriever["state"] = towers.model.state_dict()
            raise _RetrieverTrained

        try:        # rank 0's own path up to its retriever: the slice is chosen by the same code
            train_reranker(data, fit_retriever, cfg.rank, None, exclude_seen=cfg.recommend.exclude_seen)
        except (NoRankerData, _RetrieverTrained):
            pass
    warm = retriever.get("state")
    towers = TowerRecommender(cfg if warm is None else short_patience(cfg), show_progress=False)
    towers.fit(*(early_stopping_split(data, cfg) if cfg.train.early_stopping else (data, None)), warm_start=warm)


def short_patience(cfg: Config) -> Config:
    """The config with patience at most SHORT_PATIENCE: for the ranker's towers (the model's towers are
    fine-tuned from them after) and for that fine-tuning."""
    return cfg.model_copy(update={"train": cfg.train.model_copy(
        update={"patience": min(cfg.train.patience, SHORT_PATIENCE)})})


def early_stopping_split(data: Dataset, cfg: Config) -> tuple[Dataset, EvalSet | None]:
    """(events before each user's last positive, that last positive as the early-stopping set). When seen
    items are excluded and every last positive is a repeat, repeats are scored unmasked instead: the
    towers still need a signal of when to stop."""
    before, targets = holdout_last(data, min_history=1)
    validation = EvalSet.make(before, targets, cfg.recommend.exclude_seen)
    if len(validation.targets) == 0 and len(targets):
        logger.warning("every user's last event repeats an item they had; early stopping scores these repeats "
                       "with seen items not excluded")
        validation = EvalSet.make(before, targets, exclude_seen=False)
    return before, validation if len(validation.targets) else None


@dataclass
class LearnedRanker:
    """The second stage before the model's towers exist: the ranker (None, with the reason, when the log
    cannot teach one) and the weights of the towers that produced its candidates."""

    reranker: Reranker | None
    reason: str = ""
    retriever: dict | None = None
    seconds: float = 0.0


def learn_ranker(model_dir: Path, data: Dataset, cfg: Config, wanted: bool, show_progress: bool,
                 log: Callable[[str], None], watch: Stopwatch | None = None) -> LearnedRanker:
    """The offline store (every event) in `model_dir`, and the ranker trained on a later slice than its own
    towers' data (see rank.two_stage), when it is wanted and the log can teach one."""
    if not (wanted and cfg.rank.enabled):
        return LearnedRanker(None, "trained without a ranker (--no-ranker or rank.enabled = false)")
    t0 = time.perf_counter()
    watch = watch or Stopwatch()
    with watch.stage("offline feature store"):
        store = offline_store(model_dir, cfg.rank)
        store.write_events(event_log(data))
    retriever: dict = {}

    def fit_retriever(history: Dataset, early_stopping: EvalSet):
        towers = TowerRecommender(short_patience(cfg), name="ranker's retriever", show_progress=show_progress)
        towers.fit(history, early_stopping)
        retriever["state"] = towers.model.state_dict()
        return lambda h: tower_scorer(towers.model, h)

    try:
        reranker = train_reranker(data, fit_retriever, cfg.rank, store, log, cfg.recommend.exclude_seen, watch,
                                  show_progress)
    except NoRankerData as exc:
        logger.warning("no ranker: %s; recommendations are served in retrieval order", exc.problem)
        return LearnedRanker(None, exc.problem, retriever.get("state"), time.perf_counter() - t0)
    return LearnedRanker(reranker, "", retriever.get("state"), time.perf_counter() - t0)


def save_ranker(model_dir: Path, learned: LearnedRanker, cfg: Config, show_progress: bool,
                watch: Stopwatch | None = None) -> "RankerBuild | None":
    """Save the learned ranker and materialize its online store from the offline one (after the model's
    towers are saved: the store is keyed by their id); model.json records whether there is a ranker, and
    why not."""
    if learned.reranker is None:
        update_meta(model_dir, ranker={"trained": False, "reason": learned.reason})
        return None
    t0 = time.perf_counter()
    learned.reranker.save(model_dir)
    with (watch or Stopwatch()).stage("online feature store"):
        online = materialize(model_dir, cfg.rank, model_id_of(model_dir), show_progress)
    update_meta(model_dir, ranker={"trained": True})
    return RankerBuild(learned.reranker, online, learned.seconds + time.perf_counter() - t0)


def second_stage(model_dir: Path, data: Dataset, cfg: Config, wanted: bool, show_progress: bool,
                 log: Callable[[str], None]) -> "RankerBuild | None":
    """The ranker of a model folder whose towers are saved already (learn, then save)."""
    return save_ranker(model_dir, learn_ranker(model_dir, data, cfg, wanted, show_progress, log), cfg,
                       show_progress)


@dataclass
class Evaluation:
    table: pd.DataFrame        # one row per model: the served rows first, then the baselines
    model: SavedModel          # the evaluated model (trained before each user's test event), loaded in memory;
                               # its folder is gone unless `evaluate` was given a model_dir


def evaluate(data: Dataset, cfg: Config, baselines: bool = True, log: Callable[[str], None] = print,
             show_progress: bool = True, model_dir: str | Path | None = None) -> Evaluation:
    """The protocol over what is served: the model is trained as `train` trains it (towers, index, ranker)
    on everything before each user's test event, and each test request is answered by the serving path at
    its own time, ranked and in retrieval order; then the id-only (SASRec-style) towers and the classic
    baselines under the same split. The evaluated model is kept in `model_dir` when one is given."""
    split = protocol_split(data, cfg.recommend.exclude_seen, log)
    rows, served = [], {}
    private = evaluation_config(cfg)
    with tempfile.TemporaryDirectory(prefix="twotower-evaluate-") as tmp:
        t0 = time.perf_counter()
        built = train_and_save(split[1].history, private, Path(model_dir or Path(tmp) / "model"), {},
                               show_progress, ranker=True, log=log)
        trained = time.perf_counter() - t0
        log("time per stage: " + ", ".join(f"{k} {v:.0f}s" for k, v in built.stages.items()))
        settings = f"epoch={built.report.best_epoch}"
        reranker = built.ranker.reranker if built.ranker else None
        orders = [(True, None, "TwoTower (ranked)"), (False, None, "TwoTower (retrieval)")] if reranker else \
            [(False, None, "TwoTower (retrieval)")]
        orders += [(True, f"{s.name}_score", f"source: {s.name}") for s in (reranker.sources if reranker else [])]
        for rerank, order, name in orders:
            t1 = time.perf_counter()
            metrics, served[name] = served_metrics(built.out, split[1], rerank, order=order)
            detail = settings
            if rerank and order is None:
                detail += (f", trees={reranker.ranker.report['best_iteration']}" if reranker.serve_order == "ranker"
                           else f", serves {reranker.serve_order} (beat the trees on validation)")
            rows.append({"model": name, **metrics, "seconds": (trained if order is None else 0.0)
                         + time.perf_counter() - t1, "settings": detail if order is None else "same candidates"})
            log(f"  {name:<22} NDCG@10 {metrics['NDCG@10']:.4f}  HR@10 {metrics['HR@10']:.4f}  (served)")
        model = load_model(built.out)
    if baselines:
        models = [TowerRecommender(id_only(cfg), name="SASRec (id-only)", show_progress=show_progress),
                  *classic_baselines(cfg.train.seed)]
        baseline_rows, baseline_ranks = protocol_rows(data, models, log, split)
        best = max(baseline_rows, key=lambda r: r["NDCG@10"])["model"]
        for row in rows:
            gain, low, high = paired_interval(ndcg_at(served[row["model"]]), ndcg_at(baseline_ranks[best]))
            row[PAIRED_COLUMN] = f"{gain:+.4f} [{low:+.4f}, {high:+.4f}] vs {best}"
        rows += baseline_rows
    return Evaluation(pd.DataFrame(rows), model)


def evaluation_config(cfg: Config) -> Config:
    """The config an evaluated model is trained with: its index and online store in its own folder (never a
    shared pgvector table or Redis prefix a deployed model may be serving from), and no search index
    (recommendations need none)."""
    return cfg.model_copy(update={"index": cfg.index.model_copy(update={"backend": "faiss", "dsn": None}),
                                  "rank": cfg.rank.model_copy(update={"online_store": "sqlite", "redis_url": None}),
                                  "search": cfg.search.model_copy(update={"encoder": "none"})})


def evaluate_cold(data: Dataset, cfg: Config, fraction: float, log: Callable[[str], None] = print,
                  show_progress: bool = True) -> pd.DataFrame:
    """The protocol with a random `fraction` of the items held out of training entirely (see
    `evaluate.cold`): recall@10/20 and NDCG@10 with intervals on test targets that are cold items and on the
    others, for the model as served (content towers, index, ranker), id-only towers and popularity."""
    _, test = protocol_split(data, cfg.recommend.exclude_seen, log)
    split = cold_split(test, fraction, cfg.train.seed)
    log(f"cold items: {len(split.cold_items)} items held out of training ({fraction:.0%} of those with events); "
        f"{len(split.cold.targets)} test targets on them, {len(split.warm.targets)} on the others")
    rows = []
    with tempfile.TemporaryDirectory(prefix="twotower-cold-") as tmp:
        t0 = time.perf_counter()
        built = train_and_save(split.history, evaluation_config(cfg), Path(tmp) / "model", {}, show_progress,
                               ranker=True, log=log)
        trained = time.perf_counter() - t0
        orders = [(True, "twotower (served, ranked)")] if built.ranker else []
        for rerank, name in orders + [(False, "twotower (served, retrieval order)")]:
            ranks = {part: served_metrics(built.out, ev, rerank)[1] for part, ev in
                     (("cold", split.cold), ("warm", split.warm))}
            rows += cold_rows(name, ranks, trained)
            log(f"  {name:<36} cold Recall@20 {rows[-2]['Recall@20']:.4f}  warm {rows[-1]['Recall@20']:.4f}")
    for model in (TowerRecommender(id_only(cfg), name="id-only towers", show_progress=show_progress),
                  Popularity(cfg.train.seed)):
        t0 = time.perf_counter()
        model.fit(split.validation.history, split.validation)
        model.refit(split.history)
        scorer = model.scorer(split.history)
        ranks = {part: rank_targets(scorer, ev)[0] for part, ev in (("cold", split.cold), ("warm", split.warm))}
        rows += cold_rows(model.name, ranks, time.perf_counter() - t0)
        log(f"  {model.name:<36} cold Recall@20 {rows[-2]['Recall@20']:.4f}  warm {rows[-1]['Recall@20']:.4f}")
    return cold_table(rows)


@dataclass
class DemoOutcome:
    table: pd.DataFrame
    model: Path
    recommendations: Path
    rows: int
    report: list[Path]


def run_demo(folder: Path, out: Path, cfg: Config, log: Callable[[str], None] = print,
             show_progress: bool = True) -> DemoOutcome:
    """MovieLens-100K end to end: the protocol with baselines, then the two-tower model saved (with the full
    history, its index and its ranker) and top-100 recommendations for every user (retrieved, then ranked),
    and the table as CSV and plot."""
    from .data.movielens import load_ml100k
    from .recommend import recommend
    from .report import plot_metrics, save_metrics

    check_model_folder(out / "model")
    data = dataset_from_frames(*load_ml100k(folder), cfg, source=str(folder / "u.data"))
    evaluation = evaluate(data, cfg, baselines=True, log=log, show_progress=show_progress)
    table, report = evaluation.table, TrainReport(**evaluation.model.meta["training"])
    out.mkdir(parents=True, exist_ok=True)
    save_metrics(table, out / "evaluation.csv")
    plot_metrics(table, out / "evaluation.png", "MovieLens-100K", report.epochs)
    metrics = {c: float(table.iloc[0][c]) for c in METRIC_COLUMNS if c in table.columns}
    with model_build(out / "model") as build:     # the evaluated towers, with every event as their history
        save_model(build, evaluation.model.model, data, cfg, report, fingerprint(folder / "u.data"), metrics)
        build_model_index(build, cfg.index, show_progress=show_progress)
        second_stage(build, data, cfg, True, show_progress, log)
    recs = recommend(out / "model", "all", 100, out / "recs.csv", show_progress=show_progress)
    return DemoOutcome(table, out / "model", recs.out, recs.rows, [out / "evaluation.csv", out / "evaluation.png"])
