"""`twotower report`: one self-contained HTML file about a model version (plots embedded as SVG): the held-out
evaluation against the baselines on what is served, metric@K curves, training curves, score distributions,
popularity bias against the log's own, coverage, the index's recall against effort, the ranker's feature
importances and a map of the item vectors. With a second version, the two side by side with per-user
paired differences and intervals, so a person can decide a promotion."""

from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .atomic import atomic_path
from .errors import InputError
from .evaluate.metrics import ndcg_at, paired_interval
from .insight import EVALUATION_FILE, figure, model_facts, plot_svg, svg

CURVE_KS = np.arange(1, 21)          # served lists hold 20 items: metric@K up to there
SAMPLE_USERS = 1000                  # users whose top 10 show score distributions, popularity bias and coverage
EASE_MAX_ITEMS = 12_000              # EASE inverts an items x items matrix


@dataclass
class HeldOut:
    """A version's held-out evaluation: the table, each model's [n] target ranks (0-based, inf: missed), the
    test file and how many of its users could be scored."""

    table: pd.DataFrame
    ranks: dict[str, np.ndarray]
    users: np.ndarray          # [n] the targets' user ids (strings, as in the log)
    test: str
    targets: int
    dropped: int          # users or items the model never saw
    repeats: int          # targets the user already had: not counted when seen items are excluded

    def record(self) -> dict:
        return {"test": self.test, "targets": self.targets, "dropped": self.dropped, "repeats": self.repeats,
                "rows": json.loads(self.table.round(5).to_json(orient="records"))}


@dataclass
class Report:
    title: str
    sections: list[tuple[str, str]] = field(default_factory=list)     # (heading, HTML body)

    def add(self, heading: str, body: str) -> None:
        self.sections.append((heading, body))

    def html(self) -> str:
        parts = "".join(f"<section><h2>{html.escape(h)}</h2>{b}</section>" for h, b in self.sections)
        return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(self.title)}"
                f"</title><style>{CSS}</style></head><body><h1>{html.escape(self.title)}</h1>{parts}"
                f"<footer>Written by twotower report at {time.strftime('%Y-%m-%d %H:%M:%S %Z')}.</footer>"
                "</body></html>")


def held_out_evaluation(model_dir: Path, test_file: Path, baselines: bool = True,
                        log: Callable[[str], None] = print) -> HeldOut:
    """Each test user's first positive event after the model's training log, answered by the served path
    at its own time (ranked and in retrieval order), beside baselines fitted on the model's training log
    (tuned on each user's last training event). Users or items the model never saw are left out (counted)."""
    from .data.split import Targets, holdout_last
    from .evaluate.baselines import EASE, IALS, Popularity
    from .evaluate.protocol import EvalSet, protocol_rows
    from .evaluate.served import served_metrics
    from .model.artifact import load_model
    from .data.schema import read_table

    saved = load_model(model_dir)
    hist = saved.history
    first = first_test_events(read_table(test_file), saved.config.data, test_file)
    users = hist.users.encode(first["user_id"].to_numpy())
    items = hist.items.encode(first["item_id"].to_numpy())
    known = (users > 0) & (items > 0)
    if not known.any():
        raise InputError(str(test_file), "no test event is by a user and on an item the model knows",
                         "give the events that follow the model's training log (e.g. holdout.py split's test file)")
    times = first["timestamp"].to_numpy(np.float64)[known] if "timestamp" in first.columns else None
    targets = Targets(users[known], items[known], {}, times, first["weight"].to_numpy(np.float64)[known])
    test = EvalSet.make(hist, targets, saved.config.recommend.exclude_seen)
    repeats = len(targets.users) - len(test.targets)
    log(f"held out: {len(test.targets)} users' next events from {test_file} "
        f"({int((~known).sum())} left out: user or item unknown to the model; {repeats} repeat an item the user "
        "already had, not counted as seen items are excluded)")
    rows, ranks = [], {}
    for rerank, name in ((True, "twotower (served, ranked)"), (False, "twotower (served, retrieval order)")):
        if not rerank or saved.meta.get("ranker", {}).get("trained"):
            t0 = time.perf_counter()
            metrics, ranks[name] = served_metrics(model_dir, test, rerank=rerank)
            rows.append({"model": name, **metrics, "seconds": time.perf_counter() - t0, "settings": ""})
            log(f"  {name:<36} NDCG@10 {metrics['NDCG@10']:.4f}")
    if baselines:
        models = [Popularity(), IALS()] + ([EASE()] if hist.n_items <= EASE_MAX_ITEMS else [])
        before, val_targets = holdout_last(hist, min_history=1)
        base_rows, base_ranks = protocol_rows(hist, models, log, (EvalSet.make(before, val_targets), test))
        rows += base_rows
        ranks.update(base_ranks)
    table = pd.DataFrame(rows)
    return HeldOut(table, ranks, hist.users.decode(test.targets.users).astype(str), str(test_file),
                   len(test.targets), int((~known).sum()), repeats)


