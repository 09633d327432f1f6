"""The `twotower` command: parses, calls one library function per verb, prints. No logic lives here."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Optional

import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from .errors import InputError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Two-tower recommendation: train, evaluate, recommend. Run `twotower VERB --help`.")
console = Console(stderr=True, soft_wrap=True)


def say(message: str) -> None:
    """Print a progress line as it is (it may hold user text: ids, paths, column names)."""
    console.print(Text(message))


EventsOpt = typer.Option(..., "--events", "-e", help="events file (CSV/Parquet): user_id, item_id, timestamp[, action, ...]")
ItemsOpt = typer.Option(None, "--items", "-i", help="items file (CSV/Parquet): item_id + feature columns")
UsersOpt = typer.Option(None, "--users", "-u", help="users file (CSV/Parquet): user_id + feature columns")
ConfigOpt = typer.Option(None, "--config", "-c", help="TOML config (see README, 'Config')")
QuietOpt = typer.Option(False, "--quiet", "-q", help="no progress bars")


def _run(job):
    """Run a job; a bad input (or a file the system refuses) ends with one message and exit code 2.
    Messages are printed literally: user text such as `[data.actions]` or a path with brackets is no markup."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return job()
    except InputError as exc:
        _error(str(exc))
    except OSError as exc:          # disk full, permission denied, ...: the file and the system's reason
        where = f"{exc.filename}: " if exc.filename else ""
        _error(f"{where}{exc.strerror or exc}. Fix: check the path, its permissions and the free disk space")


def _error(message: str) -> None:
    console.print(Text.assemble(("error: ", "bold red"), message))
    raise typer.Exit(2)


@app.command()
def train(events: Path = EventsOpt, items: Optional[Path] = ItemsOpt, users: Optional[Path] = UsersOpt,
          out: Path = typer.Option(..., "--out", "-o", help="model folder to write"),
          config: Optional[Path] = ConfigOpt,
          ranker: bool = typer.Option(True, "--ranker/--no-ranker", help="also train the LambdaRank ranker "
                                      "(on a later slice, with its own towers) and load its feature store"),
          quiet: bool = QuietOpt):
    """Train the two towers, build their vector index, then train the ranker and materialize its online
    feature store (resumes the towers from their checkpoint after a kill)."""
    from .config import load_config
    from .pipeline import fingerprint, load_inputs, train_and_save

    def job():
        cfg = load_config(config)
        data = load_inputs(events, items, users, cfg)
        result = train_and_save(data, cfg, out, fingerprint(events, items, users), show_progress=not quiet,
                                ranker=ranker, log=say)
        r = result.report
        val = f"best validation NDCG@10 {r.best_score:.4f} at epoch {r.best_epoch}" if r.best_score > -1 else \
            f"{len(r.epochs)} epochs"
        say(f"trained on {result.n_events:,} events, {result.n_users:,} users, {result.n_items:,} items: "
            f"{val}, {r.seconds:.0f}s. Model in {result.out}")
        console.print(describe_index(result.index))
        if result.ranker:
            say(describe_ranker(result.ranker))
    _run(job)


def describe_ranker(b) -> str:
    """One line about a trained ranker and its online store."""
    rep = b.reranker.ranker.report
    return (f"ranker trained: LambdaRank over {rep['rows'] // max(rep['requests'], 1):,} candidates per request, "
            f"{rep['requests']:,} later requests with the target among them, {rep['best_iteration']} trees, "
            f"held-out NDCG@10 within candidates {rep['valid_ndcg@10']:.4f} (retrieval order "
            f"{rep.get('base_ndcg@10', float('nan')):.4f}); online store {b.store.backend} at "
            f"{b.store.where} ({b.store.events:,} events); {b.seconds:.0f}s")


@app.command()
def materialize(model: Path = typer.Option(..., "--model", "-m", help="model folder from `twotower train`"),
                store: Optional[str] = typer.Option(None, "--store", help="sqlite or redis; default: the model "
                                                    "config's rank.online_store"),
                redis_url: Optional[str] = typer.Option(None, "--redis-url", help="redis://... or unix://... "
                                                        "(with --store redis)"),
                quiet: bool = QuietOpt):
    """Load the model's online feature store (SQLite in the model folder, or Redis) from its offline
    store: a full rebuild, never a half-loaded store."""
    from pydantic import ValidationError

    from .features.materialize import materialize as run
    from .model.artifact import load_model

    def job():
        saved = load_model(model)
        changes = {k: v for k, v in (("online_store", store), ("redis_url", redis_url)) if v is not None}
        if changes.get("online_store") not in (None, "sqlite", "redis"):
            raise InputError("--store", f"unknown store {store!r}", "use sqlite or redis")
        try:
            cfg = type(saved.config.rank).model_validate({**saved.config.rank.model_dump(), **changes})
        except ValidationError as exc:
            raise InputError("--store", exc.errors()[0]["msg"], "pass --redis-url with --store redis") from exc
        m = run(model, cfg, saved.model_id, show_progress=not quiet)
        say(f"online store {m.backend} at {m.where}: {m.events:,} events loaded in {m.seconds:.1f}s")
    _run(job)


