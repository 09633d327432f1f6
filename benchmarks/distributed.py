"""Beyond one machine, measured on this one: tower training throughput on MovieLens-1M for one and two
processes in the same run (torchrun, gloo over loopback), and the peak memory (RSS) of `twotower recommend`
over a 100k- and a 1M-item catalog, for 600, 2,000 and all 6,040 users (it must not grow with the users).

    .venv/bin/python benchmarks/distributed.py [--work /tmp/distributed-bench] [--only training|memory|ranker|redis]
        [--users 1500] [--rounds 2]

Training: one epoch of the default towers with sampled softmax (in-batch + 512 uniform negatives) on the
first --users users of MovieLens-1M, as 1 process x 1 thread, 1 process x all cores, and 2 processes x
(cores / 2) threads, each --rounds times interleaved; examples/s counts every rank's examples; the 1-minute
load average at the end of each run is printed beside it (it includes the run's own processes). Memory: a model trained on MovieLens-1M (small settings: the figure is the catalog's and
the users', not the model's quality), its catalog grown with synthetic items (benchmarks/serve.py), then
`recommend --k 100` with its ranker, one process each, its peak RSS read from the kernel (ru_maxrss). Ranker:
the peak RSS of `train` as the ranker learns from 2,500, 10,000 and all slice requests (rank.max_requests).
Redis:
that model's online store loaded into a private redis-server, its memory per event.
Writes benchmarks/results/distributed-training.csv, distributed-memory.csv, distributed-ranker.csv and
distributed-redis.csv.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))      # the checkout: benchmarks.lib
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TWOTOWER_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
EPOCH = ROOT / "benchmarks" / "lib" / "tower_epoch.py"
BASE_SETTINGS = {"model": {"max_history": 20, "layers": 1}, "train": {"epochs": 1},
                 "rank": {"max_requests": 5000}, "search": {"encoder": "none"}, "registry": {"track": False}}
console = Console(width=150)


def cores() -> int:
    return os.cpu_count() or 1


def tower_epoch(work: Path, processes: int, threads: int, users: int) -> dict:
    """One timed epoch (benchmarks/lib/tower_epoch.py) as `processes` processes of `threads` threads each."""
    from twotower.distributed import free_port, loopback_env, torchrun_command

    out = work / f"epoch-{processes}x{threads}.json"
    program = [str(EPOCH), str(out), "--users", str(users)]
    cmd = [sys.executable, *program] if processes == 1 else torchrun_command(program, processes, free_port())
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env={**loopback_env(processes), "OMP_NUM_THREADS": str(threads)}, capture_output=True,
                          text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    row = json.loads(out.read_text())
    row["wall_s"] = round(time.perf_counter() - t0, 1)
    return row


def training(work: Path, users: int, rounds: int) -> pd.DataFrame:
    """Each setting `rounds` times, in the order A B C, C B A, ... (drift in the machine's other load falls
    on every setting alike); the median of each, with the load average seen at the end of its runs."""
    runs = list(dict.fromkeys([(1, 1), (1, cores()), (2, max(1, cores() // 2))]))
    order = [run for r in range(rounds) for run in (runs if r % 2 == 0 else runs[::-1])]
    seen: dict[tuple, list[dict]] = {run: [] for run in runs}
    for processes, threads in order:
        console.print(f"one epoch of MovieLens-1M ({users or 'all'} users): {processes} process(es) x {threads} "
                      "thread(s) ...")
        seen[(processes, threads)].append(r := tower_epoch(work, processes, threads, users))
        console.print(r)
    rows = []
    for (processes, threads), rs in seen.items():
        rate = float(np.median([r["examples_per_s"] for r in rs]))
        rows.append({"processes": processes, "threads_each": rs[0]["threads"], "examples": rs[0]["examples"],
                     "runs": len(rs), "examples_per_s": round(rate), "per_process": round(rate / processes),
                     "each_run": " ".join(f"{r['examples_per_s']:.0f}" for r in rs),
                     "load_1min": " ".join(f"{r['load_1min']:.1f}" for r in rs)})
    table = pd.DataFrame(rows)
    table["speedup_vs_1x1"] = (table["examples_per_s"] / table["examples_per_s"].iloc[0]).round(2)
    return table


def base_model(work: Path) -> tuple[Path, pd.DataFrame]:
    """(a model trained on MovieLens-1M with small settings, with its ranker; the items table)."""
    import twotower
    from twotower.data.movielens import load_ml1m, locate

    events, items, users = load_ml1m(locate("ml-1m", download=False))
    out = work / "base"
    if not (out / "model.json").is_file():
        t0 = time.perf_counter()
        twotower.train(events, items, users, config=BASE_SETTINGS, out=out, show_progress=True).close()
        console.print(f"trained {out} in {time.perf_counter() - t0:.0f}s")
    return out, items


def peak_rss(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB of the process running `cmd`, its seconds), from a wrapper that waits for it."""
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "code = subprocess.run(sys.argv[1:]).returncode; "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t, code)")
    done = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True,
                          env={**os.environ, "TWOTOWER_QUIET": "1"})
    kib, seconds, code = done.stdout.split()[-3:]
    if int(code):
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return int(kib) / 1024, float(seconds)


