"""Batch recommendations from a saved model into a file: the serving path for every user, as a batch."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from .data.schema import read_id_list
from .errors import InputError
from .folder import owned_paths, training_files
from .api import Model, model_folder
from .outputs import TableOutput, table_output
from .progress import progress_bar


@dataclass
class RecommendSummary:
    users: int
    personalised: int
    fallback: int
    rows: int
    out: TableOutput
    ranked: bool
    note: str = ""             # why the ranker was not used, when it was asked for


COLUMNS = ["user_id", "item_id", "rank", "score"]


def read_user_ids(spec: str, model: Model) -> list[str]:
    """'all' -> every user the model knows; otherwise a file of user ids."""
    if spec == "all":
        return model.user_ids()
    return read_id_list(Path(spec), "user_id")


def parse_shard(spec: str) -> tuple[int, int]:
    """'K/N' (1 <= K <= N) -> (K, N), or one error saying how to write it."""
    part, _, count = str(spec).partition("/")
    if not (part.strip().isdigit() and count.strip().isdigit()) or not 1 <= int(part) <= int(count):
        raise InputError("--shard", f"{spec!r} is not K/N with 1 <= K <= N", "e.g. --shard 2/4 for the second "
                         "of four processes")
    return int(part), int(count)


def in_shard(ids: list[str], shard: tuple[int, int]) -> list[str]:
    """The ids of the K-th of N shares, by a stable hash of each id (the same on every machine and in every
    run, whatever order or file the ids come in), so N processes split one job without overlap."""
    part, count = shard
    return [i for i in ids if int.from_bytes(hashlib.blake2b(i.encode("utf-8"), digest_size=8).digest(),
                                             "big") % count == part - 1]


def recommend(model_dir: str | Path, users: str, k: int, out: str | Path | TableOutput, batch: int = 256,
              show_progress: bool = True, rerank: bool = True, shard: tuple[int, int] = (1, 1)) -> RecommendSummary:
    """Write `user_id,item_id,rank,score` for each user (CSV, TSV or Parquet by the extension, or CSV on
    stdout for `-`): `Model.recommend` for visits at an unknown time, the ranker reading the online store as
    of the latest event. k is capped at the catalog's size. Users are answered and written a batch at a
    time: memory does not grow with their number. `shard` (K, N) answers only the K-th of N shares of the
    users (`in_shard`), for N processes splitting the job."""
    if k < 1:
        raise InputError("--k", f"must be at least 1, got {k}", "pass a positive number")
    model_dir = model_folder(model_dir)
    out = table_output(out, "--out", inputs=[users if users != "all" else None, *training_files(model_dir)],
                       protected=owned_paths(model_dir))
    with Model(model_dir, rank=rerank) as model:
        ids = read_user_ids(users, model)
        crlf = any("\r" in i for i in ids) or any("\r" in i for i in model.item_ids())   # CSV line ends
        if shard != (1, 1):                 # after `crlf`: every shard writes the line ends the whole job would
            ids = in_shard(ids, shard)

        def chunks():        # written as they come: memory holds one batch of users, whatever their number
            for lo in range(0, len(ids), batch):
                yield model.recommend(ids[lo:lo + batch], k, rank=rerank, batch=batch)
                done = min(lo + batch, len(ids))
                bar.update(task, completed=done, rate=f"{done / max(bar.tasks[0].elapsed or 0, 1e-9):,.0f} users/s")

        with progress_bar(show_progress) as bar:
            task = bar.add_task("recommending", total=len(ids), rate="")
            rows = out.write_chunks(chunks(), float_format="%.6g", crlf=crlf, columns=COLUMNS)
        known = int(model.knows(ids).sum()) if ids else 0
        ranked, note = rerank and model.ranked, model.note if rerank else ""
    return RecommendSummary(len(ids), known, len(ids) - known, rows, out, ranked, note)
