"""MovieLens-100K and -1M: find them on disk (or download them with a checksum) and load them as tables
in the data contract's shape (events, items, users), ready for `read_events`-style validation."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..atomic import atomic_path
from ..errors import InputError, read_stored

GENRES_100K = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
               "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
               "War", "Western"]


@dataclass(frozen=True)
class Source:
    """Where a MovieLens set lives and how its download is verified."""

    folders: tuple[str, ...]
    marker: str               # a file that must exist in the folder
    url: str
    checked_file: str          # a file inside the zip whose sha256 is known
    sha256: str


SOURCES = {
    "ml-100k": Source(("movielens-100k", "ml-100k"), "u.data",
                      "https://files.grouplens.org/datasets/movielens/ml-100k.zip", "u.data",
                      "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"),
    "ml-1m": Source(("movielens-1m", "ml-1m"), "movies.dat",
                    "https://files.grouplens.org/datasets/movielens/ml-1m.zip", "movies.dat",
                    "0140fc2356357c1a851d0f52e893a1e4d3696df632c4141cea8d5bc3d621f0b9"),
}


def search_roots() -> list[Path]:
    """Folders searched for data, in order: $TWOTOWER_DATA (the user's pointer), then the download cache."""
    roots = []
    if os.environ.get("TWOTOWER_DATA"):
        roots.append(Path(os.environ["TWOTOWER_DATA"]))
    roots.append(cache_dir())
    return roots


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "twotower"


def locate(name: str, download: bool = True) -> Path:
    """The folder holding dataset `name` ('ml-100k' or 'ml-1m'); downloads it into the cache if allowed."""
    src = SOURCES[name]
    for root in search_roots():
        for folder in src.folders:
            if (root / folder / src.marker).is_file():
                return (root / folder).resolve()
    if not download:
        raise InputError(name, "not found in " + ", ".join(str(r) for r in search_roots()),
                         "set TWOTOWER_DATA to a folder containing " + " or ".join(src.folders))
    return fetch(name)


def fetch(name: str) -> Path:
    """Download a MovieLens zip from GroupLens, verify its checksum, and unpack it into the cache."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    src = SOURCES[name]
    dest = cache_dir()
    dest.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    try:
        with urllib.request.urlopen(src.url, timeout=30) as resp, Progress(
            "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TimeRemainingColumn(),
        ) as bar:
            task = bar.add_task(f"downloading {name}", total=int(resp.headers.get("Content-Length") or 0) or None)
            while chunk := resp.read(1 << 16):
                buf.write(chunk)
                bar.update(task, advance=len(chunk))
    except OSError as exc:
        raise InputError(name, f"not found locally and the download from {src.url} failed ({exc})",
                         "connect to the internet, or download and unzip it yourself and set TWOTOWER_DATA "
                         "to the folder that contains it") from exc
    with zipfile.ZipFile(buf) as zf:
        inner = next(n for n in zf.namelist() if n.endswith("/" + src.checked_file))
        digest = hashlib.sha256(zf.read(inner)).hexdigest()
        if digest != src.sha256:
            raise InputError(src.url, f"checksum mismatch for {src.checked_file} ({digest})",
                             "retry the download; if it persists the file on the server has changed")
        top = inner.split("/")[0]
        with atomic_path(dest / top) as tmp:   # a half-unpacked folder never appears in the cache
            tmp.mkdir()
            for member in zf.namelist():
                if member.startswith(top + "/") and not member.endswith("/"):
                    target = tmp / member[len(top) + 1:]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(zf.read(member))
    return dest / top


def load_ml100k(folder: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """MovieLens-100K as (events, items, users). Every rating is one interaction (implicit feedback)."""
    folder = folder or locate("ml-100k")
    return read_stored(folder, _read_ml100k, fix="point --data at an unpacked ml-100k folder (u.data, u.item, "
                       "u.user) from GroupLens")


def _read_ml100k(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    events = pd.read_csv(folder / "u.data", sep="\t", names=["user_id", "item_id", "rating", "timestamp"])
    raw = pd.read_csv(folder / "u.item", sep="|", header=None, encoding="latin-1")
    flags = raw.iloc[:, 5:24].to_numpy().astype(bool)
    items = pd.DataFrame({
        "item_id": raw[0],
        "title": raw[1],
        "release_date": raw[2],
        "genres": ["|".join(g for g, on in zip(GENRES_100K, row) if on) for row in flags],
    })
    users = pd.read_csv(folder / "u.user", sep="|", names=["user_id", "age", "gender", "occupation", "zip"])
    users["zip_region"] = users.pop("zip").astype(str).str[:1]
    return events[["user_id", "item_id", "timestamp"]], items, users


def load_ml1m(folder: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """MovieLens-1M as (events, items, users). Uses real timestamps from ratings.dat where present,
    else the (user, movie) pairs in original file order, whose row number is the only clock."""
    folder = folder or locate("ml-1m")
    if (folder / "ratings.dat").is_file():
        events = pd.read_csv(folder / "ratings.dat", sep="::", engine="python",
                             names=["user_id", "item_id", "rating", "timestamp"])[["user_id", "item_id", "timestamp"]]
    else:
        with gzip.open(folder / "ratings.user_movie.dat.gz", "rt") as fh:
            events = pd.read_csv(fh, sep="::", engine="python", names=["user_id", "item_id"])
        events["timestamp"] = range(len(events))
    items = pd.read_csv(folder / "movies.dat", sep="::", engine="python", names=["item_id", "title", "genres"],
                        encoding="latin-1")
    users = pd.read_csv(folder / "users.dat", sep="::", engine="python",
                        names=["user_id", "gender", "age", "occupation", "zip"])
    users["occupation"] = users["occupation"].astype(str)
    users["zip_region"] = users.pop("zip").astype(str).str[:1]
    return events, items, users
