"""Sequence files in the S3-Rec format (the Amazon Beauty/Sports/Toys/Yelp files most sequential
recommendation papers share): one user per line, `user item_1 ... item_n` in time order, and optionally
`{item: [attribute, ...]}` JSON. There are no timestamps: an event's position in its user's line is its time.
Ids stay the strings written in the files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..errors import InputError, read_stored
from .movielens import search_roots
from .schema import require_file

TOYS = "amazon-toys-s3rec"


def load_s3rec(sequences: str | Path, attributes: str | Path | None = None,
               ) -> tuple[pd.DataFrame, pd.DataFrame | None, None]:
    """(events: user_id, item_id, timestamp = position, items: item_id, attributes `a|b|c` or None, no users)."""
    path = Path(sequences)
    require_file(path, "give the S3-Rec sequence file (one line per user: `user item ...`)")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        user, *items = line.split()
        if not items:
            raise InputError(f"{path}:{number}", f"user {user!r} has no items", "one line per user: `user item ...`")
        rows += [(user, item, position) for position, item in enumerate(items)]
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    items = None
    if attributes is not None:
        attributes = Path(attributes)
        require_file(attributes, "give the item attributes JSON, or none")
        table = read_stored(attributes, lambda p: json.loads(p.read_text("utf-8")),
                            "give a JSON object {item id: [attribute, ...]}")
        items = pd.DataFrame({"item_id": [str(k) for k in table],
                              "attributes": ["|".join(map(str, v)) for v in table.values()]})
    return events, items, None


def load_toys(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame | None, None]:
    """Amazon Toys and Games as the S3-Rec repository ships it."""
    return load_s3rec(folder / "Toys_and_Games.txt", folder / "Toys_and_Games_item2attributes.json")


def locate_toys() -> Path:
    """The folder holding the Toys files ($TWOTOWER_DATA or the download cache); never downloaded."""
    for root in search_roots():
        if (root / TOYS / "Toys_and_Games.txt").is_file():
            return (root / TOYS).resolve()
    raise InputError(TOYS, "not found in " + ", ".join(str(r) for r in search_roots()),
                     "set TWOTOWER_DATA to a folder containing amazon-toys-s3rec/Toys_and_Games.txt (from the "
                     "S3-Rec repository, aHuiWang/CIKM2020-S3Rec, folder data/)")
