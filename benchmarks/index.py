"""Vector index benchmark: FAISS exact vs FAISS HNSW/IVF vs hnswlib vs pgvector on one machine, one thread; one
table, a CSV and a plot.

    .venv/bin/python benchmarks/index.py [--items 1000000] [--dim 64] [--model runs/shop] [--backends hnswlib,pgvector]
"""

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))      # the checkout: benchmarks.lib

import pandas as pd  # noqa: E402
import typer  # noqa: E402
from rich.console import Console  # noqa: E402

from twotower.cli import _run, say  # noqa: E402
from twotower.errors import InputError  # noqa: E402

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def benchmark_index(
        items: int = typer.Option(1_000_000, "--items", "-n", help="synthetic catalog size"),
        dim: int = typer.Option(64, "--dim", "-d", help="vector dimension"),
        queries: int = typer.Option(1000, "--queries", help="measured queries per vector set"),
        model: list[Path] = typer.Option([], "--model", "-m", help="also a trained model's vectors and queries"),
        backends: str = typer.Option("hnswlib,pgvector", help="peers beside FAISS: hnswlib, pgvector"),
        isotropic: bool = typer.Option(True, "--isotropic/--no-isotropic", help="add the i.i.d. worst case "
                                       "(FAISS and hnswlib only)"),
        out: Path = typer.Option(Path("benchmarks/results/index"), "--out", "-o", help="writes OUT.csv, OUT.png")):
    """FAISS exact vs FAISS HNSW/IVF vs hnswlib vs pgvector: build, size, recall@10/100, QPS, p50/p99 on one
    thread. The last line gives the default index's recall@100 and speedup over exact."""
    from benchmarks.lib import index_bench as bench
    from twotower.report import frame_table, plot_index_tradeoff, print_table, save_metrics

    def job():
        t0 = time.perf_counter()
        sets = [bench.from_model(m, queries) for m in model]
        sets.append(bench.synthetic(items, dim, "structured", queries))
        peers = {b.strip() for b in backends.split(",") if b.strip()}
        if peers - {"hnswlib", "pgvector"}:
            raise InputError("--backends", f"unknown peer(s) {sorted(peers - {'hnswlib', 'pgvector'})}",
                             "choose from hnswlib, pgvector (FAISS always runs)")
        if items < 100 or dim < 2 or queries < 1:
            raise InputError("twotower benchmark index", f"--items {items}, --dim {dim}, --queries {queries} is too "
                             "small to measure", "give at least 100 items, 2 dimensions and 1 query")
        df = bench.run(sets, peers, log=say)
        if isotropic:
            df = pd.concat([df, bench.run([bench.synthetic(items, dim, "isotropic", queries)],
                                          peers - {"pgvector"}, log=say)], ignore_index=True)
        df = df.rename(columns={"recall_at_10": "recall@10", "recall_at_100": "recall@100"})
        formats = {"build_s": ".1f", "size_mb": ".0f", "recall@10": ".4f", "recall@100": ".4f", "qps": ",.0f",
                   "p50_ms": ".3f", "p99_ms": ".3f", "speedup": ".1f"}
        print_table(frame_table(df, f"vector indexes, one thread, top-{bench.K} ({time.perf_counter() - t0:.0f}s)",
                                formats), Console())
        out.parent.mkdir(parents=True, exist_ok=True)
        save_metrics(df, out.with_suffix(".csv"))
        plot_index_tradeoff(df, out.with_suffix(".png"))
        default = df[df["index"].str.startswith(bench.DEFAULT) & df["settings"].str.contains("tuned")
                     & df["vectors"].str.startswith("synthetic structured")].iloc[0]
        Console(soft_wrap=True).print(f"default index on {default['vectors']}: {default['index']} "
                                      f"({default['settings']}): recall@100 "
                        f"{default['recall@100']:.4f} at {default['speedup']:.1f}x the exact-search query rate "
                        f"({default['qps']:,.0f} vs {default['qps'] / default['speedup']:,.0f} queries/s)")
    _run(job)


if __name__ == "__main__":
    app()