def memory(work: Path) -> pd.DataFrame:
    from benchmarks.serve import big_model

    base, items = base_model(work)
    users = pd.read_parquet(base / "users.parquet")["user_id"].astype(str)
    asked = []
    for n in (600, 2000):
        path = work / f"users-{n}.txt"
        path.write_text("user_id\n" + "\n".join(users[:n]) + "\n")
        asked.append((f"first {n:,} users", str(path), n))
    asked.append(("--users all", "all", len(users)))
    twotower = str(Path(sys.executable).with_name("twotower"))
    rows = []
    for n_items in (100_000, 1_000_000):
        model = big_model(base, items, n_items, work)
        index = json.loads((model / "index" / "index.json").read_text())
        index_mib = sum(f.stat().st_size for f in (model / "index").rglob("*") if f.is_file()) / 2**20
        for who, spec, count in asked:
            out = work / "recs.parquet"
            mib, seconds = peak_rss([twotower, "recommend", "-m", str(model), "--users", spec, "--k", "100",
                                     "--out", str(out), "-q"])
            rows.append({"catalog_items": n_items, "index": index.get("layout", {}).get("kind", index["backend"]),
                         "index_mib": round(index_mib, 1), "users": count, "asked": who, "k": 100,
                         "rows_written": len(pd.read_parquet(out, columns=["rank"])),
                         "peak_rss_mib": round(mib), "seconds": round(seconds, 1),
                         "users_per_s": round(count / seconds, 1)})
            console.print(rows[-1])
    return pd.DataFrame(rows)


RANKER_RUN = """
import json, sys
import twotower
from twotower.data.movielens import load_ml1m, locate
settings, users, out = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
events, items, people = load_ml1m(locate("ml-1m", download=False))
if users:
    events = events[events["user_id"].isin(people["user_id"][:users])]
twotower.train(events, items, people, config=settings, out=out, show_progress=False).close()
"""


def ranker_memory(work: Path, users: int) -> pd.DataFrame:
    """Peak RSS of `train` (towers of one epoch, then the ranker) on MovieLens-1M's first `users` users as the
    ranker learns from more slice requests (rank.max_requests): its rows wait on disk, so it must stay flat."""
    rows = []
    for cap in (2_500, 10_000, None):
        out = work / f"ranker-{cap or 'all'}"
        settings = {**BASE_SETTINGS, "rank": {"max_requests": cap}}
        mib, seconds = peak_rss([sys.executable, "-c", RANKER_RUN, json.dumps(settings), str(users), str(out)])
        report = json.loads((out / "ranker" / "ranker.json").read_text())["report"]
        rows.append({"users": users or 6040, "max_requests": f"{cap:,}" if cap else "all",
                     "requests": report["requests"], "rows": report["rows"], "peak_rss_mib": round(mib),
                     "train_seconds": round(seconds, 1)})
        console.print(rows[-1])
    return pd.DataFrame(rows)


def online_store(work: Path) -> pd.DataFrame:
    """The base model's online store loaded into a private redis-server (Unix socket, no TCP port): its
    memory (INFO used_memory, less the empty server's) per event, user and item."""
    import redis

    base, _ = base_model(work)
    folder = work / "redis"
    folder.mkdir(exist_ok=True)
    sock = folder / "redis.sock"
    server = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
                               "--dir", str(folder), "--save", "", "--appendonly", "no"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.05)
        client = redis.Redis(unix_socket_path=str(sock))
        client.flushall()
        empty = client.info("memory")["used_memory"]
        twotower = str(Path(sys.executable).with_name("twotower"))
        subprocess.run([twotower, "materialize", "-m", str(base), "--store", "redis", "--redis-url",
                        f"unix://{sock}", "-q"], check=True, capture_output=True)
        used = client.info("memory")["used_memory"] - empty
        keys = client.dbsize()
    finally:
        server.terminate()
        server.wait(10)
    history = pd.read_parquet(base / "history.parquet", columns=["user", "item"])
    meta = json.loads((base / "model.json").read_text())
    pairs = len(history.drop_duplicates())
    return pd.DataFrame([{"events": len(history), "users": meta["n_users"], "items": meta["n_items"],
                          "user_item_pairs": pairs, "keys": keys, "used_memory_mib": round(used / 2**20, 1),
                          "bytes_per_event": round(used / len(history), 1)}])


def show(title: str, df: pd.DataFrame) -> None:
    table = Table(title=title, title_justify="left")
    for column in df.columns:
        table.add_column(column, justify="right")
    for row in df.itertuples(index=False):
        table.add_row(*[f"{v:,}" if isinstance(v, int) else str(v) for v in row])
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/distributed-bench"))
    parser.add_argument("--only", choices=["training", "memory", "ranker", "redis"])
    parser.add_argument("--users", type=int, default=1500, help="training: the first N users of MovieLens-1M "
                        "(0: all 6,040; one epoch of all takes ~4 minutes on one core)")
    parser.add_argument("--rounds", type=int, default=2, help="training: runs of each setting")
    parser.add_argument("--ranker-users", type=int, default=3000, help="ranker: the first N users (0: all)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    console.print(f"machine: {cores()} cores, {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB")
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "training"):
        train = training(args.work, args.users, args.rounds)
        train.to_csv(RESULTS / "distributed-training.csv", index=False)
        show("tower training on MovieLens-1M, one epoch (examples/s: every process's examples; median of runs)",
             train)
    if args.only in (None, "memory"):
        mem = memory(args.work)
        mem.to_csv(RESULTS / "distributed-memory.csv", index=False)
        show("twotower recommend --k 100 (ranked): peak memory by catalog and users", mem)
    if args.only in (None, "ranker"):
        ranker = ranker_memory(args.work, args.ranker_users)
        ranker.to_csv(RESULTS / "distributed-ranker.csv", index=False)
        show("twotower train: peak memory as the ranker learns from more requests (its rows wait on disk)", ranker)
    if args.only in (None, "redis"):
        store = online_store(args.work)
        store.to_csv(RESULTS / "distributed-redis.csv", index=False)
        show("the online store of the MovieLens-1M model in Redis", store)


if __name__ == "__main__":
    main()
