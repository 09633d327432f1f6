"""Show results to a person: a rich table in the terminal, a CSV, and a plot."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .atomic import atomic_path

PAIRED_COLUMN = "NDCG@10 vs best baseline"
METRIC_COLUMNS = ["HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20", "MRR@20", "Coverage@10"]


def metrics_table(df: pd.DataFrame, title: str) -> Table:
    """One row per model, the best value of each metric in bold."""
    table = Table(title=Text(title))
    table.add_column("model")
    cols = [c for c in METRIC_COLUMNS if c in df.columns]
    for c in cols:
        table.add_column(c, justify="right")
    table.add_column("time", justify="right")
    paired = PAIRED_COLUMN in df.columns
    if paired:
        table.add_column(PAIRED_COLUMN + " (95% paired bootstrap)")
    best = {c: df[c].max() for c in cols}
    for _, row in df.iterrows():
        cells = [f"[bold]{row[c]:.4f}[/bold]" if row[c] == best[c] else f"{row[c]:.4f}" for c in cols]
        extra = [Text(row[PAIRED_COLUMN] if isinstance(row[PAIRED_COLUMN], str) else "")] if paired else []
        table.add_row(Text(str(row["model"])), *cells, f"{row['seconds']:.0f}s", *extra)
    return table


def print_metrics(df: pd.DataFrame, title: str, console: Console | None = None) -> None:
    print_table(metrics_table(df, title), console)


def print_table(table: Table, console: Console | None = None) -> None:
    """Print a table; written to a file or pipe it keeps its full width instead of 80 columns."""
    console = console or Console()
    if not console.is_terminal:
        console = Console(file=console.file, width=max(console.width, 180))
    console.print(table)


def frame_table(df: pd.DataFrame, title: str, formats: dict[str, str]) -> Table:
    """Any frame as a table; `formats` maps a column to a format spec (e.g. '.4f'), others print as is."""
    table = Table(title=Text(title))
    for c in df.columns:
        table.add_column(c, justify="right" if c in formats else "left")
    for _, row in df.iterrows():
        table.add_row(*[format(row[c], formats[c]) if c in formats else str(row[c]) for c in df.columns])
    return table


def plot_index_tradeoff(df: pd.DataFrame, path: str | Path) -> None:
    """Recall@100 against queries per second (log scale), one panel per vector set, one colour per index."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(dict.fromkeys(df["vectors"]))
    colour = {name: f"C{i}" for i, name in enumerate(dict.fromkeys(df["index"]))}   # one colour per index
    fig, axes = plt.subplots(1, len(sets), figsize=(6 * len(sets), 4.5), squeeze=False)
    for ax, name in zip(axes[0], sets):
        part = df[df["vectors"] == name]
        for index in dict.fromkeys(part["index"]):
            rows = part[part["index"] == index].sort_values("qps")
            ax.plot(rows["qps"], rows["recall@100"], marker="o", label=index, color=colour[index])
        ax.axhline(0.95, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_xlabel("queries per second, one thread")
        ax.set_ylabel("recall@100 vs exact")
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def plot_policy_values(df: pd.DataFrame, path: str | Path) -> None:
    """SNIPS click rate with its 95% interval per policy, one panel per campaign; the evaluated log's own
    policy as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    campaigns = list(dict.fromkeys(df["campaign"]))
    fig, axes = plt.subplots(1, len(campaigns), figsize=(5 * len(campaigns), 5), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], campaigns):
        part = df[df["campaign"] == name].reset_index(drop=True)
        labels = [p if t == "-" else f"{p}, {t}" for p, t in zip(part["policy"], part["training"])]
        y = range(len(part))
        ax.errorbar(part["SNIPS"], y, xerr=[part["SNIPS"] - part["SNIPS low"], part["SNIPS high"] - part["SNIPS"]],
                    fmt="o", capsize=3)
        ax.axvline(part["SNIPS"].iloc[0], color="grey", lw=0.8, ls="--")
        ax.set_yticks(list(y), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("click rate (SNIPS, 95% bootstrap)")
        ax.set_title(name, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def save_metrics(df: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.5f")


def plot_metrics(df: pd.DataFrame, path: str | Path, title: str, curve: list[dict] | None = None) -> None:
    """Bar chart of NDCG@10 and HR@10 per model, and the two-tower validation curve when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if curve else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels + 2, 4.5), squeeze=False)
    ax = axes[0][0]
    x = range(len(df))
    ax.bar([i - 0.2 for i in x], df["NDCG@10"], width=0.4, label="NDCG@10")
    ax.bar([i + 0.2 for i in x], df["HR@10"], width=0.4, label="HR@10")
    ax.set_xticks(list(x), df["model"], rotation=30, ha="right")
    ax.set_title(title)
    ax.legend()
    if curve:
        ax = axes[0][1]
        ax.plot([r["epoch"] for r in curve], [r.get("val_ndcg@10", float("nan")) for r in curve], marker=".")
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation NDCG@10")
        ax.set_title("two-tower training")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
