"""Show results to a person: a rich table in the terminal, a CSV, and a plot."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from .atomic import atomic_path

METRIC_COLUMNS = ["HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20", "MRR@20", "Coverage@10"]


def metrics_table(df: pd.DataFrame, title: str) -> Table:
    """One row per model, the best value of each metric in bold."""
    table = Table(title=title)
    table.add_column("model")
    cols = [c for c in METRIC_COLUMNS if c in df.columns]
    for c in cols:
        table.add_column(c, justify="right")
    table.add_column("time", justify="right")
    best = {c: df[c].max() for c in cols}
    for _, row in df.iterrows():
        cells = [f"[bold]{row[c]:.4f}[/bold]" if row[c] == best[c] else f"{row[c]:.4f}" for c in cols]
        table.add_row(str(row["model"]), *cells, f"{row['seconds']:.0f}s")
    return table


def print_metrics(df: pd.DataFrame, title: str, console: Console | None = None) -> None:
    """Print the table; written to a file or pipe it keeps its full width instead of 80 columns."""
    console = console or Console()
    if not console.is_terminal:
        console = Console(file=console.file, width=max(console.width, 150))
    console.print(metrics_table(df, title))


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
