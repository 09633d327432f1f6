"""Batch recommendations from a saved model into a file: the serving path for every user, as a batch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .data.schema import read_id_list
from .errors import InputError
from .folder import owned_paths, training_files
from .model.artifact import SavedModel
from .outputs import TableOutput, table_output
from .progress import progress_bar
from .serving import Server


@dataclass
class RecommendSummary:
    users: int
    personalised: int
    fallback: int
    rows: int
    out: TableOutput
    ranked: bool
    note: str = ""             # why the ranker was not used, when it was asked for


def read_user_ids(spec: str, saved: SavedModel) -> list[str]:
    """'all' -> every user the model knows; otherwise a file of user ids."""
    if spec == "all":
        return [str(u) for u in saved.history.users.ids]
    return read_id_list(Path(spec), "user_id")


def recommend(model_dir: str | Path, users: str, k: int, out: str | Path | TableOutput, batch: int = 256,
              show_progress: bool = True, rerank: bool = True) -> RecommendSummary:
    """Write `user_id,item_id,rank,score` for each user (CSV, TSV or Parquet by the extension, or CSV on
    stdout for `-`), served as a batch for visits at an unknown time (see `serving.Server.top_k`): the
    ranker reads the online store as of the latest event. k is capped at the catalog's size."""
    if k < 1:
        raise InputError("--k", f"must be at least 1, got {k}", "pass a positive number")
    out = table_output(out, "--out", inputs=[users if users != "all" else None, *training_files(model_dir)],
                       protected=owned_paths(model_dir))
    server = Server.open(model_dir, rerank)
    try:
        k = min(k, max(len(server.index.ids()), 1))
        ids = read_user_ids(users, server.saved)
        codes = server.saved.history.users.encode(ids)
        frames = []
        with progress_bar(show_progress) as bar:
            task = bar.add_task("recommending", total=len(ids), rate="")
            for lo in range(0, len(ids), batch):
                c = codes[lo:lo + batch]
                top = server.top_k(c, k)
                frames.append(pd.DataFrame({
                    "user_id": np.repeat(np.asarray(ids[lo:lo + batch], dtype=object), k),
                    "item_id": top.ids.ravel(), "rank": np.tile(np.arange(1, k + 1), len(c)),
                    "score": top.scores.ravel()}))
                bar.update(task, advance=len(c))
    finally:
        server.close()
    recs = pd.concat(frames, ignore_index=True)
    recs = recs[recs["item_id"].notna() & np.isfinite(recs["score"])]
    out.write(recs, float_format="%.6g")
    known = int(server.knows(codes).sum())
    return RecommendSummary(len(ids), known, len(ids) - known, len(recs), out, server.reranker is not None,
                            server.note)