def first_test_events(table: pd.DataFrame, data_cfg, path: Path) -> pd.DataFrame:
    """Each user's first positive event in a test table (`user_id, item_id` and optionally `timestamp`,
    `action`): with times, each is a request at its own time; without, at an unknown time like a batch."""
    from .data.schema import validate_events

    if "timestamp" in table.columns:
        events = validate_events(table, data_cfg, path)
        events = events[events["weight"] > 0].sort_values(["timestamp", "order"], kind="stable")
    else:
        missing = [c for c in ("user_id", "item_id") if c not in table.columns]
        if missing:
            raise InputError(str(path), f"has no column {', '.join(missing)}", "give user_id,item_id[,timestamp]")
        events = table.assign(user_id=table["user_id"].astype(str), item_id=table["item_id"].astype(str),
                              weight=1.0)
    return events.drop_duplicates("user_id", keep="first")


def record_evaluation(model_dir: Path, held: HeldOut) -> None:
    """Keep the table with the version (the page's model view shows it), replaced atomically."""
    with atomic_path(Path(model_dir) / EVALUATION_FILE) as tmp:
        tmp.write_text(json.dumps(held.record(), indent=2))


def write_report(model_dir: Path, out: Path, test: Path | None = None, compare: Path | None = None,
                 baselines: bool = True, log: Callable[[str], None] = print) -> Path:
    """Write the report of `model_dir` (or of it against `compare`, on the same `test` events) to `out`."""
    model_dir = Path(model_dir)
    if compare is not None and test is None:
        raise InputError("--compare", "comparing two versions needs held-out events to compare them on",
                         "add --test EVENTS (the events after both versions' training log)")
    facts = model_facts(model_dir)
    report = Report(f"twotower report: {model_dir.name} ({facts['model_id']})" if compare is None else
                    f"twotower: {model_dir.name} against {Path(compare).name}")
    report.add("Version", _facts_table(model_dir, facts, compare))
    held = None
    if test is not None:
        held = held_out_evaluation(model_dir, test, baselines, log)
        record_evaluation(model_dir, held)
        report.add("Evaluation against the baselines (held out, full ranking, seen items excluded)",
                   f"<p>{held.targets} users' next event from <code>{html.escape(held.test)}</code>; "
                   f"{held.dropped} left out (user or item unknown to the model), {held.repeats} not counted (a "
                   f"repeat of an item the user had, and seen items are excluded). The twotower rows are answered "
                   f"by the served path (index, ranker, features as of each event's time).</p>"
                   + _table(held.table.drop(columns=["settings"], errors="ignore")))
        report.add("Metric@K", _img(_metric_curves(held.ranks)))
    if compare is not None:
        other = held_out_evaluation(Path(compare), test, baselines=False, log=log)
        common, a, b = paired_ranks(held, other)
        rows = []
        for metric, fn in (("NDCG@10", lambda r: ndcg_at(r, 10)),
                           ("HR@10", lambda r: (r < 10).astype(float)),
                           ("MRR@20", lambda r: np.where(r < 20, 1 / (r + 1), 0.0))):
            diff, lo, hi = paired_interval(fn(a), fn(b))
            rows.append({"metric": metric, model_dir.name: fn(a).mean(), str(Path(compare).name): fn(b).mean(),
                         "difference": diff, "95% interval low": lo, "95% interval high": hi,
                         "users better": int((fn(a) > fn(b)).sum()), "users worse": int((fn(a) < fn(b)).sum())})
        verdict = "clearly better" if rows[0]["95% interval low"] > 0 else \
            "clearly worse" if rows[0]["95% interval high"] < 0 else "not clearly different"
        report.add(f"{model_dir.name} against {Path(compare).name}: per-user paired differences",
                   f"<p>{len(common)} users scored by both; 95% paired bootstrap intervals. On NDCG@10 "
                   f"{html.escape(model_dir.name)} is <b>{verdict}</b>.</p>" + _table(pd.DataFrame(rows))
                   + _img(_difference_histogram(a, b, model_dir.name, Path(compare).name)))
        report.add(f"{Path(compare).name}: version", _facts_table(Path(compare), model_facts(Path(compare)), None))
    lists = served_lists(model_dir)
    report.add("Training", _img(plot_svg(model_dir, "training")))
    report.add("Score distributions of the served top 10", _img(_score_histograms(lists)))
    report.add("Popularity bias and coverage", _popularity_section(model_dir, lists))
    report.add("Index: recall against search effort", _img(plot_svg(model_dir, "index_recall")))
    report.add("Ranker: feature importances", _img(plot_svg(model_dir, "importance")))
    report.add("Item vectors", _img(plot_svg(model_dir, "item_map")))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text(report.html(), encoding="utf-8")
    return out