@app.command()
def recommend(model: Path = typer.Option(..., "--model", "-m", help="model folder from `twotower train`"),
              users: str = typer.Option("all", "--users", "-u", help="'all' or a file of user ids"),
              k: int = typer.Option(100, "--k", "-k", help="recommendations per user"),
              out: str = typer.Option(..., "--out", "-o", help="file to write: user_id,item_id,rank,score "
                                      "(.csv, .tsv or .parquet; - for CSV on stdout)"),
              rank: bool = typer.Option(True, "--rank/--no-rank", help="order the retrieved candidates with "
                                        "the model's ranker (when it has one)"),
              quiet: bool = QuietOpt):
    """Top-k unseen items per user: retrieve from the vector index, then rank; users the model does not
    know get the most popular items."""
    from .recommend import recommend as run

    def job():
        s = run(model, users, k, out, show_progress=not quiet, rerank=rank)
        if s.note:
            console.print(Text.assemble(("warning: ", "yellow"), s.note))
        how = "retrieved and ranked" if s.ranked else "retrieved"
        say(f"{s.rows:,} recommendations for {s.users:,} users ({s.personalised:,} personalised, {how}; "
            f"{s.fallback:,} popularity fallback) in {s.out}")
    _run(job)


def describe_index(b) -> str:
    """One line about an index build: structure, size, and its measured recall against exact search."""
    params = ", ".join(f"{k} {v}" for k, v in b.params.items() if v is not None)
    verb = "built" if b.rebuilt else "updated in place"
    line = f"index {verb}: {b.backend} {b.kind} over {b.items:,} items" + (f" ({params})" if params else "")
    if b.new_items:
        line += f", {b.new_items:,} of them new"
    if b.removed_items:
        line += f", {b.removed_items:,} removed"
    if b.recall is not None:
        r = b.recall
        line += (f"; recall@{r.k} {r.recall:.4f} and recall@10 {r.recall_at_10:.4f} against exact search on "
                 f"{r.queries:,} real user queries, {r.ms_per_query:.2f} ms/query")
        if r.recall < r.target:
            line += f" [yellow](below the target {r.target})[/yellow]"
    return line + f"; {b.seconds:.1f}s. Saved in {escape(str(b.folder))}"


@app.command()
def index(model: Path = typer.Option(..., "--model", "-m", help="model folder from `twotower train`"),
          backend: Optional[str] = typer.Option(None, "--backend", "-b", help="faiss (embedded) or pgvector; "
                                                "default: the model config's index.backend"),
          dsn: Optional[str] = typer.Option(None, "--dsn", help="postgresql://... with pgvector (pgvector "
                                            "backend); default: an embedded server in the model folder"),
          items: Optional[Path] = typer.Option(None, "--items", "-i", help="items table to add or refresh in the "
                                               "live index (new items are embedded from their features)"),
          remove: Optional[Path] = typer.Option(None, "--remove", help="file of item ids to take out of the index"),
          config: Optional[Path] = ConfigOpt, quiet: bool = QuietOpt):
    """Build the model's vector index (tuned to the target recall, recall vs exact reported), or with
    --items/--remove change the catalog in place: upserts and deletes, no rebuild."""
    from .config import load_config
    from .index.model_index import build_model_index, update_model_index

    def job():
        if items is not None or remove is not None:
            if backend or dsn or config:
                raise InputError("twotower index", "--items/--remove change the existing index in place",
                                 "run once without them to rebuild with another backend or config")
            console.print(describe_index(update_model_index(model, items, remove, show_progress=not quiet)))
            return
        cfg = load_config(config).index if config else None      # None: the model's own index config
        changes = {k: v for k, v in (("backend", backend), ("dsn", dsn)) if v is not None}
        if changes.get("backend") not in (None, "faiss", "pgvector"):
            raise InputError("--backend", f"unknown backend {backend!r}", "use faiss or pgvector")
        result = build_model_index(model, cfg, show_progress=not quiet, overrides=changes)
        console.print(describe_index(result))
    _run(job)


