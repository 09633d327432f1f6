"""`benchmarks/index.py` end to end on a small catalog: every row, a CSV, a plot and the verdict line."""

import pandas as pd
from typer.testing import CliRunner

from benchmarks.index import app
from benchmarks.lib.index_bench import synthetic
from tests.conftest import need_module, pgvector_problem


def test_synthetic_vectors_have_popularity_skew_and_the_isotropic_set_has_none():
    structured = synthetic(20_000, 64, "structured", n_queries=10)
    iso = synthetic(20_000, 64, "isotropic", n_queries=10)
    cv = [(lambda n: n.std() / n.mean())(pd.Series((v.items ** 2).sum(1) ** 0.5)) for v in (structured, iso)]
    assert cv[0] > 1.5 * cv[1]
    assert structured.items.shape == (20_000, 64) and len(structured.tune_queries) == 500


def test_benchmark_prints_every_row_and_saves_csv_and_plot(tmp_path, tmp_path_factory):
    need_module("hnswlib")
    pgvector = not pgvector_problem(tmp_path_factory)        # its rows only where the embedded server can run
    out = tmp_path / "index"
    result = CliRunner().invoke(app, ["--items", "3000", "--dim", "16", "--queries", "50", "--out", str(out),
                                      "--backends", "hnswlib,pgvector" if pgvector else "hnswlib"])
    assert result.exit_code == 0, result.output
    df = pd.read_csv(out.with_suffix(".csv"))
    assert out.with_suffix(".png").stat().st_size > 0
    structured = df[df["vectors"].str.startswith("synthetic structured")]
    assert set(structured["index"]) == {"FAISS exact (flat)", "FAISS default (ivf-sq8)", "FAISS HNSW", "hnswlib",
                                        *["pgvector HNSW"] * pgvector}
    exact = df[df["index"] == "FAISS exact (flat)"]
    assert (exact["recall@100"] == 1.0).all() and (exact["speedup"] == 1.0).all()
    assert df["vectors"].str.startswith("synthetic isotropic").any()
    assert "default index on synthetic structured" in result.output and "x the exact-search query rate" in result.output