def served_lists(model_dir: Path, n: int = SAMPLE_USERS, seed: int = 0) -> pd.DataFrame:
    """`user_id, item_id, rank, score` of the served top 10 of up to `n` users the model knows (a sample)."""
    from .api import Model

    with Model(model_dir) as model:
        users = np.array(model.user_ids(), dtype=object)
        users = np.random.default_rng(seed).choice(users, min(n, len(users)), replace=False)
        return model.recommend(users, k=10)


def paired_ranks(a: HeldOut, b: HeldOut) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(the user ids both versions were scored on, each one's served rank under a, under b): paired by user
    id, since two versions code their users differently."""
    common, ia, ib = np.intersect1d(a.users, b.users, return_indices=True)
    return common, _served_ranks(a)[ia], _served_ranks(b)[ib]


def _served_ranks(held: HeldOut) -> np.ndarray:
    """The ranks of what the version serves: ranked when it has a ranker, else retrieval order."""
    return held.ranks.get("twotower (served, ranked)", held.ranks.get("twotower (served, retrieval order)"))


# --- sections ----------------------------------------------------------------------------------------------
def _facts_table(folder: Path, facts: dict, compare: Path | None) -> str:
    rows = [("folder", str(folder)), ("weights (model id)", facts["model_id"]), ("users", facts["n_users"]),
            ("items", facts["n_items"]), ("index", facts["index"]["index"]),
            ("index recall", json.dumps(facts["index"]["recall"] or {})),
            ("towers' validation", json.dumps(facts["validation"])),
            ("ranker", json.dumps(facts["ranker"]) if facts["ranker"] else "none"),
            ("search index", "yes" if facts["search"] else "no"),
            ("MLflow", json.dumps(facts["mlflow"]) if facts["mlflow"] else "not tracked")]
    return _table(pd.DataFrame(rows, columns=["fact", "value"]))


def _metric_curves(ranks: dict[str, np.ndarray]) -> str:
    fig, (left, right) = figure(10, 3.6, columns=2)
    for name, r in ranks.items():
        left.plot(CURVE_KS, [(r < k).mean() for k in CURVE_KS], label=name)
        right.plot(CURVE_KS, [ndcg_at(r, k).mean() for k in CURVE_KS], label=name)
    left.set(xlabel="K", ylabel="HR@K", title="Hit rate at K")
    right.set(xlabel="K", ylabel="NDCG@K", title="NDCG at K")
    left.legend(fontsize=7)
    return svg(fig)


def _difference_histogram(a: np.ndarray, b: np.ndarray, a_name: str, b_name: str) -> str:
    diff = ndcg_at(a, 10) - ndcg_at(b, 10)
    fig, ax = figure()
    changed = diff[diff != 0]
    ax.hist(changed, bins=30)
    ax.axvline(0, color="black", lw=0.8)
    ax.set(xlabel=f"NDCG@10 of {a_name} minus {b_name}", ylabel="users",
           title=f"Users whose NDCG@10 differs ({len(changed)} of {len(diff)})")
    return svg(fig)


def _score_histograms(lists: pd.DataFrame) -> str:
    fig, ax = figure()
    for rank, label in ((1, "rank 1"), (10, "rank 10")):
        ax.hist(lists.loc[lists["rank"] == rank, "score"], bins=40, alpha=0.6, label=label)
    ax.hist(lists["score"], bins=40, histtype="step", color="black", label="all of the top 10")
    ax.set(xlabel="served score", ylabel="recommendations", title=f"Served scores ({lists['user_id'].nunique()} users)")
    ax.legend(fontsize=8)
    return svg(fig)


def _popularity_section(model_dir: Path, lists: pd.DataFrame) -> str:
    """Share of served top-10 slots per popularity decile of the log, beside the log's own share of events."""
    from .model.artifact import load_model

    hist = load_model(model_dir).history
    counts = np.bincount(hist.events["item"].to_numpy(), minlength=hist.n_items + 1)[1:]
    order = np.argsort(-counts, kind="stable")
    decile = np.empty(len(counts), dtype=int)
    decile[order] = np.arange(len(counts)) * 10 // max(len(counts), 1)
    log_share = np.bincount(decile, weights=counts, minlength=10) / max(counts.sum(), 1)
    codes = hist.items.encode(lists["item_id"].to_numpy(dtype=object))
    trained = codes[codes > 0] - 1
    rec_share = np.bincount(decile[trained], minlength=10) / max(len(codes), 1)
    fig, ax = figure()
    x = np.arange(10)
    ax.bar(x - 0.2, log_share, 0.4, label="the log's events")
    ax.bar(x + 0.2, rec_share, 0.4, label="served top-10 slots")
    ax.set_xticks(x, [f"{10 * i}-{10 * i + 10}%" for i in x], rotation=30, fontsize=7)
    ax.set(xlabel="items by popularity (most popular tenth first)", ylabel="share", title="Popularity bias")
    ax.legend(fontsize=8)
    coverage = lists["item_id"].nunique() / max(hist.n_items, 1)
    head = float(rec_share[:2].sum())
    return (f"<p>The most popular 20% of items hold {log_share[:2].sum():.1%} of the log's events and "
            f"{head:.1%} of the served top-10 slots ({len(trained)} of {len(codes)} slots are trained items). "
            f"Coverage: {lists['item_id'].nunique():,} distinct items in {lists['user_id'].nunique():,} users' "
            f"top 10, {coverage:.1%} of the {hist.n_items:,} trained items.</p>" + _img(svg(fig)))


def _table(df: pd.DataFrame) -> str:
    def cell(v):
        return f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in df.itertuples(index=False))
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(svg_text: str) -> str:
    start = svg_text.find("<svg")
    return f"<div class='plot'>{svg_text[start:]}</div>"


CSS = """body{font-family:system-ui,sans-serif;margin:1.5rem auto;max-width:1100px;color:#1d2433}
section{margin:1.5rem 0}table{border-collapse:collapse;font-size:.85rem}td,th{border-bottom:1px solid #e5e8ee;
padding:.25rem .6rem;text-align:right}td:first-child,th:first-child{text-align:left}
.plot svg{max-width:100%;height:auto}
footer{color:#8a93a6;font-size:.8rem}"""
