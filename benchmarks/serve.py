"""Service latency benchmark: `twotower serve` on loopback with a model over a large catalog (real trained
towers, plus synthetic items embedded by the item tower from features drawn from the real items' columns),
driven from a second process at a fixed arrival rate. Prints one table (throughput, p50/p95/p99 and failed
requests for /recommend and /items/{id}/similar, the same while events arrive, the same across two reloads)
and where the time of one ranked /recommend goes. Its first rows ask one request at a time (a low rate, no
queue): the latency floor of this machine, which the loaded phases' tails are read against.

    .venv/bin/python benchmarks/serve.py [--items 1000000] [--rate 100] [--seconds 30] [--work /tmp/serve-bench]

Without --model it trains MovieLens-100K with the default config (from $TWOTOWER_DATA) once into WORK/base.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))      # the checkout: benchmarks.lib
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TWOTOWER_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from rich.table import Table  # noqa: E402

from benchmarks.lib.report import console as report_console  # noqa: E402
from benchmarks.lib.service_harness import Service, drive  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
console = report_console()


def base_model(work: Path) -> tuple[Path, pd.DataFrame]:
    """(a model trained on MovieLens-100K with the default config, its items table)."""
    import twotower
    from twotower.data.movielens import load_ml100k, locate

    events, items, users = load_ml100k(locate("ml-100k"))
    out = work / "base"
    if not (out / "model.json").is_file():
        t0 = time.perf_counter()
        twotower.train(events, items, users, out=out, show_progress=True).close()
        console.print(f"trained {out} in {time.perf_counter() - t0:.0f}s")
    return out, items


def synthetic_items(items: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """`n` new items whose every feature column is drawn independently from the real items' values."""
    rng = np.random.default_rng(seed)
    table = {"item_id": np.array([f"synthetic-{i:07d}" for i in range(n)], dtype=object)}
    for column in items.columns.drop("item_id"):
        table[column] = items[column].to_numpy()[rng.integers(0, len(items), n)]
    return pd.DataFrame(table)


def big_model(base: Path, items: pd.DataFrame, n_items: int, work: Path, kind: str = "auto") -> Path:
    """A copy of `base` whose catalog holds `n_items` items, indexed as the config chooses for that size
    (`kind`: auto) or with that FAISS kind."""
    from twotower.catalog import INDEX_DIR, build_model_index, read_new_items, record_changes
    from twotower.model.artifact import load_model

    out = work / f"catalog-{n_items}-{kind}"
    if (out / INDEX_DIR / "index.json").is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(base, out)
    n_new = max(n_items - len(items), 0)
    table = work / "synthetic-items.parquet"
    synthetic_items(items, n_new).to_parquet(table)
    t0 = time.perf_counter()
    record_changes(out, read_new_items(load_model(out), table))
    build = build_model_index(out, overrides={"faiss_kind": kind} if kind != "auto" else None)
    recall = build.recall
    console.print(f"catalog of {build.items:,} items: {build.backend} {build.kind} {build.params}, built in "
                  f"{time.perf_counter() - t0:.0f}s" + (f", recall@{recall.k} {recall.recall:.3f}" if recall else ""))
    return out


def summarize(phase: str, results: dict, seconds: float, cpu_seconds: float | None = None) -> list[dict]:
    """One row per route of a phase. `cpu_seconds`: what the service's processes used over the phase, shown on
    its first row as milliseconds per request of the phase and as the share of one core it kept busy (the tail
    of a queue grows steeply as that share nears 100%)."""
    rows = []
    for name, samples in results.items():
        if name == "versions":
            continue
        lat = np.array([s[1] for s in samples]) * 1000
        status = np.array([s[2] for s in samples])
        ok = (status >= 200) & (status < 300)
        rows.append({"phase": phase, "route": name, "requests": len(samples), "failed": int((~ok).sum()),
                     "throughput_rps": round(ok.sum() / seconds, 1),
                     "p50_ms": round(float(np.percentile(lat, 50)), 1), "p95_ms": round(float(np.percentile(lat, 95)), 1),
                     "p99_ms": round(float(np.percentile(lat, 99)), 1), "max_ms": round(float(lat.max()), 1),
                     # how late the generator itself began its requests: what of the tail is the client's
                     "client_lag_p99_ms": round(float(np.percentile([s[3] for s in samples], 99)) * 1000, 1),
                     "versions": len(results.get("versions", {})) if name.startswith(("recommend", "similar")) else "",
                     "server_cpu_ms": "", "server_busy_%": ""})
    if cpu_seconds is not None and rows:
        sent = sum(len(samples) for name, samples in results.items() if name != "versions")
        rows[0]["server_cpu_ms"] = round(1000 * cpu_seconds / max(sent, 1), 2)
        rows[0]["server_busy_%"] = round(100 * cpu_seconds / seconds)
    return rows


