"""The Python API and the registry, end to end on any log: train with the CLI (registered), then check that
`twotower.load(folder).recommend` gives the CLI's top-10 for 100 users, that ingesting 5 events changes a
user's list and excludes the new items, that an alias follows promote/rollback, and that a registered version
with one byte changed is refused. Prints each check and exits non-zero on the first that fails.

    .venv/bin/python benchmarks/api_roundtrip.py --events split/train.csv [--items items.csv] --work /tmp/rt
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import twotower  # noqa: E402
from twotower.errors import InputError  # noqa: E402


def check(ok: bool, what: str) -> None:
    print(f"{'PASS' if ok else 'FAIL'}  {what}", flush=True)
    if not ok:
        sys.exit(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", required=True)
    ap.add_argument("--items")
    ap.add_argument("--work", required=True, help="a folder for the model, the registry and the files")
    ap.add_argument("--name", default="roundtrip")
    ap.add_argument("--train", action=argparse.BooleanOptionalAction, default=True,
                    help="train (else reuse WORK/model and its registered versions)")
    args = ap.parse_args()
    work = Path(args.work).absolute()
    work.mkdir(parents=True, exist_ok=True)
    os.environ["TWOTOWER_HOME"] = str(work / "registry")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'registry' / 'mlflow.db'}"
    cli = [str(Path(sys.executable).with_name("twotower"))]
    folder = work / "model"
    if args.train:
        t0 = time.perf_counter()
        items = ["--items", args.items] if args.items else []
        subprocess.run([*cli, "train", "-e", args.events, *items, "-o", str(folder), "--register", args.name, "-q"],
                       check=True)
        print(f"trained and registered in {time.perf_counter() - t0:.0f}s", flush=True)
        from twotower.registry.mlflow_registry import Registry

        registry = Registry()          # a second version of the same folder (a retrain would take as long again)
        run = registry.log_training(folder, twotower.load_config(None), [], {})
        print(f"registered again as version {registry.register(args.name, run)}", flush=True)

    events = pd.read_csv(args.events, dtype={"user_id": str, "item_id": str}, keep_default_na=False)
    users = list(pd.unique(events["user_id"]))[:100]
    (work / "users.txt").write_text("user_id\n" + "\n".join(users) + "\n")
    subprocess.run([*cli, "recommend", "-m", str(folder), "-u", str(work / "users.txt"), "-k", "10", "-o",
                    str(work / "cli.csv"), "-q"], check=True)
    from_cli = pd.read_csv(work / "cli.csv", dtype={"user_id": str, "item_id": str}, keep_default_na=False)
    with twotower.load(folder) as model:
        from_api = model.recommend(users, k=10)
    columns = ["user_id", "item_id", "rank"]
    same = (from_api[columns].astype(str).reset_index(drop=True)
            .equals(from_cli[columns].astype(str).reset_index(drop=True)))
    check(same and len(from_api) == 1000, f"load(folder).recommend(100 users, k=10) == twotower recommend's file "
          f"({len(from_api)} rows, ranked={model.ranked})")

    copy = work / "ingest-copy"
    subprocess.run(["rm", "-rf", str(copy)], check=True)
    subprocess.run(["cp", "-r", str(folder), str(copy)], check=True)
    user = users[0]
    with twotower.load(copy) as model:
        before = model.recommend(user, k=10)["item_id"].tolist()
        new = before[:5]
        at = float(pd.to_numeric(events["timestamp"], errors="coerce").max()) + 60
        n = model.ingest(pd.DataFrame({"user_id": user, "item_id": new, "timestamp": at + np.arange(5),
                                       "event_id": [f"rt-{i}" for i in range(5)]}))
        after = model.recommend(user, k=10)["item_id"].tolist()
    check(n == 5 and after != before and not set(new) & set(after),
          f"ingest of 5 events for user {user!r}: stored {n}, list changed, none of {new} in the new list")

    from twotower.registry.mlflow_registry import Registry

    registry = Registry()
    versions = [v.version for v in registry.versions(args.name)][:2]
    newest, older = versions[0], versions[1]
    registry.promote(args.name, older)
    registry.promote(args.name, newest)
    with twotower.load(f"models:/{args.name}@champion") as model:
        followed = model.folder.name
    print(subprocess.run([*cli, "models", "list", args.name], capture_output=True, text=True).stdout)
    back = registry.rollback(args.name)
    with twotower.load(f"models:/{args.name}@champion") as model:
        rolled = model.folder.name
    check(followed == newest and back == (newest, older) and rolled == older,
          f"promote {older} then {newest}: @champion opened version {followed}; rollback -> {rolled}")

    source = registry._local(registry._version(args.name, newest).source)
    weights = source / "weights.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 1
    weights.write_bytes(bytes(data))
    try:
        import shutil

        shutil.rmtree(registry.root / "serving" / args.name / newest, ignore_errors=True)
        twotower.load(f"models:/{args.name}/{newest}").close()
        check(False, "a version with one byte changed was loaded")
    except InputError as exc:
        check("weights.pt: changed after" in str(exc), f"one byte changed in weights.pt: refused ({exc.problem})")
    finally:
        data[len(data) // 2] ^= 1
        weights.write_bytes(bytes(data))


if __name__ == "__main__":
    main()