@app.command()
def evaluate(events: Path = EventsOpt, items: Optional[Path] = ItemsOpt, users: Optional[Path] = UsersOpt,
             config: Optional[Path] = ConfigOpt,
             baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="run the baselines too"),
             out: Optional[str] = typer.Option(None, "--out", "-o", help="also write the table (.csv, .tsv, "
                                               ".parquet; - for CSV on stdout)"),
             quiet: bool = QuietOpt):
    """Leave-one-out by time, full ranking, on what is served: the model trained as `train` trains it, each
    test request answered by the serving path (ranked and retrieval order), beside the tuned baselines."""
    from .config import load_config
    from .pipeline import evaluate as run
    from .pipeline import load_inputs
    from .outputs import table_output
    from .report import print_metrics

    def job():
        target = table_output(out, "--out", inputs=[events, items, users, config]) if out else None
        cfg = load_config(config)
        data = load_inputs(events, items, users, cfg)
        table = run(data, cfg, baselines, log=say, show_progress=not quiet).table
        print_metrics(table, f"{events.name}: test metrics (leave-one-out by time, full ranking)",
                      console if target is not None and target.path is None else Console())
        if target is not None:
            target.write(table, float_format="%.5f")
    _run(job)


@app.command()
def demo(data: Optional[Path] = typer.Option(None, "--data", help="folder with MovieLens-100K (u.data, u.item, u.user)"),
         out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="folder for the model, recs and report"),
         config: Optional[Path] = ConfigOpt, quiet: bool = QuietOpt):
    """The whole job on MovieLens-100K: load, split, train, evaluate against baselines, save, recommend."""
    from .config import load_config
    from .data.movielens import locate
    from .pipeline import run_demo
    from .report import print_metrics

    def job():
        t0 = time.perf_counter()
        cfg = load_config(config)
        folder = data or locate("ml-100k")
        say(f"MovieLens-100K from {folder}")
        result = run_demo(folder, out, cfg, log=say, show_progress=not quiet)
        print_metrics(result.table, "MovieLens-100K: test metrics (leave-one-out by time, full ranking, "
                      "seen items excluded)", Console())
        say(f"model: {result.model}\nrecommendations: {result.recommendations} ({result.rows:,} rows)\n"
            f"report: {', '.join(map(str, result.report))}\ndemo finished in {time.perf_counter() - t0:.0f}s")
    _run(job)


benchmark_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print a table (and save CSV + plot).")
app.add_typer(benchmark_app, name="benchmark")


@benchmark_app.command("index")
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
    from .index import benchmark as bench
    from .report import frame_table, plot_index_tradeoff, print_table, save_metrics

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


@benchmark_app.command("open-bandit")
def benchmark_open_bandit(
        data: Optional[Path] = typer.Option(None, "--data", help="folder with {random,bts}/{all,men,women} "
                                            "(default: ../shared/data/open-bandit-dataset-small or $TWOTOWER_DATA)"),
        train_policy: str = typer.Option("bts", "--train-policy", help="logs the ranker learns from"),
        eval_policy: str = typer.Option("random", "--eval-policy", help="logs its policy is evaluated on"),
        campaigns: str = typer.Option("all,men,women", "--campaigns"),
        clip: float = typer.Option(100.0, "--clip", help="cap on the inverse-propensity training weights"),
        out: Path = typer.Option(Path("benchmarks/results/open_bandit"), "--out", "-o", help="writes OUT.csv, OUT.png")):
    """Open Bandit: a click ranker trained with inverse-propensity weights on one policy's logged
    impressions, its off-policy click rate (IPS, SNIPS, 95% bootstrap) on another's, beside both logging
    policies' click rates."""
    from .data.open_bandit import load_open_bandit, locate_open_bandit
    from .rank.bandit import bandit_table
    from .report import frame_table, plot_policy_values, print_table, save_metrics

    def job():
        t0 = time.perf_counter()
        folder = data or locate_open_bandit()
        names = [c.strip() for c in campaigns.split(",") if c.strip()]
        train = [load_open_bandit(folder, train_policy, c) for c in names]
        evaluation = [load_open_bandit(folder, eval_policy, c) for c in names]
        df = bandit_table(train, evaluation, clip=clip)
        formats = {**{c: ".4f" for c in ("IPS", "IPS low", "IPS high", "SNIPS", "SNIPS low", "SNIPS high")},
                   "lift": ".2f", "matched rows": ","}
        print_table(frame_table(df, f"Open Bandit: click rate per impression, ranker trained on {train_policy} logs, "
                                f"estimated on {eval_policy} logs ({time.perf_counter() - t0:.0f}s)", formats), Console())
        out.parent.mkdir(parents=True, exist_ok=True)
        save_metrics(df, out.with_suffix(".csv"))
        plot_policy_values(df, out.with_suffix(".png"))
    _run(job)


def main() -> None:  # pragma: no cover
    app(prog_name="twotower")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
