"""A model folder as the user sees it: the names the model owns, and a build that replaces them all or none.

`train` builds the new model in a hidden folder inside `--out` and moves its files in only when every stage
(towers, index, ranker, online store) has succeeded; the previous model's files are replaced, and nothing
else in the folder is touched (a user's notes or recommendations stay)."""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .catalog import ADDED_ITEMS, INDEX_DIR, NEW_ITEMS_FILE, PGDATA_DIR, REMOVED_ITEMS
from .errors import InputError
from .features.materialize import FEATURES_DIR
from .model.artifact import ARTIFACT_FILES
from .model.trainer import CHECKPOINT
from .rank.reranker import RANKER_DIR
from .search import SEARCH_DIR

BUILD_DIR = ".twotower-build"      # the model being trained; kept after a kill so training resumes
MODEL_NAMES = frozenset(ARTIFACT_FILES + (INDEX_DIR, PGDATA_DIR, ADDED_ITEMS, REMOVED_ITEMS, RANKER_DIR,
                                          FEATURES_DIR, CHECKPOINT, SEARCH_DIR, NEW_ITEMS_FILE))
MANIFEST = "model.json"            # moved out first and in last: a folder without it is no model


def owned_paths(model_dir: str | Path) -> list[Path]:
    """Every path the model in `model_dir` owns (an output written there would corrupt it)."""
    return [Path(model_dir) / name for name in sorted(MODEL_NAMES | {BUILD_DIR})]


def training_files(model_dir: str | Path) -> list[Path]:
    """The files the model in `model_dir` was trained from, as its model.json records them (none if it
    cannot be read: loading the model then says why)."""
    try:
        return [Path(p) for p in json.loads((Path(model_dir) / MANIFEST).read_text()).get("data", {})]
    except (OSError, ValueError, AttributeError):
        return []


def check_model_folder(out: Path) -> None:
    """Refuse an --out that is a file, holds an embedded pgvector server, or is a folder of other things (a
    model folder may hold the user's own files beside the model's: they are kept)."""
    if out.exists() and not out.is_dir():
        raise InputError(str(out), "is a file", "give --out a folder path")
    if not out.is_dir():
        return
    if (out / PGDATA_DIR).exists():
        raise InputError(str(out), "holds the embedded pgvector server's data of a model",
                         "train into a new folder; the old one keeps its index server")
    if not (out / MANIFEST).exists():
        strangers = [p.name for p in out.iterdir() if p.name != BUILD_DIR]
        if strangers:
            raise InputError(str(out), f"is a folder with other files ({', '.join(sorted(strangers)[:3])})",
                             "choose a new or empty folder, or a model folder to retrain")


@contextmanager
def model_build(out: str | Path) -> Iterator[Path]:
    """Yield the folder to build a model in; on success its files replace the model's own files in `out`.

    On an error the build is deleted and `out` keeps its previous model (or, if this call made `out`, is
    removed); on an interrupt the build stays, so the towers' checkpoint resumes on the next run."""
    out = Path(out)
    check_model_folder(out)
    made = not out.exists()
    build = out / BUILD_DIR
    build.mkdir(parents=True, exist_ok=True)
    for stale in build.iterdir():          # a killed earlier build: keep only its checkpoint
        if stale.name != CHECKPOINT:
            _remove(stale)
    try:
        yield build
    except Exception:
        shutil.rmtree(build, ignore_errors=True)
        if made and not any(out.iterdir()):
            out.rmdir()
        raise
    _commit(build, out)


def _commit(build: Path, out: Path) -> None:
    """Swap the model's own names: the old ones out (manifest first), the new ones in (manifest last). A
    failure half way puts the old ones back."""
    (build / CHECKPOINT).unlink(missing_ok=True)          # the towers are saved: nothing left to resume
    unknown = {p.name for p in build.iterdir()} - MODEL_NAMES
    if unknown:
        raise RuntimeError(f"model build wrote {sorted(unknown)}, which are not in MODEL_NAMES")
    if (build / PGDATA_DIR).exists():
        from .index.pgvector_index import stop_embedded

        stop_embedded(build / PGDATA_DIR)      # its files move; the server restarts from the new place
    trash = out / f".twotower-replaced.{os.getpid()}"
    trash.mkdir()
    old = [name for name in [MANIFEST, *sorted(MODEL_NAMES - {MANIFEST})] if os.path.lexists(out / name)]
    new = sorted((p.name for p in build.iterdir()), key=lambda n: n == MANIFEST)
    try:
        for name in old:
            os.replace(out / name, trash / name)
        for name in new:
            os.replace(build / name, out / name)
    except BaseException:
        for name in new:                      # undo: the new files back into the build, the old ones home
            if os.path.lexists(out / name) and not os.path.lexists(build / name):
                os.replace(out / name, build / name)
        for name in old:
            if os.path.lexists(trash / name):
                os.replace(trash / name, out / name)
        raise
    shutil.rmtree(trash)
    build.rmdir()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
