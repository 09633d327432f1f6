"""The service's failure tests at full size, over real HTTP on loopback, each printing its figures: SIGKILL while
10,000 events arrive at 500/s (five times), hot swaps at 100 requests/s for 60 s, 1,000 read-your-writes
probes, the admin token, a 10 MB body, reads while the catalog changes, and 10,000 requests generated from the
schema. (`tests/serve/test_failures.py` and `tests/serve/test_app.py` run short versions in CI.)

    .venv/bin/python benchmarks/failures.py [--model DIR] [--work /tmp/twotower-failures]

Without --model it uses (or trains) the MovieLens-100K model of benchmarks/serve.py in WORK/base.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))      # the checkout: benchmarks.lib
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TWOTOWER_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))

import httpx  # noqa: E402
import pandas as pd  # noqa: E402
from rich.table import Table  # noqa: E402

from benchmarks.lib.report import console as report_console  # noqa: E402
from benchmarks.lib.request_fuzz import fuzz_service  # noqa: E402
from benchmarks.lib.service_harness import (Service, catalog_churn, crash_while_ingesting, hot_swap,  # noqa: E402
                                            read_your_writes)
from benchmarks.serve import base_model, client_cores  # noqa: E402
from twotower.data.schema import read_table  # noqa: E402

console = report_console()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="a trained model folder (default: train MovieLens-100K)")
    ap.add_argument("--items-table", type=Path, help="the model's items table (with --model): rows to upsert")
    ap.add_argument("--work", type=Path, default=Path("/tmp/twotower-failures"))
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--event-rate", type=float, default=500.0)
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--probes", type=int, default=1000)
    ap.add_argument("--fuzz", type=int, default=10_000, help="requests generated from the schema")
    ap.add_argument("--client-cpus", default="last",
                    help="cores the hot swap's load generator runs on, as in benchmarks/serve.py: 'last', 'any' or "
                         "a list such as 1,2")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TWOTOWER_HOME", str(args.work / "home"))     # its MLflow runs stay in WORK
    if args.model:
        source = args.model
        items_table = read_table(args.items_table) if args.items_table else None
    else:
        source, items_table = base_model(args.work)
    import twotower

    with twotower.load(source, rank=False) as m:
        users, items = m.user_ids(), m.item_ids()
    rows = []

    def fresh(name: str) -> Path:
        target = args.work / name
        shutil.rmtree(target, ignore_errors=True)
        return shutil.copytree(source, target, ignore=shutil.ignore_patterns("ingested.sqlite*"))

    for state in ("crash-state", "swap-state"):          # a log left by an earlier run would hold these event ids
        shutil.rmtree(args.work / state, ignore_errors=True)

    console.print(f"[bold]SIGKILL while {args.events:,} events arrive at {args.event_rate:g}/s, {args.kills} times")
    rounds = crash_while_ingesting(fresh("crash"), args.work / "crash-state", users, items, args.events,
                                   args.event_rate, args.kills, log=console.print)
    rows.append({"test": "SIGKILL during ingest", "runs": len(rounds),
                 "figures": f"acknowledged {sum(r.acknowledged for r in rounds):,}, missing "
                            f"{sum(r.missing for r in rounds)}, duplicated {sum(r.duplicated for r in rounds)}, "
                            f"stored {sum(r.stored for r in rounds):,} of {sum(r.sent for r in rounds):,}, online store off by "
                            f"{sum(abs(r.applied_gap) for r in rounds)}, "
                            f"integrity {sorted({r.integrity for r in rounds})}, ready in at most "
                            f"{max(r.ready_s for r in rounds):.1f}s",
                 "pass": all(r.missing == 0 and r.duplicated == 0 and r.stored == r.sent and r.applied_gap == 0
                             and r.integrity == "ok" and r.ready_s <= 10 for r in rounds)})

    a, b = fresh("version-a"), fresh("version-b")
    broken = fresh("version-broken")
    (broken / "item_vectors.npy").write_bytes(b"\x93NUMPY not really")
    token = "failure-bench-token"
    service = Service(a, args.work / "swap-state", token=token).start()
    try:
        service.wait_ready()
        console.print(f"[bold]hot swap at {args.rate:g} requests/s for {args.seconds:g}s, reloads at 1/3 and 2/3")
        swap = hot_swap(service, [b, a], users, args.rate, args.seconds, work=args.work / "load",
                        cpus=client_cores(args.client_cpus))
        console.print(swap)
        rows.append({"test": "hot swap under load", "runs": len(swap.reloads),
                     "figures": f"{swap.requests:,} requests, {swap.non_2xx} non-2xx, p99 steady "
                                f"{swap.p99_steady_ms:.1f} ms, during swaps {swap.p99_swap_ms:.1f} ms, reloads "
                                f"{[(s, round(t, 2)) for s, _, t in swap.reloads]} (status, s)",
                     "pass": swap.non_2xx == 0 and all(s == 200 for s, _, _ in swap.reloads)
                     and swap.p99_swap_ms <= 2 * swap.p99_steady_ms})
        refused = service.reload(broken)
        serving = httpx.post(f"{service.base}/recommend", json={"user_id": users[0]}).status_code
        rows.append({"test": "corrupt version refused", "runs": 1,
                     "figures": f"reload {refused.status_code}: {refused.json()['detail'][:90]}...; "
                                f"/recommend then {serving}",
                     "pass": refused.status_code == 409 and serving == 200})
        wrong = [httpx.post(f"{service.base}/admin/reload", json={"model": str(b)}, headers=h).status_code
                 for h in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Bearer {token[:-1]}X"})]
        version = httpx.get(f"{service.base}/readyz").json()["model_version"]
        rows.append({"test": "admin without the right token", "runs": 3,
                     "figures": f"statuses {wrong}, version unchanged: {version}",
                     "pass": wrong == [401, 401, 401]})
        console.print(f"[bold]read-your-writes, {args.probes:,} probes")
        misses = read_your_writes(service.base, users, items, args.probes)
        rows.append({"test": "read-your-writes", "runs": args.probes, "figures": f"{misses} probes missed the event",
                     "pass": misses == 0})
        big = httpx.post(f"{service.base}/events", content=b"[" + b" " * (10 << 20) + b"]",
                         headers={"content-type": "application/json"}, timeout=60).status_code
        rows.append({"test": "10 MB body", "runs": 1, "figures": f"status {big}", "pass": big == 413})
        console.print("[bold]reads while the catalog changes (upserts, deletes, a rebuild)")
        new_items = [] if items_table is None else [
            {k: (None if pd.isna(v) else v) for k, v in row.items()} for row in
            items_table.sample(20, random_state=0).assign(item_id=[f"churn-{k}" for k in range(20)]).to_dict("records")]
        churn = catalog_churn(service, token, users, items, new_items, delete=items[:20])
        rows.append({"test": "reads while the catalog changes", "runs": len(churn.changes),
                     "figures": f"{churn.reads:,} reads, {churn.server_errors} 5xx, {churn.unknown_ids} unknown ids, "
                                f"{churn.deleted_after_ack} deleted items after their delete; changes "
                                f"{sorted({s for _, s, _ in churn.changes})}, rebuild {churn.changes[-1][2]}s",
                     "pass": churn.server_errors == churn.unknown_ids == churn.deleted_after_ack == 0
                     and all(s == 200 for _, s, _ in churn.changes)})
        console.print(f"[bold]{args.fuzz:,} requests generated from the schema")
        statuses = fuzz_service(service.base, args.fuzz, alive=lambda: service.proc.poll() is None)
        rows.append({"test": "requests from the schema", "runs": sum(statuses.values()) - statuses["dead"],
                     "figures": ", ".join(f"{k} {v:,}" for k, v in sorted(statuses.items())),
                     "pass": statuses["5xx"] == 0 and statuses["dead"] == 0})
    finally:
        service.stop()

    table = Table(title="twotower serve: failure tests")
    for c in ("test", "runs", "figures", "pass"):
        table.add_column(c)
    for r in rows:
        table.add_row(r["test"], str(r["runs"]), r["figures"], "PASS" if r["pass"] else "FAIL")
    console.print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(args.out / "failures.csv", index=False)
    sys.exit(0 if all(r["pass"] for r in rows) else 1)


if __name__ == "__main__":
    main()