AGAIN = "in-process total, the user asking again (p50)"


def stage_breakdown(model: Path, users: list[str], n: int = 200) -> dict[str, float]:
    """Mean milliseconds per stage of one ranked recommendation, in this process."""
    import faiss
    import torch

    import twotower
    from twotower.timing import Stopwatch

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    with twotower.load(model) as m:
        server = m._server
        codes = server.saved.history.users.encode(users[:n])
        watch, total = Stopwatch(), []
        for c in codes:
            t0 = time.perf_counter()
            server.top_k(np.array([c]), 10, at=np.array([time.time()]), watch=watch)
            total.append(time.perf_counter() - t0)
        again, again_total = Stopwatch(), []  # the same users asking again: their query states are kept
        for c in codes:
            t0 = time.perf_counter()
            server.top_k(np.array([c]), 10, at=np.array([time.time()]), watch=again)
            again_total.append(time.perf_counter() - t0)
    out = {k: v / len(codes) * 1000 for k, v in watch.seconds.items()}
    out["query tower, the user's state kept (asking again)"] = again.seconds["query tower"] / len(codes) * 1000
    out["in-process total (p50)"] = float(np.median(total) * 1000)
    out[AGAIN] = float(np.median(again_total) * 1000)
    return out


def client_cores(spec: str) -> set[int] | None:
    """The cores `--client-cpus` names (None: any core)."""
    if spec == "any":
        return None
    if spec == "last":
        cores = sorted(os.sched_getaffinity(0))
        return {cores[-1]} if len(cores) > 1 else None
    try:
        return {int(c) for c in spec.split(",")}
    except ValueError:
        raise SystemExit(f"--client-cpus {spec!r}: give 'last', 'any' or core numbers such as 1,2") from None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="a trained model folder (default: train MovieLens-100K)")
    ap.add_argument("--items-table", type=Path, help="the model's items table (with --model)")
    ap.add_argument("--items", type=int, default=1_000_000, help="catalog size to serve")
    ap.add_argument("--index", default="hnsw", choices=["auto", "flat", "hnsw", "ivf", "ivf-sq8"],
                    help="the FAISS index of the grown catalog (auto: the config's rule for its size)")
    ap.add_argument("--rate", type=float, default=100.0, help="requests per second per read route")
    ap.add_argument("--event-rate", type=float, default=50.0)
    ap.add_argument("--alone-rate", type=float, default=10.0,
                    help="requests per second of the first phases, where requests seldom meet (0: skip them)")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each phase")
    ap.add_argument("--work", type=Path, default=Path("/tmp/twotower-serve-bench"))
    ap.add_argument("--workers", type=int, default=1, help="service processes (twotower serve --workers)")
    ap.add_argument("--config", type=Path, help="the service's config file (twotower serve --config), e.g. a "
                                                 "[serve] section with busy_poll_ms = 0")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--client-cpus", default="last",
                    help="cores the load generator runs on: 'last' (the machine's last core, when it has two or "
                         "more: a real client runs on another machine, and here it would otherwise take turns with "
                         "the service on its core), 'any', or a list such as 1,2")
    args = ap.parse_args()
    client_cpus = client_cores(args.client_cpus)
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TWOTOWER_HOME", str(args.work / "home"))     # its MLflow runs stay in WORK
    if args.model:
        base, items = args.model, pd.read_csv(args.items_table, dtype={"item_id": str})
    else:
        base, items = base_model(args.work)
    big = big_model(base, items, args.items, args.work, args.index)
    other = big.with_name(big.name + "-b")                 # a second version to swap between
    if not other.is_dir():
        shutil.copytree(big, other, ignore=shutil.ignore_patterns("ingested.sqlite*"))
    import twotower
    from twotower.features.materialize import materialize
    from twotower.model.artifact import load_model

    for folder in (big, other):      # from the stores training left: a run's events would pile up run after run
        saved = load_model(folder)
        materialize(folder, saved.config.rank, saved.model_id, show_progress=False)
    with twotower.load(big, rank=False) as m:
        users = m.user_ids()
        item_ids = [*items["item_id"].astype(str)]
    rng = np.random.default_rng(1)
    synthetic = [f"synthetic-{i:07d}" for i in rng.integers(0, max(args.items - len(items), 1), 500)] \
        if args.items > len(items) else []
    similar_paths = [f"/items/{i}/similar?k=10" for i in [*rng.choice(item_ids, 500), *synthetic]]
    recommend_bodies = [{"user_id": str(u), "k": 10} for u in rng.choice(users, 2000)]
    event_bodies = [{"user_id": str(u), "item_id": str(i), "action": "click", "event_id": f"bench-{j}"}
                    for j, (u, i) in enumerate(zip(rng.choice(users, 5000), rng.choice(item_ids, 5000)))]

    token = secrets.token_hex(16)
    state = args.work / "state"
    shutil.rmtree(state, ignore_errors=True)
    service = Service(big, state, token, config=args.config, workers=args.workers).start()
    rows = []
    try:
        console.print(f"service ready in {service.wait_ready(900):.1f}s on {service.base}")
        recommend = {"name": "recommend", "rate": args.rate, "method": "POST", "path": "/recommend",
                     "bodies": recommend_bodies}
        similar = {"name": "similar", "rate": args.rate, "method": "GET", "paths": similar_paths}
        events = {"name": "events", "rate": args.event_rate, "method": "POST", "path": "/events",
                  "bodies": event_bodies}
        plan = {"base": service.base, "seconds": args.seconds}

        def phase_rows(phase: str, streams: list[dict], seconds: float, during=None) -> list[dict]:
            """Drive one phase and summarize it with the CPU the service used meanwhile."""
            cpu0 = service.cpu_seconds()
            results = drive({**plan, "seconds": seconds, "streams": streams}, args.work, during, client_cpus)
            return summarize(phase, results, seconds, service.cpu_seconds() - cpu0)

        drive({**plan, "seconds": 5, "streams": [recommend, similar]}, args.work, cpus=client_cpus)  # warm-up
        alone = [(f"alone at {args.alone_rate:g}/s", [{**stream, "rate": args.alone_rate}])
                 for stream in (recommend, similar)] if args.alone_rate > 0 else []
        for phase, streams in [*alone, ("steady", [recommend]), ("steady", [similar]),
                               (f"events at {args.event_rate:g}/s", [recommend, events])]:
            console.print(f"phase: {phase} ({', '.join(s['name'] for s in streams)})")
            rows += phase_rows(phase, streams, args.seconds)
        reloads, span = [], 2 * args.seconds         # long enough for both (a paced load takes seconds)

        def swap_twice(t0: float) -> None:
            for when, target in ((span / 3, other), (2 * span / 3, big)):
                time.sleep(max(0.0, t0 + 0.2 + when - time.perf_counter()))
                r0 = time.perf_counter()
                answer = service.reload(target)
                stages = answer.json().get("stages", {}) if answer.status_code == 200 else {}
                reloads.append((answer.status_code, time.perf_counter() - r0, time.perf_counter() - t0 - 0.2,
                                stages))

        console.print("phase: two reloads")
        rows += phase_rows("across two reloads", [recommend], span, swap_twice)
        for status, took, _, stages in reloads:
            console.print(f"reload: status {status}, {took:.1f} s (" +
                          ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in stages.items()) + ")")
        if any(end > span for _, _, end, _ in reloads):
            console.print("[red]a reload ended after the phase: its tail is not all in the table[/red]")
    finally:
        service.stop()

    table = pd.DataFrame(rows)
    options = f"--workers {args.workers}" + (f" --config {args.config}" if args.config else "")
    show = Table(title=f"twotower serve {options}, {args.items:,}-item catalog ({args.index} index), "
                       f"{args.rate:g} req/s per read route, {args.seconds:g} s per phase, {os.cpu_count()} cores, "
                       f"load generator on {'any core' if not client_cpus else 'core ' + ','.join(map(str, sorted(client_cpus)))}")
    for c in table.columns:
        show.add_column(c)
    for r in table.itertuples(index=False):
        show.add_row(*[str(v) for v in r])
    console.print(show)
    stages = stage_breakdown(big, users)
    steady = table[(table["phase"] == "steady") & (table["route"] == "recommend")]["p50_ms"].iloc[0]
    # the served requests repeat (2,000 bodies, sent over and over): compared with users asking again in-process
    stages["HTTP, JSON and queueing (served steady p50 - in-process p50 asking again)"] = steady - stages[AGAIN]
    breakdown = Table(title="where one ranked /recommend spends its time (ms, mean over 200 users, each asking "
                            "for the first time)")
    breakdown.add_column("stage")
    breakdown.add_column("ms")
    for k, v in stages.items():
        breakdown.add_row(k, f"{v:.2f}")
    console.print(breakdown)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "serve" if args.workers == 1 else f"serve-workers{args.workers}"
    table.to_csv(args.out / f"{name}.csv", index=False)
    pd.Series(stages, name="ms").to_csv(args.out / f"{name}-stages.csv", index_label="stage")
    console.print(f"tables in {args.out / name}.csv and {args.out / name}-stages.csv")


if __name__ == "__main__":
    main()
