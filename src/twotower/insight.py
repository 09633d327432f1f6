"""What a model version shows a person, read from its folder: the facts (sizes, validation, the ranker's
report, the index's recall, the last held-out evaluation) and the plots of the page's model view and of
`twotower report` (training curves, the index's recall against effort, the ranker's feature importances, a
2-D map of the item vectors coloured by a category)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

EVALUATION_FILE = "evaluation.json"     # the last `twotower report --test` table, kept with the version
PLOTS = ("training", "index_recall", "importance", "item_map")
MAP_SAMPLE = 4000
MAP_COLOURS = 8


def model_facts(folder: str | Path) -> dict:
    """JSON-ready facts about the model folder (nothing here loads the towers)."""
    folder = Path(folder)
    meta = json.loads((folder / "model.json").read_text())
    index = _json(folder / "index" / "index.json") or {}
    ranker = _json(folder / "ranker" / "ranker.json") or {}
    importance = ranker_importance(folder)
    return {
        "model_id": meta.get("model_id"), "n_users": meta.get("n_users"), "n_items": meta.get("n_items"),
        "validation": meta.get("metrics", {}), "epochs": meta.get("training", {}).get("epochs", []),
        "stages_s": meta.get("stages_s", {}), "mlflow": meta.get("mlflow"),
        "index": {"index": index.get("index"), "recall": index.get("recall")},
        "ranker": ranker.get("report"),
        "importance": [] if importance is None else [
            {"feature": f, "gain_share": round(float(g), 4)} for f, g in importance.head(20).items()],
        "evaluation": stored_evaluation(folder),
        "search": (folder / "search" / "search.json").is_file(),
    }


def stored_evaluation(folder: Path) -> dict | None:
    """The last held-out evaluation `twotower report --test` recorded in the folder: {test, rows, ...}."""
    return _json(Path(folder) / EVALUATION_FILE)


def ranker_importance(folder: Path) -> pd.Series | None:
    """The ranker's share of total gain per feature, largest first (None without a ranker)."""
    from .rank.ranker import LambdaRanker

    if not (Path(folder) / "ranker" / "ranker.txt").is_file():
        return None
    return LambdaRanker.load(Path(folder) / "ranker").importance()


def recall_curve(folder: Path, queries: int = 200) -> pd.DataFrame:
    """`effort, recall, recall_at_10, ms_per_query` of the model's index over its effort ladder, against
    exact search on real next-step queries (one row for an exact index)."""
    from .catalog import catalog, open_model_index, sample_queries
    from .index.tuning import effort_ladder, exact_truth, measure
    from .model.artifact import load_model

    saved = load_model(folder)
    index = open_model_index(saved)
    try:
        ids, vectors, _ = catalog(saved)
        q = sample_queries(saved, queries)
        k = min(saved.config.index.recall_k, len(ids))
        truth = exact_truth(ids, vectors, q, k, index.spec.metric)
        stats = index.stats()
        rows = []
        for effort in effort_ladder(stats.kind, k, stats.params.get("nlist", 0)) or [None]:
            if effort is not None:
                index.search_effort = effort
            r = measure(index, q, truth)
            rows.append({"effort": effort if effort is not None else 0, "recall": r.recall,
                         "recall_at_10": r.recall_at_10, "ms_per_query": r.ms_per_query})
        return pd.DataFrame(rows)
    finally:
        index.close() if hasattr(index, "close") else None


def item_map(folder: Path, sample: int = MAP_SAMPLE, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str | None]:
    """([m, 2] the first two principal components of a sample of the trained item vectors, [m] each one's
    category (its first value of the item feature with the fewest values, or ''), that feature's name)."""
    from .model.artifact import load_model

    saved = load_model(folder)
    _, vectors = saved.item_vectors()
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(vectors), min(sample, len(vectors)), replace=False))
    x = vectors[pick] - vectors[pick].mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    xy = x @ vt[:2].T if len(vt) >= 2 else np.column_stack([x[:, 0], np.zeros(len(x))])
    specs = [s for s in saved.history.item_specs if s.kind in ("categorical", "multi") and len(s.vocab) > 1]
    if not specs:
        return xy, np.full(len(pick), "", dtype=object), None
    spec = min(specs, key=lambda s: len(s.vocab))
    codes = saved.history.item_features[spec.name][pick + 1]
    first = codes if codes.ndim == 1 else codes[:, 0]
    labels = np.array([spec.vocab[c - 1] if c > 0 else "" for c in first], dtype=object)
    return xy, labels, spec.name


def plot_svg(folder: str | Path, name: str) -> str:
    """One of PLOTS for the model folder, as an SVG document (a figure that says why when there is no data)."""
    fig = {"training": _training_figure, "index_recall": _recall_figure, "importance": _importance_figure,
           "item_map": _map_figure}[name](Path(folder))
    return svg(fig)


def svg(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return buf.getvalue()


def figure(width: float = 6.0, height: float = 3.6, columns: int = 1):
    """(figure, axes) drawn off screen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, columns, figsize=(width, height))


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def _training_figure(folder: Path):
    epochs = pd.DataFrame(json.loads((folder / "model.json").read_text()).get("training", {}).get("epochs", []))
    fig, ax = figure()
    if epochs.empty:
        _empty(ax, "no training curve recorded")
        return fig
    ax.plot(epochs["epoch"], epochs["loss"], color="tab:blue", label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss", color="tab:blue")
    metric = next((c for c in epochs.columns if c.startswith("val_")), None)
    if metric:
        right = ax.twinx()
        right.plot(epochs["epoch"], epochs[metric], color="tab:orange", marker=".", label=metric)
        right.set_ylabel(f"validation {metric[4:]}", color="tab:orange")
    ax.set_title("Towers' training: loss and validation by epoch")
    return fig


def _recall_figure(folder: Path):
    curve = recall_curve(folder)
    fig, ax = figure()
    ax.plot(curve["ms_per_query"], curve["recall"], marker="o")
    for _, row in curve.iterrows():
        ax.annotate(f"{int(row['effort'])}" if row["effort"] else "exact", (row["ms_per_query"], row["recall"]),
                    textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xlabel("ms per query (one at a time)")
    ax.set_ylabel("recall against exact search")
    ax.set_ylim(min(0.5, float(curve["recall"].min()) - 0.05), 1.01)
    ax.set_title("Index: recall against search effort")
    return fig


def _importance_figure(folder: Path):
    importance = ranker_importance(folder)
    fig, ax = figure(6.0, 4.2)
    if importance is None:
        _empty(ax, "this model has no ranker")
        return fig
    top = importance.head(15)[::-1]
    ax.barh(top.index, top.to_numpy())
    ax.set_xlabel("share of the trees' total gain")
    ax.set_title("Ranker: feature importances")
    return fig


def _map_figure(folder: Path):
    xy, labels, feature = item_map(folder)
    fig, ax = figure(6.0, 4.8)
    common = pd.Series(labels).value_counts().index[:MAP_COLOURS] if feature else []
    for value in common:
        at = labels == value
        ax.scatter(xy[at, 0], xy[at, 1], s=4, alpha=0.6, label=value or "(none)")
    rest = ~np.isin(labels, list(common))
    ax.scatter(xy[rest, 0], xy[rest, 1], s=4, alpha=0.4, color="lightgrey", label="other" if feature else "items")
    ax.legend(markerscale=3, fontsize=7, loc="best", title=feature)
    ax.set_title(f"Item vectors: first two principal components ({len(xy):,} items)")
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
